"""Projector MLP for pretraining and the two models built on an encoder.

`PretrainModel` and `ClassifierModel` both hold their encoder under the name 'encoder', so an
evaluation run copies `params['encoder']` and `batch_stats['encoder']` from one to the other.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ssljax.models.resnet import BN_MOMENTUM

# torch.nn.Linear's default init, U(+-1 / sqrt(fan_in)); also far quicker to compile on CPU than
# Flax's truncated-normal default.
_DENSE_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class MLPProjector(nn.Module):
    """Linear-BN-ReLU for each hidden width in dims[:-1], then a Linear to dims[-1].

    Barlow Twins: dims (2048, 2048, 2048); SimCLR: (2048, 128). No Linear has a bias: before
    BN it is redundant, and the references' last layers (Barlow Twins PyTorch, SimCLR v2 TF)
    have none.
    """

    dims: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: float [B, F] -> embeddings float32 [B, dims[-1]]."""
        if not self.dims:
            raise ValueError("projector dims (model.projector_dims) must name at least one width")
        for i, dim in enumerate(self.dims[:-1]):
            x = nn.Dense(
                dim,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=_DENSE_INIT,
                name=f"linear{i}",
            )(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=BN_MOMENTUM,
                epsilon=1e-5,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name=f"bn{i}",
            )(x)
            x = nn.relu(x)
        x = nn.Dense(
            self.dims[-1],
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=_DENSE_INIT,
            name=f"linear{len(self.dims) - 1}",
        )(x)
        return x.astype(jnp.float32)


class PretrainModel(nn.Module):
    """Encoder + projector; variables {'encoder', 'projector'} in 'params' and 'batch_stats'."""

    encoder: nn.Module
    projector_dims: Sequence[int]
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.projector = MLPProjector(self.projector_dims, self.dtype)

    def __call__(self, x: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
        """x: float [B, H, W, C] -> (features float32 [B, F], embeddings float32 [B, D])."""
        features = self.encoder(x, train)
        return features, self.projector(features, train)


class ClassifierModel(nn.Module):
    """Encoder + linear head; variables {'encoder', 'head'} in 'params'."""

    encoder: nn.Module
    num_outputs: int

    def setup(self) -> None:
        # float32 head: logits feed the loss and metrics directly.
        self.head = nn.Dense(
            self.num_outputs, dtype=jnp.float32, param_dtype=jnp.float32, kernel_init=_DENSE_INIT
        )

    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: float [B, H, W, C] -> logits float32 [B, num_outputs]."""
        return self.head(self.encoder(x, train))
