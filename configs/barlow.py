"""Barlow Twins pretraining on any 2D MedMNIST dataset: `configs/barlow.py:DATASET`.

    python launch.py --config=configs/barlow.py:dermamnist --workdir=runs/bt_derma

Defaults follow solo-learn's small-image recipe (vturrisi/solo-learn,
`scripts/pretrain/cifar/barlow.yaml` with `augmentations/asymmetric.yaml`, and its LARS in
`solo/utils/lars.py`): ResNet-18 with the small-image stem, each value's source beside it.
The paper's ImageNet values stay reachable by override: `--config.model.projector_dims=
'(8192,8192,8192)' --config.train.base_lr=0.2 --config.train.bias_lr_factor=0.024
--config.train.weight_decay=1.5e-6 --config.train.trust_coefficient=0.001
--config.train.clip_lr=False --config.loss.scale=1.0 --config.train.batch_size=2048`.
"""

import ml_collections

from configs import base


def get_config(dataset: str = "pathmnist") -> ml_collections.ConfigDict:
    config = base.get_config()
    config.method = "barlow_twins"
    config.data.name = dataset
    # solo-learn barlow.yaml: proj_hidden_dim 2048, proj_output_dim 2048 (two hidden layers).
    config.model.projector_dims = (2048, 2048, 2048)
    config.loss.lambd = 0.0051  # barlow.yaml (the paper's lambda)
    config.loss.scale = 0.1  # barlow.yaml: scale_loss 0.1
    config.train.optimizer = "lars"  # barlow.yaml: lars, exclude_bias_n_norm
    config.train.base_lr = 0.3  # barlow.yaml: lr 0.3 at batch 256, scaled linearly
    config.train.weight_decay = 1e-4  # barlow.yaml
    config.train.trust_coefficient = 0.02  # barlow.yaml: eta 0.02
    config.train.clip_lr = True  # barlow.yaml: clip_lr True
    config.train.schedule = "cosine"  # barlow.yaml: warmup_cosine
    config.train.warmup_fraction = 0.1  # solo-learn: 10 warmup epochs (of a 100-epoch run)
    # asymmetric.yaml: crop 0.08-1, jitter 0.8 x (0.4, 0.4, 0.2, 0.1), grayscale 0.2, flip 0.5,
    # no blur at 32 px, solarisation 0.0 / 0.2.
    for view, solarize in ((config.augment.view1, 0.0), (config.augment.view2, 0.2)):
        view.crop_scale = (0.08, 1.0)
        view.blur_prob = 0.0
        view.solarize_prob = solarize
    return config
