"""Encoders (Linen ResNets), the projector MLP, and the pretraining / classifier models."""

from ssljax.models.heads import ClassifierModel, MLPProjector, PretrainModel
from ssljax.models.resnet import (
    BN_MOMENTUM,
    DTYPES,
    ENCODERS,
    STEMS,
    BasicBlock,
    Bottleneck,
    ResNet,
    feature_dim,
    make_encoder,
)

__all__ = [
    "DTYPES",
    "ENCODERS",
    "BN_MOMENTUM",
    "STEMS",
    "BasicBlock",
    "Bottleneck",
    "ClassifierModel",
    "MLPProjector",
    "PretrainModel",
    "ResNet",
    "feature_dim",
    "make_encoder",
]
