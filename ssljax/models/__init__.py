"""Encoders (Linen ResNets), the projector MLP, and the pretraining / classifier models."""

from ssljax.models.heads import ClassifierModel, MLPProjector, PretrainModel
from ssljax.models.resnet import (
    ENCODERS,
    BasicBlock,
    Bottleneck,
    ResNet,
    feature_dim,
    make_encoder,
)

__all__ = [
    "ENCODERS",
    "BasicBlock",
    "Bottleneck",
    "ClassifierModel",
    "MLPProjector",
    "PretrainModel",
    "ResNet",
    "feature_dim",
    "make_encoder",
]
