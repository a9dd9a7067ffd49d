"""SimCLR at the Barlow Twins screen's budget: `python -m experiments.screen --grid=THIS`.

The same run as `bt_screen.py` (width-16 ResNet-18, PneumoniaMNIST 28 px, batch 128, 10
epochs) with `configs/simclr.py`'s recipe, so the two methods' health and kNN / linear
scores sit in one table. `simclr_default` is whatever `configs/simclr.py` says today;
`solo` spells out solo-learn's recipe (LARS trust 0.02, its clip on each gradient), which
failed the health verdict at this budget (positive-pair accuracy 1%, embedding RankMe
157 -> 12.5); the others try the Barlow Twins cure of 2026-12-06 on it (trust 0.003 without
the clip), its 35% crops, and lighter views.
"""

import ml_collections

from experiments.grids import bt_screen, overrides

SOLO = {
    "train.optimizer": "lars",
    "train.base_lr": 0.4,
    "train.trust_coefficient": 0.02,
    "train.clip_lr": True,
    "train.trust_on": "gradient",
    "train.warmup_fraction": 0.1,
    "train.weight_decay": 1e-4,
    "loss.temperature": 0.2,
    **{
        f"augment.{view}.{key}": value
        for view in ("view1", "view2")
        for key, value in (
            ("crop_scale", (0.08, 1.0)),
            ("brightness", 0.8),
            ("contrast", 0.8),
            ("saturation", 0.8),
            ("hue", 0.2),
            ("blur_prob", 0.5),
        )
    },
}


WEAK = {
    f"augment.{view}.{key}": value
    for view in ("view1", "view2")
    for key, value in (
        ("brightness", 0.4),
        ("contrast", 0.4),
        ("saturation", 0.4),
        ("hue", 0.1),
        ("blur_prob", 0.0),
    )
}


def recipes() -> dict[str, dict]:
    eta003 = {**SOLO, "train.trust_coefficient": 0.003, "train.clip_lr": False}
    return {
        "simclr_default": {},
        "simclr_solo": SOLO,
        "simclr_eta003": eta003,
        "simclr_eta003_crop035": {**eta003, **bt_screen.crop(0.35)},
        # lightly's CIFAR-10 SimCLR views (and the SimCLR paper's for CIFAR): colour jitter
        # at strength 0.5 and no blur, which at 28 px (sigma up to 2 px) erases most detail.
        "simclr_eta003_crop035_weak": {**eta003, **bt_screen.crop(0.35), **WEAK},
    }


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    grid = bt_screen.get_config(arg)
    grid.method = "simclr"
    grid.recipes = ml_collections.ConfigDict({k: overrides(v) for k, v in recipes().items()})
    return grid
