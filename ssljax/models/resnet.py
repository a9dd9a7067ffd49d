"""Flax Linen ResNet encoders (torchvision architecture) with small-image and ImageNet stems.

The layers, strides and shortcuts follow torchvision's ResNet v1.5 exactly (bottleneck stride
on the 3x3 conv, 1x1 conv + BN projection shortcut where the shape changes), so a width-64
ImageNet-stem encoder has torchvision's parameter count without the fc layer: ResNet-18
11,176,512 and ResNet-50 23,508,032.

BatchNorm keeps no axis name: under `jax.jit` with the batch sharded over a mesh, its
statistics are already those of the global batch (what SyncBN does in the references).
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ssljax.models import conv

# torchvision's init: Kaiming normal, fan-out, for ReLU.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_STAGE_WIDTHS = (1, 2, 4, 8)
_STEMS = ("small", "imagenet")
# The values of model.stem and model.dtype.
STEMS = ("auto", *_STEMS)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _conv(features: int, kernel: int, strides: int, dtype: Any, name: str) -> nn.Conv:
    """A bias-free conv with torchvision's symmetric padding of kernel // 2."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_CONV_INIT,
        # XLA:CPU's own kernel gradient is about 11x slower; see models/conv.py.
        conv_general_dilated=conv.conv_general_dilated,
        name=name,
    )


# Running-average decay of every BatchNorm layer (torch's momentum 0.1); `batchnorm.py` reads it.
BN_MOMENTUM = 0.9


def _batch_norm(train: bool, dtype: Any, name: str, zero_scale: bool = False) -> nn.BatchNorm:
    """BatchNorm as torch's defaults (momentum 0.1 there is 0.9 here), float32 parameters."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
        name=name,
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); output channels = `features`."""

    features: int
    strides: int
    dtype: Any = jnp.float32
    zero_init_residual: bool = True

    expansion = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: [B, H, W, C] -> [B, H / strides, W / strides, features], compute dtype."""
        bn = functools.partial(_batch_norm, train, self.dtype)
        y = _conv(self.features, 3, self.strides, self.dtype, "conv1")(x)
        y = nn.relu(bn("bn1")(y))
        y = _conv(self.features, 3, 1, self.dtype, "conv2")(y)
        y = bn("bn2", zero_scale=self.zero_init_residual)(y)
        return nn.relu(y + _shortcut(x, self.features, self.strides, train, self.dtype))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, as torchvision) -> 1x1 convs; output channels = 4 * `features`."""

    features: int
    strides: int
    dtype: Any = jnp.float32
    zero_init_residual: bool = True

    expansion = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: [B, H, W, C] -> [B, H / strides, W / strides, 4 * features], compute dtype."""
        bn = functools.partial(_batch_norm, train, self.dtype)
        out = self.features * self.expansion
        y = nn.relu(bn("bn1")(_conv(self.features, 1, 1, self.dtype, "conv1")(x)))
        y = nn.relu(bn("bn2")(_conv(self.features, 3, self.strides, self.dtype, "conv2")(y)))
        y = bn("bn3", zero_scale=self.zero_init_residual)(_conv(out, 1, 1, self.dtype, "conv3")(y))
        return nn.relu(y + _shortcut(x, out, self.strides, train, self.dtype))


def _shortcut(x: jnp.ndarray, features: int, strides: int, train: bool, dtype: Any) -> jnp.ndarray:
    """Identity, or torchvision's 1x1 conv + BN projection where the shape changes.

    Called inside a block's compact `__call__`, so its layers belong to that block.
    """
    if strides == 1 and x.shape[-1] == features:
        return x
    y = _conv(features, 1, strides, dtype, "downsample_conv")(x)
    return _batch_norm(train, dtype, "downsample_bn")(y)


class ResNet(nn.Module):
    """ResNet encoder without the classifier: images -> globally average-pooled features.

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      block_cls: `BasicBlock` or `Bottleneck`.
      width: channels of the stem and first stage (64 standard); stages use width * (1, 2, 4, 8).
      stem: 'small' (3x3 conv, stride 1, no max-pool; for 28/64 px) or 'imagenet'
        (7x7 conv stride 2, then 3x3 max-pool stride 2; for 128/224 px).
      dtype: compute dtype; parameters and batch statistics stay float32.
      zero_init_residual: zero the last BN scale of each block, so each residual branch starts
        as the identity (torchvision's `zero_init_residual=True`, used by Barlow Twins).
    """

    stage_sizes: Sequence[int]
    block_cls: type[BasicBlock] | type[Bottleneck]
    width: int = 64
    stem: str = "small"
    dtype: Any = jnp.float32
    zero_init_residual: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """x: float [B, H, W, C], any C -> features float32 [B, F].

        F = 8 * width for basic blocks, 32 * width for bottlenecks (`feature_dim`).
        """
        if x.ndim != 4:
            raise ValueError(f"ResNet expects images [B, H, W, C]; got shape {x.shape}")
        if self.stem not in _STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; valid: {', '.join(_STEMS)}")
        if len(self.stage_sizes) != len(_STAGE_WIDTHS):
            raise ValueError(f"stage_sizes needs 4 block counts; got {tuple(self.stage_sizes)}")
        if self.stem == "imagenet":
            x = _conv(self.width, 7, 2, self.dtype, "stem_conv")(x)
        else:
            x = _conv(self.width, 3, 1, self.dtype, "stem_conv")(x)
        x = nn.relu(_batch_norm(train, self.dtype, "stem_bn")(x))
        if self.stem == "imagenet":
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, (num_blocks, mult) in enumerate(
            zip(self.stage_sizes, _STAGE_WIDTHS, strict=True)
        ):
            for block in range(num_blocks):
                x = self.block_cls(
                    features=self.width * mult,
                    strides=2 if stage > 0 and block == 0 else 1,
                    dtype=self.dtype,
                    zero_init_residual=self.zero_init_residual,
                    name=f"stage{stage + 1}_block{block}",
                )(x, train)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


ENCODERS: dict[str, tuple[tuple[int, ...], type[BasicBlock] | type[Bottleneck]]] = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
}


def _lookup(name: str) -> tuple[tuple[int, ...], type[BasicBlock] | type[Bottleneck]]:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r} (model.name); valid: {', '.join(ENCODERS)}")
    return ENCODERS[name]


def feature_dim(name: str, width: int) -> int:
    """Length F of the encoder's feature vector: 8 * width (basic) or 32 * width (bottleneck)."""
    _, block_cls = _lookup(name)
    return width * _STAGE_WIDTHS[-1] * block_cls.expansion


def make_encoder(
    name: str,
    width: int,
    stem: str,
    image_size: int,
    dtype: str | jnp.dtype,
    zero_init_residual: bool = True,
) -> ResNet:
    """The encoder `name` (a key of `ENCODERS`).

    stem: 'small', 'imagenet', or 'auto' ('small' for image_size <= 64, else 'imagenet').
    dtype: compute dtype, 'float32' | 'bfloat16' | 'float16' or the matching jnp dtype.
    zero_init_residual: zero each block's last BatchNorm scale (see `ResNet`).
    """
    stage_sizes, block_cls = _lookup(name)
    if stem == "auto":
        stem = "small" if image_size <= 64 else "imagenet"
    if stem not in _STEMS:
        raise ValueError(f"unknown stem {stem!r} (model.stem); valid: auto, {', '.join(_STEMS)}")
    try:
        dtype_name = jnp.dtype(dtype).name
    except TypeError:
        dtype_name = str(dtype)
    if dtype_name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (model.dtype); valid: {', '.join(DTYPES)}")
    if width < 1:
        raise ValueError(f"model.width must be a positive channel count; got {width}")
    return ResNet(stage_sizes, block_cls, width, stem, DTYPES[dtype_name], zero_init_residual)
