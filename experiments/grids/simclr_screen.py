"""SimCLR at the Barlow Twins screen's budget: `python -m experiments.screen --grid=THIS`.

The same run as `bt_screen.py` (width-16 ResNet-18, PneumoniaMNIST 28 px, batch 128, 10
epochs) with `configs/simclr.py`'s recipe, so the two methods' health and kNN / linear
scores sit in one table. The Barlow Twins fix of 2026-12-06 changed only
`configs/barlow.py`: SimCLR's recipe (LARS trust 0.02, its clip on each gradient) is the
same before and after, and this row is both.
"""

import ml_collections

from experiments.grids import bt_screen, overrides


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    grid = bt_screen.get_config(arg)
    grid.method = "simclr"
    grid.recipes = ml_collections.ConfigDict({"simclr_default": overrides({})})
    return grid
