"""SimCLR pretraining on any 2D MedMNIST dataset: `configs/simclr.py:DATASET`.

    python launch.py --config=configs/simclr.py:dermamnist --workdir=runs/simclr_derma

Defaults follow solo-learn's small-image recipe (vturrisi/solo-learn,
`scripts/pretrain/cifar/simclr.yaml` with `augmentations/symmetric.yaml`, and its LARS in
`solo/utils/lars.py`): ResNet-18 with the small-image stem, each value's source beside it.
"""

import ml_collections

from configs import base


def get_config(dataset: str = "pathmnist") -> ml_collections.ConfigDict:
    config = base.get_config()
    config.method = "simclr"
    config.data.name = dataset
    config.model.projector_dims = (2048, 256)  # simclr.yaml: proj_hidden_dim 2048, output 256
    config.loss.temperature = 0.2  # simclr.yaml
    config.train.optimizer = "lars"  # simclr.yaml: lars, exclude_bias_n_norm
    config.train.base_lr = 0.4  # simclr.yaml: lr 0.4 at batch 256, scaled linearly
    config.train.weight_decay = 1e-4  # simclr.yaml
    config.train.trust_coefficient = 0.02  # simclr.yaml: eta 0.02
    config.train.clip_lr = True  # simclr.yaml: clip_lr True
    config.train.schedule = "cosine"  # simclr.yaml: warmup_cosine
    config.train.warmup_fraction = 0.1  # solo-learn: 10 warmup epochs (of a 100-epoch run)
    # symmetric.yaml: crop 0.08-1, jitter 0.8 x (0.8, 0.8, 0.8, 0.2), grayscale 0.2, flip 0.5,
    # blur 0.5 (sigma 0.1-2 px), no solarisation.
    for view in (config.augment.view1, config.augment.view2):
        view.crop_scale = (0.08, 1.0)
        view.brightness = view.contrast = view.saturation = 0.8
        view.hue = 0.2
        view.blur_prob = 0.5
        view.solarize_prob = 0.0
    return config
