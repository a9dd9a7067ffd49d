"""The dataset registry agrees with `medmnist.info.INFO` (medmnist 3.0.2, installed --no-deps)."""

import medmnist.info
import pytest

from ssljax.data import registry
from ssljax.errors import ConfigError

NAMES_2D = [name for name in medmnist.info.INFO if not name.endswith("3d")]


def test_registry_holds_every_2d_dataset():
    assert len(NAMES_2D) == 12
    assert sorted(registry.DATASETS) == sorted(NAMES_2D)


@pytest.mark.parametrize("name", NAMES_2D)
def test_registry_equals_medmnist_info(name):
    info = medmnist.info.INFO[name]
    ours = registry.get_info(name)
    assert ours.name == name
    assert ours.python_class == info["python_class"]
    assert ours.task == info["task"]
    assert ours.task in registry.TASKS
    assert ours.labels == info["label"]
    assert ours.n_channels == info["n_channels"]
    assert ours.n_samples == info["n_samples"]
    assert ours.license == info["license"]
    for size in registry.SIZES:
        suffix = "" if size == 28 else f"_{size}"
        assert ours.urls[size] == info[f"url{suffix}"]
        assert ours.md5[size] == info[f"MD5{suffix}"]
        # The medmnist package saves each file under the name its URL carries.
        assert ours.urls[size].split("/")[-1].split("?")[0] == registry.file_name(name, size)


def test_file_name():
    assert registry.file_name("breastmnist", 28) == "breastmnist.npz"
    assert registry.file_name("breastmnist", 64) == "breastmnist_64.npz"
    with pytest.raises(ValueError, match=r"data\.size=32.*\(28, 64, 128, 224\)"):
        registry.file_name("breastmnist", 32)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="'nosuchmnist'.*pathmnist.*organsmnist"):
        registry.get_info("nosuchmnist")


def test_num_outputs():
    assert registry.num_outputs(registry.BINARY, {"0": "a", "1": "b"}) == 2
    chest = registry.get_info("chestmnist")
    assert registry.num_outputs(chest.task, chest.labels) == 14
    path = registry.get_info("pathmnist")
    assert registry.num_outputs(path.task, path.labels) == 9
    retina = registry.get_info("retinamnist")
    assert registry.num_outputs(retina.task, retina.labels) == 5
    with pytest.raises(ValueError, match=r"data\.task='regression'"):
        registry.num_outputs("regression", {})


def test_dataset_key_round_trip():
    assert registry.dataset_key("breastmnist", 28) == "breastmnist"
    assert registry.dataset_key("breastmnist", 64) == "breastmnist_64"
    assert registry.file_name("breastmnist", 64) == "breastmnist_64.npz"
    for size in registry.SIZES:
        key = registry.dataset_key("pneumoniamnist", size)
        assert registry.parse_dataset_key(key) == ("pneumoniamnist", size)
    with pytest.raises(ConfigError, match="grid.datasets: unknown dataset 'breast'"):
        registry.parse_dataset_key("breast", "grid.datasets")
    with pytest.raises(ConfigError, match="has size 32"):
        registry.parse_dataset_key("breastmnist_32")


def test_a_runs_dataset_goes_by_its_own_name():
    """A folder run keeps data.name's default ('pathmnist'): it is named after its folder."""
    assert registry.own_name({"name": "pathmnist", "folder": "/data/chest xrays/"}) == "chest_xrays"
    assert registry.own_name({"name": "lungs", "folder": "/data/chest_xrays"}) == "lungs"
    assert registry.own_name({"name": "pathmnist", "path": "/d/mine.npz"}) == "mine"
    assert registry.own_name({"name": "pathmnist", "folder": "", "path": ""}) == "pathmnist"
