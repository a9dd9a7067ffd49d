"""SimCLR pretraining on any 2D MedMNIST dataset: `configs/simclr.py:DATASET`.

    python launch.py --config=configs/simclr.py:dermamnist --workdir=runs/simclr_derma

Defaults follow the small-image SimCLR recipe (ResNet-18, small stem): projector 2048 -> 128,
NT-Xent temperature 0.2, LARS base LR 0.3 at batch 256 (biases and BatchNorm excluded),
weight decay 1e-4, warmup then cosine; symmetric views with stronger colour distortion
(jitter 0.8/0.8/0.8/0.2 with probability 0.8, blur 0.5, no solarisation).
"""

import ml_collections

from configs import base


def get_config(dataset: str = "pathmnist") -> ml_collections.ConfigDict:
    config = base.get_config()
    config.method = "simclr"
    config.data.name = dataset
    config.model.projector_dims = (2048, 128)
    config.loss.temperature = 0.2
    config.train.optimizer = "lars"
    config.train.base_lr = 0.3
    config.train.weight_decay = 1e-4
    for view in (config.augment.view1, config.augment.view2):
        view.brightness = view.contrast = view.saturation = 0.8
        view.hue = 0.2
        view.blur_prob = 0.5
        view.solarize_prob = 0.0
    return config
