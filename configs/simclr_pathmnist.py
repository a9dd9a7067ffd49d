"""SimCLR on PathMNIST (28 px), ResNet-18.

python launch.py --config=configs/simclr_pathmnist.py --workdir=runs/simclr_path
"""

import ml_collections

from configs import simclr


def get_config() -> ml_collections.ConfigDict:
    return simclr.get_config("pathmnist")
