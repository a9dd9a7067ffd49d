"""The committed CPU study: does SSL pretraining help a small ResNet-18 on MedMNIST?

    python -m experiments.sweep --grid=experiments/grids/study_cpu.py --root=runs/study_cpu
    python -m ssljax.report runs/study_cpu --out=experiments/results/DATE-study_cpu

BreastMNIST (546 train images) and PneumoniaMNIST (4708), 28 px; Barlow Twins and SimCLR
against random initialisation; 1%, 10% and 100% of the labels; fine-tuning, linear probe
and kNN; 3 seeds: 12 pretraining runs and 162 evaluations. Scaled to finish in about half
an hour on 2 CPU cores: a width-8 ResNet-18 (1/8 of the standard channels), projector
512-512, batch 128; pretraining for 20 epochs on BreastMNIST and 2 on PneumoniaMNIST (about
the same number of images seen), fine-tuning for 10 and 3 epochs. BreastMNIST 64 px is left
out: with 5x the pixels its runs cost about 5x those at 28 px, which would more than double
the study (`--grid.datasets="('breastmnist', 'pneumoniamnist', 'breastmnist_64')"`).
"""

import ml_collections

from experiments.grids import overrides


def get_config() -> ml_collections.ConfigDict:
    grid = ml_collections.ConfigDict()
    grid.name = "study_cpu"
    grid.datasets = ("breastmnist", "pneumoniamnist")
    grid.methods = ("barlow_twins", "simclr", "random")
    grid.label_fractions = (0.01, 0.1, 1.0)
    grid.protocols = ("finetune", "linear", "knn")
    grid.seeds = (0, 1, 2)
    grid.common = overrides({"model.width": 8, "log.progress": False})
    grid.pretrain = overrides(
        {
            "model.projector_dims": (512, 512),
            "train.batch_size": 128,
            "train.epochs": 20,
            "train.warmup_epochs": 2,
            "checkpoint.every_epochs": 10,
            "log.every_steps": 8,
            "log.monitor_every_epochs": 5,
        }
    )
    grid.finetune = overrides(
        {
            "train.batch_size": 64,
            "train.epochs": 10,
            # MedMNIST v2's x0.1 at 50% and 75% of training.
            "train.decay_epochs": (5, 8),
            "checkpoint.every_epochs": 5,
        }
    )
    grid.linear = ml_collections.ConfigDict()
    grid.knn = ml_collections.ConfigDict()
    # PneumoniaMNIST has 8.6x the images: fewer epochs, about the same images seen per run.
    grid.by_dataset = ml_collections.ConfigDict()
    grid.by_dataset.pneumoniamnist = ml_collections.ConfigDict()
    grid.by_dataset.pneumoniamnist.pretrain = overrides(
        {
            "train.epochs": 2,
            "train.warmup_epochs": 1,
            "checkpoint.every_epochs": 1,
            "log.monitor_every_epochs": 1,
        }
    )
    grid.by_dataset.pneumoniamnist.finetune = overrides(
        {
            "train.batch_size": 128,
            "train.epochs": 3,
            "train.decay_epochs": (2, 3),
            "checkpoint.every_epochs": 1,
        }
    )
    return grid
