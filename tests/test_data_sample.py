"""The BreastMNIST 28 px file shipped with ssljax: found with an empty data root, before any
download, and refused in one line when its bytes are damaged."""

import pathlib
import tomllib

import pytest

from configs import base
from ssljax.data import download, load_dataset, registry
from ssljax.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[1]
FILE = "breastmnist.npz"


def test_packaged_copy_is_the_official_file():
    path = download.SAMPLE_DIR / FILE
    assert path.stat().st_size == 559_580
    assert download.md5sum(path) == registry.get_info("breastmnist").md5[28]
    assert (download.SAMPLE_DIR / "README.md").read_text().count("CC BY 4.0") >= 1
    # pyproject ships it (and its license note) as package data.
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = package_data["package-data"]["ssljax.data"]
    assert {"sample/breastmnist.npz", "sample/README.md"} <= set(shipped)


def test_empty_data_root_uses_the_packaged_copy_without_network(tmp_path):
    root = tmp_path / "empty"
    config = base.get_config().data
    config.update(name="breastmnist", size=28, root=str(root), download=True)
    # A download would fail here (no URL reachable); the packaged copy comes first.
    path = download.ensure_file("breastmnist", 28, root, download=True, url="http://0.0.0.0:9/x")
    assert path == download.SAMPLE_DIR / FILE
    data = load_dataset(config, progress=False)
    assert (data.name, data.size, len(data.train), len(data.val), len(data.test)) == (
        "breastmnist",
        28,
        546,
        78,
        156,
    )
    assert not root.exists()  # nothing written to the data root
    # Other files still come from the root or a download.
    with pytest.raises(download.DatasetDownloadError, match="data.download is false"):
        download.ensure_file("breastmnist", 64, root, download=False)


def test_file_in_the_data_root_comes_first(data_dir):
    assert download.ensure_file("breastmnist", 28, data_dir, download=False) == data_dir / FILE


def test_damaged_packaged_copy_is_refused_in_one_line(tmp_path, monkeypatch):
    sample = tmp_path / "sample"
    sample.mkdir()
    damaged = bytearray((download.SAMPLE_DIR / FILE).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (sample / FILE).write_bytes(damaged)
    monkeypatch.setattr(download, "SAMPLE_DIR", sample)
    with pytest.raises(DataError) as e:
        download.ensure_file("breastmnist", 28, tmp_path / "empty", download=True)
    message = str(e.value)
    assert "\n" not in message
    assert f"{sample / FILE}, the copy of {FILE} shipped with ssljax, has MD5" in message
    assert "expected 750601b1f35ba3300ea97c75c52ff8f6" in message and "Reinstall" in message
    assert not (tmp_path / "empty").exists()
