"""The 2026-12-06 CPU study: pretraining variance in the intervals, fine-tuning tuned alike.

    python -m experiments.sweep --grid=experiments/grids/study_seeds.py --root=runs/study_seeds
    python -m ssljax.report runs/study_seeds --out=experiments/results/DATE-study_seeds

Issue 21's study, cut to what two CPU cores do in about two hours: PneumoniaMNIST 28 px
(4,708 train images), a width-16 ResNet-18, Barlow Twins and SimCLR with the recipes that
passed their health screens (experiments/results/2026-12-06-bt_screen; configs/barlow.py,
configs/simclr.py), against the identical network from random initialisation.

- Three pretraining runs per method (seeds 0, 1, 2), each evaluated by one evaluation seed
  (seed i starts from pretraining run i): the report's interval is a t interval over the
  three pretraining runs (`ssljax.stats.two_level_ci`), which carries pretraining and
  evaluation variance together. One evaluation seed per run is the cheapest design that
  does; more seeds per run would only narrow the within-run part.
- Pretraining: the screen's budget (batch 128, 10 epochs = 360 steps), so the screen's
  default Barlow Twins run is this grid's seed 0.
- Fine-tuning: Adam at 1e-4, 1e-3 and 1e-2 (MedMNIST v2 uses 1e-3) for every arm, the rate
  chosen on val per arm, label budget and seed (the full val split, and the val subset
  scaled with the label budget in the report's second table); 3 epochs of the full train
  split (111 steps of 128) at every budget, where the 2026-11-30 study's plateau table
  found val AUC flat for random init and SimCLR.
- Linear probe: L2 strength chosen on val among 1e-6 .. 1 (configs/base.py).
- kNN: k = 20, cosine.

Cut for time (issue 21 allows it): BreastMNIST at 28 and 64 px, longer pretraining, and
more evaluation seeds. The 2026-12-06 run also left out fine-tuning at 10% of the labels:
experiments/results/2026-12-06-study_seeds/README.md gives the commands of its parts.
"""

import ml_collections

from experiments.grids import overrides


def get_config() -> ml_collections.ConfigDict:
    grid = ml_collections.ConfigDict()
    grid.name = "study_seeds"
    grid.datasets = ("pneumoniamnist",)
    grid.methods = ("barlow_twins", "simclr", "random")
    grid.label_fractions = (0.01, 0.1, 1.0)
    grid.protocols = ("finetune", "linear", "knn")
    grid.seeds = (0, 1, 2)
    grid.pretrain_seeds = (0, 1, 2)
    # Chosen on val per arm by the report; each rate is its own cell ('-lr0.001').
    grid.finetune_lrs = (1e-4, 1e-3, 1e-2)
    grid.common = overrides({"model.width": 16, "log.progress": False})
    # The Barlow Twins screen's `common` (experiments/grids/bt_screen.py).
    grid.pretrain = overrides(
        {
            "train.batch_size": 128,
            "train.epochs": 10,
            "checkpoint.every_epochs": 10,
            "log.every_steps": 8,
            "log.monitor_every_epochs": 5,
        }
    )
    grid.finetune = overrides(
        {"train.batch_size": 128, "train.epochs": 3, "checkpoint.every_epochs": 1}
    )
    grid.linear = ml_collections.ConfigDict()
    grid.knn = ml_collections.ConfigDict()
    return grid
