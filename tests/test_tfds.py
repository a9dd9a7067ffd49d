"""The TFDS MedMNIST builder: configs, offline builds, downloads refused by MD5, half-built
folders, any MedMNIST-layout file; never TensorFlow."""

import importlib.metadata
import pathlib
import re
import shutil
import sys
import tomllib

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssljax.data import download, load_npz, npzstream, registry, sources, tfds_medmnist
from ssljax.errors import DataError
from tests.test_download import broken_server, directory_server

REPO = pathlib.Path(__file__).resolve().parents[1]


def data_config(tfds_dir, **overrides) -> ml_collections.ConfigDict:
    d = {
        "name": "breastmnist",
        "size": 28,
        "root": str(tfds_medmnist.download.data_root(".")),
        "download": False,
        "path": "",
        "task": "",
        "tfds_dir": str(tfds_dir),
        "source": "tfds",
        "memory_budget_gb": 8.0,
    }
    d.update(overrides)
    return ml_collections.ConfigDict(d)


@pytest.fixture(scope="module")
def built(data_dir, tmp_path_factory):
    """BreastMNIST 28 px built offline from the shared file: (tfds_dir, builder)."""
    tfds_dir = tmp_path_factory.mktemp("tfds")
    builder = tfds_medmnist.prepare(data_config(tfds_dir, root=str(data_dir)), progress=False)
    return tfds_dir, builder


def test_every_registry_dataset_and_size_is_a_config():
    configs = tfds_medmnist.MedMNIST.builder_configs
    assert len(configs) == len(registry.DATASETS) * len(registry.SIZES)
    path = configs["pathmnist_224"]
    assert path.image_shape == (224, 224, 3) and path.task == registry.MULTI_CLASS
    chest = tfds_medmnist.MedMNIST(config="chestmnist_64", data_dir="/nonexistent")
    assert chest.info.features["label"].shape == (14,)
    assert chest.info.features["image"].shape == (64, 64, 1)
    breast = tfds_medmnist.MedMNIST(config="breastmnist_28", data_dir="/nonexistent")
    assert breast.info.features["label"].names == ["malignant", "normal, benign"]


def test_offline_build_reads_back_the_npz_rows_in_order(built, data_dir):
    tfds_dir, builder = built
    assert builder.info.file_format.value == "array_record"
    reference = load_npz(data_dir / "breastmnist.npz", task=registry.BINARY)
    source = tfds.data_source("medmnist/breastmnist_28", data_dir=str(tfds_dir))
    for split in ("train", "val", "test"):
        records = source[split].__getitems__(list(range(len(source[split]))))
        images = np.stack([r["image"] for r in records])
        labels = np.array([r["label"] for r in records])
        np.testing.assert_array_equal(images, reference.splits[split].images)
        np.testing.assert_array_equal(labels, reference.splits[split].labels)
    assert "tensorflow" not in sys.modules


TENSORFLOW = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-macos", "tf-nightly"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_declared_dependencies_exclude_tensorflow():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {_name(d) for d in project["dependencies"]}
    assert {"tensorflow-datasets", "grain", "array-record"} <= names
    assert not names & TENSORFLOW
    # tensorflow-datasets itself asks for TensorFlow only under extras.
    for requirement in importlib.metadata.requires("tensorflow-datasets") or []:
        if _name(requirement) in TENSORFLOW:
            assert "extra ==" in requirement, requirement


def test_a_second_prepare_reuses_the_build(built, data_dir):
    tfds_dir, builder = built
    info = pathlib.Path(builder.data_path) / "dataset_info.json"
    before = info.stat().st_mtime_ns
    tfds_medmnist.prepare(data_config(tfds_dir, root=str(data_dir)), progress=False)
    assert info.stat().st_mtime_ns == before


@pytest.mark.parametrize("damage", ["no_dataset_info", "truncated_shard", "missing_shard"])
def test_a_half_built_folder_is_not_taken_as_built(built, data_dir, tmp_path, damage):
    tfds_dir, builder = built
    copy = tmp_path / "tfds"
    shutil.copytree(tfds_dir / "medmnist", copy / "medmnist")
    folder = copy / "medmnist" / "breastmnist_28" / "1.0.0"
    shard = folder / "medmnist-train.array_record-00000-of-00001"
    if damage == "no_dataset_info":
        (folder / "dataset_info.json").unlink()
    elif damage == "truncated_shard":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    else:
        shard.unlink()
    config = data_config(copy, root=str(data_dir))
    assert not tfds_medmnist.is_built(tfds_medmnist.builder_for(config))
    rebuilt = tfds_medmnist.prepare(config, progress=False)
    assert tfds_medmnist.is_built(rebuilt)
    assert shard.read_bytes() == (tfds_dir / shard.relative_to(copy)).read_bytes()


def _serve_copy(data_dir, tmp_path, corrupt: bool) -> pathlib.Path:
    served = tmp_path / "served"
    served.mkdir()
    data = bytearray((data_dir / "breastmnist.npz").read_bytes())
    if corrupt:
        data[len(data) // 2] ^= 0xFF
    (served / "breastmnist.npz").write_bytes(data)
    return served


def test_download_through_tfds_checked_by_md5(data_dir, tmp_path):
    config = data_config(tmp_path / "tfds", root=str(tmp_path / "empty"), download=True)
    with directory_server(_serve_copy(data_dir, tmp_path, corrupt=False)) as base:
        builder = tfds_medmnist.prepare(config, progress=False, url=f"{base}/breastmnist.npz")
    assert builder.info.splits["train"].num_examples == 546
    assert len(list((tmp_path / "tfds" / "downloads").rglob("*breastmnist*.npz"))) == 1


@pytest.mark.parametrize("fault", ["corrupted", "truncated"])
def test_a_bad_download_is_refused_and_nothing_is_built(data_dir, tmp_path, fault):
    config = data_config(tmp_path / "tfds", root=str(tmp_path / "empty"), download=True)
    md5 = registry.get_info("breastmnist").md5[28]
    if fault == "corrupted":
        server = directory_server(_serve_copy(data_dir, tmp_path, corrupt=True))
    else:
        data = (data_dir / "breastmnist.npz").read_bytes()
        server = broken_server(data, send=len(data) // 2)
    with server as base, pytest.raises(download.DatasetDownloadError) as e:
        tfds_medmnist.prepare(config, progress=False, url=f"{base}/breastmnist.npz")
    message = str(e.value)
    assert "\n" not in message and md5 in message
    assert (f"expected {md5}" in message) == (fault == "corrupted") or "could not" in message
    assert not list((tmp_path / "tfds" / "downloads").rglob("*breastmnist*.npz*"))
    assert not tfds_medmnist.is_built(tfds_medmnist.builder_for(config))


def test_missing_file_without_download_is_a_clear_error(tmp_path):
    config = data_config(tmp_path / "tfds", root=str(tmp_path / "empty"), size=64)
    with pytest.raises(download.DatasetDownloadError, match="data.download is false"):
        tfds_medmnist.prepare(config, progress=False)


def _user_npz(path: pathlib.Path, images_dtype=np.uint8) -> pathlib.Path:
    """A multi-label RGB 16 px file in MedMNIST layout, written in chunks."""
    rng = np.random.default_rng(0)
    with npzstream.NpzWriter(path) as w:
        for split, n in (("train", 40), ("val", 8), ("test", 8)):
            for start in range(0, n, 16):
                rows = min(16, n - start)
                images = rng.integers(0, 256, (rows, 16, 16, 3)).astype(images_dtype)
                w.append(f"{split}_images", images)
                w.append(f"{split}_labels", rng.integers(0, 2, (rows, 5)))
    return path


def test_a_users_npz_builds_and_opens_like_the_file(tmp_path):
    path = _user_npz(tmp_path / "mine.npz")
    config = data_config(tmp_path / "tfds", path=str(path), task=registry.MULTI_LABEL, name="mine")
    dataset = sources.open_dataset(config, progress=False)
    reference = load_npz(path, task=registry.MULTI_LABEL)
    assert dataset.name == "mine" and dataset.size == 16 and dataset.num_outputs == 5
    assert dataset.label_names == reference.label_names
    for split in ("train", "val", "test"):
        ours, theirs = dataset.splits[split], reference.splits[split]
        np.testing.assert_array_equal(ours.images[:], theirs.images)
        np.testing.assert_array_equal(ours.labels, theirs.labels)
    name = tfds_medmnist.builder_for(config).builder_config.name
    assert name.startswith("file_mine_")
    _user_npz(path)  # rewritten: a new config, so a new build
    assert tfds_medmnist.builder_for(config).builder_config.name != name


def test_a_bad_users_npz_is_a_one_line_data_error(tmp_path):
    path = _user_npz(tmp_path / "floats.npz", images_dtype=np.float32)
    config = data_config(tmp_path / "tfds", path=str(path), task=registry.MULTI_LABEL)
    with pytest.raises(DataError, match=r"floats\.npz: train_images has dtype float32"):
        tfds_medmnist.prepare(config, progress=False)
