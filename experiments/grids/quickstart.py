"""The quickstart: Barlow Twins on BreastMNIST vs the same network from random init.

    python -m experiments.quickstart                       # sweep + report, a few minutes
    python -m experiments.sweep --grid=experiments/grids/quickstart.py --root=runs/quickstart
    python -m experiments.quickstart --grid=experiments/grids/quickstart.py:tiny  # CI smoke test

A small ResNet-18 (width 8) is pretrained for 30 epochs (240 steps) on the 546 unlabelled
BreastMNIST train images (28 px), then fine-tuned, linearly probed and kNN-classified with
10% and 100% of the labels, beside the identical network trained from random initialisation. The
numbers say little at this scale (one seed, minutes of CPU); the study grids do the real
comparison. `tiny` shrinks everything further for a smoke test.
"""

import ml_collections

from experiments.grids import overrides


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "tiny"):
        raise ValueError(f"experiments/grids/quickstart.py:{arg}: the argument is '' or 'tiny'")
    tiny = arg == "tiny"
    grid = ml_collections.ConfigDict()
    grid.name = "quickstart-tiny" if tiny else "quickstart"
    grid.datasets = ("breastmnist",)
    grid.methods = ("barlow_twins", "random")
    grid.label_fractions = (0.1, 1.0)
    # The linear probe is left out of `tiny` (CI): it adds a minute and has its own tests.
    grid.protocols = ("finetune", "knn") if tiny else ("finetune", "linear", "knn")
    grid.seeds = (0,)
    # The smoke test's one-epoch pretraining is too short to pass its health check
    # (ssljax.health); it is evaluated anyway, to exercise every step of the sweep.
    grid.evaluate_failed = tiny
    grid.common = overrides(
        {
            "model.width": 4 if tiny else 8,
            "log.progress": False,
            "eval.batch_size": 256,
        }
    )
    # 240 steps of 64 (30 epochs of the 546 images): Barlow Twins' kNN monitor on val falls
    # below step 0's for its first 10 epochs here and ends above it (0.764 -> 0.813 on
    # 2026-12-06, verdict healthy); 40 steps of 128 ended below it (0.729, failed).
    grid.pretrain = overrides(
        {
            "model.projector_dims": (32, 32) if tiny else (256, 256),
            "train.batch_size": 64,
            "train.epochs": 1 if tiny else 30,
            "checkpoint.every_epochs": 10,
            "log.every_steps": 4 if tiny else 8,
            "log.monitor_every_epochs": 10,
        }
    )
    # Epochs of the full train split (9 steps of 64) at every label budget; the schedule's
    # warmup and x0.1 steps follow the run's length.
    grid.finetune = overrides(
        {
            "train.batch_size": 64,
            "train.epochs": 1 if tiny else 10,
            "checkpoint.every_epochs": 5,
        }
    )
    grid.linear = overrides({"eval.linear_epochs": 20 if tiny else 100})
    grid.knn = overrides({"eval.knn_k": 20})
    return grid
