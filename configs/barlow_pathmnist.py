"""Barlow Twins on PathMNIST (28 px), ResNet-18.

python launch.py --config=configs/barlow_pathmnist.py --workdir=runs/bt_path
"""

import ml_collections

from configs import barlow


def get_config() -> ml_collections.ConfigDict:
    return barlow.get_config("pathmnist")
