"""The Barlow Twins recipe screen of issue 20: `python -m experiments.screen --grid=THIS`.

Width-16 ResNet-18, PneumoniaMNIST 28 px, batch 128, 10 epochs (360 steps): the run a new
user makes on a CPU. Each recipe changes only what its name says, on top of `common` and
`configs/barlow.py` as it stands (so 'default' is whatever the config file says today);
the others spell out every value they depend on, so they mean the same thing whatever the
default is.
"""

import ml_collections

from experiments.grids import overrides

# solo-learn's CIFAR recipe as shipped before 2026-12-06 (barlow.yaml + its LARS).
SOLO = {
    "train.optimizer": "lars",
    "train.base_lr": 0.3,
    "train.trust_coefficient": 0.02,
    "train.clip_lr": True,
    "train.trust_on": "gradient",
    "train.warmup_fraction": 0.1,
    "train.weight_decay": 1e-4,
    "loss.scale": 0.1,
    "augment.view1.crop_scale": (0.08, 1.0),
    "augment.view2.crop_scale": (0.08, 1.0),
}


def crop(low: float) -> dict[str, tuple]:
    """Both views' random resized crop from `low` of the image area (solo-learn: 0.08)."""
    return {f"augment.{v}.crop_scale": (low, 1.0) for v in ("view1", "view2")}


def recipes() -> dict[str, dict]:
    paper = {**SOLO, "train.trust_coefficient": 0.001, "train.clip_lr": False}
    return {
        "default": {},
        "solo": SOLO,
        "paper_lars": paper,
        "paper_lars_crop035": {**paper, **crop(0.35)},
        "lars_eta003": {**paper, "train.trust_coefficient": 0.003},
        "lars_eta003_crop035": {**paper, "train.trust_coefficient": 0.003, **crop(0.35)},
        # The chosen recipe again from another seed (init, batches, augmentations): is it luck?
        "lars_eta003_crop035_seed1": {
            **paper,
            "train.trust_coefficient": 0.003,
            **crop(0.35),
            "seed": 1,
        },
        "update_eta005": {**SOLO, "train.trust_on": "update", "train.trust_coefficient": 0.005},
        "update_eta005_crop035": {
            **SOLO,
            "train.trust_on": "update",
            "train.trust_coefficient": 0.005,
            **crop(0.35),
        },
        "sgd_lightly": {
            **SOLO,
            "train.optimizer": "sgd",
            "train.base_lr": 0.12,
            "train.weight_decay": 5e-4,
            "train.warmup_fraction": 0.0,
            "loss.scale": 1.0,
        },
        "adamw": {**SOLO, "train.optimizer": "adamw", "train.base_lr": 1e-3},
    }


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    grid = ml_collections.ConfigDict()
    grid.method = "barlow_twins"
    grid.dataset = "pneumoniamnist"
    grid.linear = True
    grid.common = overrides(
        {
            "model.width": 16,
            "train.batch_size": 128,
            "train.epochs": 10,
            "log.every_steps": 8,
            "log.monitor_every_epochs": 5,
            "log.progress": False,
            "checkpoint.every_epochs": 10,
        }
    )
    grid.recipes = ml_collections.ConfigDict({k: overrides(v) for k, v in recipes().items()})
    return grid
