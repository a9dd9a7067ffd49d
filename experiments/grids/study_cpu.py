"""The committed CPU study: does SSL pretraining help a small ResNet-18 on MedMNIST?

    python -m experiments.sweep --grid=experiments/grids/study_cpu.py --root=runs/study_cpu
    python -m ssljax.report runs/study_cpu --out=experiments/results/DATE-study_cpu

BreastMNIST (546 train images) and PneumoniaMNIST (4,708), 28 px, under the fair protocol
(docs/design.md, "A fair comparison"): Barlow Twins and SimCLR with solo-learn's small-image
recipes (configs/barlow.py, configs/simclr.py) against the identical network from random
initialisation (residual BatchNorm scales at one, torchvision's default), with BatchNorm
statistics re-estimated on the train images before every scoring; and the ablation
'barlow_twins:bn' (random kernels + the pretrained BatchNorm parameters) for the frozen
protocols. 1%, 10%, 100% of the labels; 5 evaluation seeds (label subsets, heads and
fine-tuning), all from one pretraining run per method and dataset.

Scaled to about two hours on 2 CPU cores: a width-16 ResNet-18 (1/4 of the standard
channels), batch 128, the recipes' projectors; pretraining 100 epochs on BreastMNIST and 10
on PneumoniaMNIST (the CPU's limit); fine-tuning for the same number of optimiser steps at
every label budget and for both arms (epochs counted over the full train split: 12 x 9
steps of 64 on BreastMNIST, 3 x 37 steps of 128 on PneumoniaMNIST), Adam 1e-3 as MedMNIST v2
for both arms. A learning-rate grid (`--grid.finetune_lrs='(1e-3, 1e-4)'`) doubles the
fine-tuning cost and did not fit.
"""

import ml_collections

from experiments.grids import overrides


def get_config() -> ml_collections.ConfigDict:
    grid = ml_collections.ConfigDict()
    grid.name = "study_cpu"
    grid.datasets = ("breastmnist", "pneumoniamnist")
    grid.methods = ("barlow_twins", "simclr", "random", "barlow_twins:bn")
    grid.ablation_protocols = ("linear", "knn")
    grid.label_fractions = (0.01, 0.1, 1.0)
    grid.protocols = ("finetune", "linear", "knn")
    grid.seeds = (0, 1, 2, 3, 4)
    grid.pretrain_seeds = (0,)
    # Chosen on val per arm by the report; each rate is its own cell ('-lr0.001').
    grid.finetune_lrs = (1e-3,)
    grid.common = overrides({"model.width": 16, "log.progress": False})
    grid.pretrain = overrides(
        {
            "train.batch_size": 128,
            "train.epochs": 100,
            "checkpoint.every_epochs": 10,
            "log.every_steps": 8,
            "log.monitor_every_epochs": 10,
        }
    )
    grid.finetune = overrides(
        {"train.batch_size": 64, "train.epochs": 12, "checkpoint.every_epochs": 4}
    )
    grid.linear = ml_collections.ConfigDict()
    grid.knn = ml_collections.ConfigDict()
    grid.by_dataset = ml_collections.ConfigDict()
    grid.by_dataset.pneumoniamnist = ml_collections.ConfigDict()
    grid.by_dataset.pneumoniamnist.pretrain = overrides(
        {"train.epochs": 10, "checkpoint.every_epochs": 2, "log.monitor_every_epochs": 2}
    )
    grid.by_dataset.pneumoniamnist.finetune = overrides(
        {"train.batch_size": 128, "train.epochs": 3, "checkpoint.every_epochs": 1}
    )
    return grid
