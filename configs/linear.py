"""Linear probe: logistic regression on frozen encoder features.

    python launch.py --config=configs/linear.py:pathmnist --workdir=runs/lin_path \
        --config.init.workdir=runs/bt_path --config.data.label_fraction=0.01

Features are computed once with the frozen encoder (eval-mode BatchNorm, no augmentation);
a multinomial logistic regression (one sigmoid per label for multi-label) is fitted with
L-BFGS for each L2 strength in `eval.linear_l2`; the strength with the best val AUC is tested.
"""

import ml_collections

from configs import base


def get_config(dataset: str = "pathmnist") -> ml_collections.ConfigDict:
    config = base.get_config()
    config.method = "linear"
    config.data.name = dataset
    return config
