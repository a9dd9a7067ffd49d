"""kNN classification on frozen encoder features.

    python launch.py --config=configs/knn.py:pathmnist --workdir=runs/knn_path \
        --config.init.workdir=runs/bt_path

Default: k=20, cosine similarity, votes weighted by exp(similarity / 0.07), as SSL libraries
monitor representations. `--config.eval.knn_k=11 --config.eval.knn_metric=euclidean` is
the majority-vote kNN of the MedMNIST+ benchmark. The labelled subset is the memory bank.
"""

import ml_collections

from configs import base


def get_config(dataset: str = "pathmnist") -> ml_collections.ConfigDict:
    config = base.get_config()
    config.method = "knn"
    config.data.name = dataset
    return config
