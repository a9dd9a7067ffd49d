"""Every config file loads, locks, validates and survives a round-trip override."""

import pathlib
import subprocess
import sys

import pytest
from ml_collections import config_flags

from ssljax import evaluate, methods, validation

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p for p in (REPO / "configs").glob("*.py") if p.name != "__init__.py")
VOCABULARY = (
    "seed",
    "method",
    "data.name",
    "data.size",
    "data.root",
    "data.label_fraction",
    "model.name",
    "model.width",
    "train.batch_size",
    "train.epochs",
    "init.workdir",
)


def _load(path: pathlib.Path, arg: str | None = None):
    module = config_flags.config_flags._LoadConfigModule(f"cfg_{path.stem}", str(path))
    return module.get_config(arg) if arg else module.get_config()


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_loads_locks_validates(path):
    config = _load(path)
    config.lock()
    for key in VOCABULARY:
        node = config
        for part in key.split("."):
            node = node[part]  # KeyError names a missing vocabulary key
    validation.validate(config)
    with pytest.raises(AttributeError):
        config.train.batchsize = 3  # a mistyped key cannot be added to a locked config
    # Round trip: override -> serialise -> rebuild gives the overridden value.
    config.train.epochs = 7
    config.data.label_fraction = 0.1
    again = type(config)(config.to_dict())
    assert again.train.epochs == 7 and again.data.label_fraction == 0.1
    assert again.to_dict() == config.to_dict()


def test_dataset_argument():
    config = _load(REPO / "configs" / "barlow.py", "dermamnist")
    assert config.data.name == "dermamnist" and config.method == "barlow_twins"


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("loss.temperature", -0.1, "loss.temperature"),
        ("data.name", "nosuchmnist", "data.name"),
        ("data.size", 32, "data.size"),
        ("data.label_fraction", 1.5, "data.label_fraction"),
        ("model.name", "resnet19", "model.name"),
        ("augment.view1.hflip_prob", 2.0, "augment.view1.hflip_prob"),
        ("augment.view2.crop_scale", (0.5, 0.2), "augment.view2.crop_scale"),
        ("augment.view2.hue", 0.7, "augment.view2.hue"),
        ("method", "byol", "method"),
        ("model.stem", "tiny", "model.stem"),
        ("train.schedule", "linear", "train.schedule"),
        ("eval.knn_metric", "manhattan", "eval.knn_metric"),
        ("init.transfer", "heads", "init.transfer"),
        ("data.source", "disk", "data.source"),
        ("data.memory_budget_gb", 0.0, "data.memory_budget_gb"),
        ("data.tfds_dir", "", "data.tfds_dir"),
        ("data.workers", -1, "data.workers"),
        ("data.prefetch", 0, "data.prefetch"),
    ],
)
def test_impossible_values_name_the_key(key, value, needle):
    config = _load(REPO / "configs" / "barlow_pathmnist.py")
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(validation.ConfigError, match=needle.replace(".", r"\.")):
        validation.validate(config)


def test_mistyped_override_fails_clearly(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--config=configs/barlow_pathmnist.py",
            f"--workdir={tmp_path}",
            "--config.train.batchsize=3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "batchsize" in result.stderr and "batch_size" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "name,module",
    [(n, m.config) for n, m in methods.METHODS.items()]
    + [(n, p.config) for n, p in evaluate.PROTOCOLS.items()],
)
def test_every_registered_name_has_its_config(name, module):
    config = methods.default_config(module, "breastmnist")
    assert config.method == name and config.data.name == "breastmnist"
    validation.validate(config)


def test_arms_name_methods_transfers_and_random():
    assert methods.arms() == ["random", "barlow_twins", "barlow_twins:bn", "simclr", "simclr:bn"]
    for arm in methods.arms():
        assert methods.arm(*methods.parse_arm(arm)) == arm
    for bad in ("byol", "random:bn", "simclr:xx"):
        with pytest.raises(validation.ConfigError, match=f"unknown arm {bad!r}"):
            methods.parse_arm(bad)


@pytest.mark.parametrize(
    ("grid_module", "default", "screened"),
    [
        ("bt_screen", "default", "lars_eta003_crop035"),
        ("simclr_screen", "simclr_default", "simclr_eta003_crop035_weak"),
    ],
)
def test_the_default_recipes_are_the_screened_ones(grid_module, default, screened):
    """configs/barlow.py and configs/simclr.py are the rows of the 2026-12-06 screens that
    passed their health verdict: a later edit of either shows up here."""
    import importlib

    from experiments import screen
    from ssljax import writers

    grid = importlib.import_module(f"experiments.grids.{grid_module}").get_config()
    assert writers.config_json(screen.recipe_config(grid, default)) == writers.config_json(
        screen.recipe_config(grid, screened)
    )
