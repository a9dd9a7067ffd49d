"""Fine-tune a (pretrained or random) encoder on a labelled MedMNIST task.

    python launch.py --config=configs/finetune.py:pathmnist --workdir=runs/ft_path \
        --config.init.workdir=runs/bt_path --config.data.label_fraction=0.1

`config.init.workdir=''` (the default) trains the identical network from random
initialisation: the baseline. Defaults follow the MedMNIST v2 benchmark's ResNet-18 (28)
recipe (Yang et al., Scientific Data 2023): Adam, learning rate 1e-3, batch 128, 100 epochs,
learning rate x0.1 at epochs 50 and 75, cross-entropy (binary cross-entropy per label for
multi-label), no augmentation; the epoch with the best val AUC is tested. Light training
augmentation (`config.augment.enabled=True`, view1's settings: crop 0.8-1, flips) is
available.
"""

import ml_collections

from configs import base


def get_config(dataset: str = "pathmnist") -> ml_collections.ConfigDict:
    config = base.get_config()
    config.method = "finetune"
    config.data.name = dataset
    config.train.optimizer = "adam"
    config.train.base_lr = 1e-3
    config.train.batch_size = 128
    config.train.epochs = 100
    config.train.schedule = "step"
    config.train.decay_fractions = (0.5, 0.75)  # MedMNIST v2: epochs 50 and 75 of 100
    config.train.warmup_fraction = 0.0
    config.train.weight_decay = 0.0
    config.augment.enabled = False
    light = config.augment.view1
    light.crop_scale = (0.8, 1.0)
    light.jitter_prob = light.grayscale_prob = light.blur_prob = light.solarize_prob = 0.0
    config.checkpoint.every_epochs = 5
    return config
