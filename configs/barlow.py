"""Barlow Twins pretraining on any 2D MedMNIST dataset: `configs/barlow.py:DATASET`.

    python launch.py --config=configs/barlow.py:dermamnist --workdir=runs/bt_derma

Defaults follow the strongest published small-image recipe (ResNet-18 with the small-image
stem on 32 px data): projector 2048-2048-2048, lambda 0.0051, LARS with biases and BatchNorm
excluded, base LR 0.3 at batch 256, weight decay 1e-4, 10 warmup epochs then cosine, and
BYOL's asymmetric views (blur 1.0 / 0.1, solarisation 0.0 / 0.2). The paper's ImageNet
values stay reachable by override: `--config.model.projector_dims='(8192,8192,8192)'
--config.train.base_lr=0.2 --config.train.bias_lr_factor=0.024
--config.train.weight_decay=1.5e-6 --config.train.batch_size=2048`.
"""

import ml_collections

from configs import base


def get_config(dataset: str = "pathmnist") -> ml_collections.ConfigDict:
    config = base.get_config()
    config.method = "barlow_twins"
    config.data.name = dataset
    config.model.projector_dims = (2048, 2048, 2048)
    config.loss.lambd = 0.0051
    config.train.optimizer = "lars"
    config.train.base_lr = 0.3
    config.train.weight_decay = 1e-4
    return config
