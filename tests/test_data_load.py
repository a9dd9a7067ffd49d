"""Loading and validation: the real MedMNIST files, damaged and foreign files, a user's own npz."""

import chex
import numpy as np
import pytest

from configs import base
from ssljax import errors
from ssljax.data import download, load, registry

# Class counts per split, from the real files (NumPy bincount of the raw labels).
REAL = [
    ("breastmnist", 28, {"train": [147, 399], "val": [21, 57], "test": [42, 114]}),
    ("breastmnist", 64, {"train": [147, 399], "val": [21, 57], "test": [42, 114]}),
    ("pneumoniamnist", 28, {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]}),
]


def data_config(**overrides):
    config = base.get_config().data
    config.update(overrides)
    return config


@pytest.mark.parametrize(("name", "size", "counts"), REAL)
def test_real_files_load_with_registry_shapes_and_label_counts(data_dir, name, size, counts):
    ds = load.load_dataset(data_config(name=name, size=size, root=str(data_dir), download=False))
    info = registry.get_info(name)
    with np.load(data_dir / registry.file_name(name, size)) as archive:
        raw = {k: archive[k] for k in archive.files}
    assert (ds.name, ds.size, ds.task, ds.n_channels) == (name, size, registry.BINARY, 1)
    assert ds.label_names == tuple(info.labels.values())
    assert ds.num_outputs == 2
    for split, split_counts in counts.items():
        s = ds.splits[split]
        n = info.n_samples[split]
        chex.assert_shape(s.images, (n, size, size, 1))
        chex.assert_shape(s.labels, (n,))
        chex.assert_type(s.images, np.uint8)
        assert s.labels.dtype == np.int32
        assert len(s) == n
        np.testing.assert_array_equal(np.bincount(s.labels), split_counts)
        np.testing.assert_array_equal(s.images[..., 0], raw[f"{split}_images"])
        np.testing.assert_array_equal(s.labels, raw[f"{split}_labels"][:, 0])
    assert ds.train is ds.splits["train"]


def test_truncated_registry_file_names_file_and_says_delete(data_dir, tmp_path):
    data = (data_dir / "breastmnist.npz").read_bytes()
    path = tmp_path / "breastmnist.npz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot be read as an .npz") as e:
        load.load_npz(path, task=registry.BINARY, expected=registry.get_info("breastmnist"))
    assert str(path) in str(e.value)
    assert f"Delete {path}" in str(e.value)


def test_damaged_member_is_reported(data_dir, tmp_path):
    data = bytearray((data_dir / "pneumoniamnist.npz").read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)
    path = tmp_path / "pneumoniamnist.npz"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="truncated or damaged") as e:
        load.load_npz(path, task=registry.BINARY, expected=registry.get_info("pneumoniamnist"))
    assert str(path) in str(e.value)


def test_foreign_files_name_file_and_problem(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(ValueError, match=r"missing keys \['train_images'") as e:
        load.load_npz(foreign, task=registry.BINARY)
    assert str(foreign) in str(e.value)
    assert "Delete" not in str(e.value)  # a user's file is never suggested for deletion

    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        load.load_npz(npy, task=registry.BINARY)

    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(errors.DataError, match=rf"{text}: is not a \.npz \(zip\) file"):
        load.load_npz(text, task=registry.BINARY)


def test_pickled_object_array_is_refused_as_such(tmp_path):
    path = tmp_path / "objects.npz"
    arrays = write_npz(path)
    arrays["val_labels"] = np.array([{"label": 0}] * 4, dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(errors.DataError) as e:
        load.load_npz(path, task=registry.MULTI_CLASS)
    assert str(e.value).startswith(
        f"{path}: val_labels holds pickled Python objects, which ssljax does not load"
    )


def write_npz(path, *, images_dtype=np.uint8, shape=(8, 8), channels=3, labels=None):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 5)):
        image_shape = (n, *shape, channels) if channels else (n, *shape)
        arrays[f"{split}_images"] = rng.integers(0, 256, image_shape).astype(images_dtype)
        arrays[f"{split}_labels"] = (
            labels(n) if labels else (np.arange(n) % 3).astype(np.int64)[:, None]
        )
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize(
    ("kwargs", "task", "message"),
    [
        ({"images_dtype": np.float32}, registry.MULTI_CLASS, "dtype float32, expected uint8"),
        ({"shape": (8, 6)}, registry.MULTI_CLASS, r"shape \(12, 8, 6, 3\)"),
        ({"channels": 2}, registry.MULTI_CLASS, "C = 1 or 3"),
        ({"labels": lambda n: np.arange(n) % 3 - 1}, registry.MULTI_CLASS, r"range over \[-1"),
        ({"labels": lambda n: np.arange(n) % 3}, registry.BINARY, "expected 0..1"),
        ({"labels": lambda n: np.full((n, 4), 2)}, registry.MULTI_LABEL, "other than 0 and 1"),
        ({"labels": lambda n: np.zeros(n, np.float32)}, registry.MULTI_CLASS, "expected integers"),
    ],
)
def test_bad_arrays_are_reported(tmp_path, kwargs, task, message):
    path = tmp_path / "bad.npz"
    write_npz(path, **kwargs)
    with pytest.raises(ValueError, match=message) as e:
        load.load_npz(path, task=task)
    assert str(path) in str(e.value)


def test_registry_mismatch_is_reported(data_dir):
    info = registry.get_info("breastmnist")
    with pytest.raises(ValueError, match="64x64 pixels, expected 28x28"):
        load.load_npz(data_dir / "breastmnist_64.npz", task=info.task, expected=info, size=28)
    with pytest.raises(ValueError, match="546 examples, pneumoniamnist has 4708"):
        load.load_npz(
            data_dir / "breastmnist.npz",
            task=info.task,
            expected=registry.get_info("pneumoniamnist"),
        )


def test_user_npz_loads_with_its_task(tmp_path):
    path = tmp_path / "mine.npz"
    arrays = write_npz(path)
    ds = load.load_dataset(data_config(name="my_lesions", path=str(path), task="multi-class"))
    assert (ds.name, ds.size, ds.task, ds.n_channels) == ("my_lesions", 8, "multi-class", 3)
    assert ds.label_names == ("0", "1", "2")
    assert ds.num_outputs == 3
    chex.assert_shape(ds.val.images, (4, 8, 8, 3))
    np.testing.assert_array_equal(ds.test.labels, arrays["test_labels"][:, 0])
    assert ds.test.labels.dtype == np.int32


def test_user_multilabel_grey_npz(tmp_path):
    path = tmp_path / "chest_like.npz"
    write_npz(path, channels=0, labels=lambda n: np.eye(4, dtype=np.uint8)[np.arange(n) % 4])
    ds = load.load_dataset(data_config(path=str(path), task=registry.MULTI_LABEL))
    assert ds.name == "chest_like"  # data.name is still the registry default
    chex.assert_shape(ds.train.images, (12, 8, 8, 1))
    chex.assert_shape(ds.train.labels, (12, 4))
    assert ds.train.labels.dtype == np.int32
    assert ds.num_outputs == 4


def test_config_errors(tmp_path, data_dir):
    path = tmp_path / "mine.npz"
    write_npz(path)
    with pytest.raises(ValueError, match="needs data.task set to one of"):
        load.load_dataset(data_config(path=str(path)))
    with pytest.raises(errors.ConfigError, match="data.path="):
        load.load_dataset(data_config(path=str(tmp_path / "nope.npz"), task="binary-class"))
    with pytest.raises(ValueError, match="contradicts breastmnist's task"):
        load.load_dataset(
            data_config(name="breastmnist", root=str(data_dir), task=registry.MULTI_CLASS)
        )
    with pytest.raises(download.DatasetDownloadError, match="data.download is false"):
        # Not the 28 px file: that one ships with ssljax (tests/test_data_sample.py).
        load.load_dataset(
            data_config(name="breastmnist", size=64, root=str(tmp_path), download=False)
        )
