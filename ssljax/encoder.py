"""A pretrained encoder outside ssljax's loops: `ssljax.load_encoder(workdir)`.

    import numpy as np, ssljax
    encoder = ssljax.load_encoder("runs/bt_folder")       # a pretraining run, or its encoder/
    images = np.zeros((10, 28, 28, 1), np.uint8)          # uint8 [N, H, W, C], as pretrained
    features = encoder.apply(images)                      # float32 [N, F]
    params, batch_stats = encoder.variables["params"], encoder.variables["batch_stats"]

The architecture is read from the exported variables themselves (stem, width, input
channels) and the run's config.json (model.name, when there), so nothing has to be repeated.
`apply` runs in eval mode, jitted and batched over this host's devices, with the BatchNorm
statistics of pretraining; `bn_images` re-estimates them on images of yours first, as
ssljax's evaluation does on the train split (`batchnorm.py`).
"""

import math
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import batchnorm, checkpoint, inference, models, parallel, steps, writers
from ssljax.errors import ConfigError, DataError


class Encoder(NamedTuple):
    """A loaded encoder.

    Attributes:
      variables: {'params': ..., 'batch_stats': ...} of the Flax ResNet `model`.
      apply: images uint8 [N, H, W, C] (or [N, H, W] for grey) -> features float32 [N, F];
        H, W and C must be the pretraining's (a DataError names both shapes otherwise).
      model: the Flax module (`model.apply(variables, x, train=False)` on images in [0, 1]
        normalised by `ssljax.augment.normalize`).
      image_shape: (H, W, C) of the images it was pretrained on (H = W = 28, or 224 for the
        ImageNet stem, when the export stands alone without its run's config.json; then H
        and W are not checked).
    """

    variables: dict[str, Any]
    apply: Callable[[np.ndarray], np.ndarray]
    model: models.ResNet
    image_shape: tuple[int, int, int]


def load_encoder(
    workdir: str | pathlib.Path, *, bn_images: np.ndarray | None = None, batch_size: int = 256
) -> Encoder:
    """The encoder a pretraining run exported (`WORKDIR/encoder/`).

    Args:
      workdir: the pretraining run's workdir, or its `encoder/` folder.
      bn_images: uint8 [M, H, W, C]: re-estimate the BatchNorm statistics on these images
        (a few thousand of the images you will embed) before `apply`; None keeps
        pretraining's running averages.
      batch_size: images per device call (rounded up to a multiple of the device count).
    Raises:
      ConfigError: no finished encoder export there. DataError: it cannot be read.
    """
    source = pathlib.Path(workdir).expanduser()
    variables = checkpoint.load_encoder(source)
    run_config = _run_config(source)
    model, image_shape = _model(variables, run_config, source)
    expected = image_shape if run_config else (None, None, image_shape[-1])
    mesh = parallel.make_mesh()
    devices = mesh.devices.size
    batch_size = math.ceil(batch_size / devices) * devices
    params, stats = variables["params"], variables["batch_stats"]
    if bn_images is not None:
        images = _checked(bn_images, expected)
        stats = batchnorm.reestimate(
            batchnorm.make_moments_fn(model), params, stats, images, batch_size, mesh
        )
    apply_fn = jax.jit(steps.make_apply_fn(model))

    def apply(images: np.ndarray) -> np.ndarray:
        images = _checked(images, expected)
        out = inference.batched_apply(apply_fn, params, stats, images, batch_size, mesh)
        return np.asarray(out, np.float32)

    return Encoder({"params": params, "batch_stats": stats}, apply, model, image_shape)


def _run_config(source: pathlib.Path) -> dict[str, Any]:
    """The pretraining run's config.json ({} when the export stands alone)."""
    path = checkpoint.run_config_file(source)
    return writers.read_config(path.parent) if path else {}


def _model(variables, run_config, source) -> tuple[models.ResNet, tuple[int, int, int]]:
    """The ResNet whose variables have exactly the shapes of `variables`."""
    kernel = np.shape(variables["params"]["stem_conv"]["kernel"])  # [k, k, C, width]
    stem = "imagenet" if kernel[0] == 7 else "small"
    channels, width = int(kernel[2]), int(kernel[3])
    size = int(run_config.get("data", {}).get("size", 28 if stem == "small" else 224))
    image_shape = (size, size, channels)
    named = run_config.get("model", {}).get("name")
    shapes = lambda tree: jax.tree.map(np.shape, tree)  # noqa: E731
    for name in [named] if named in models.ENCODERS else list(models.ENCODERS):
        model = models.make_encoder(name, width, stem, size, "float32", False)
        init = lambda m=model: m.init(  # noqa: E731
            jax.random.key(0), jnp.zeros((1, *image_shape)), train=False
        )
        if shapes(dict(jax.eval_shape(init))) == shapes(variables):
            return model, image_shape
    raise ConfigError(f"the encoder in {source} matches none of {list(models.ENCODERS)}")


def _checked(images: np.ndarray, expected: tuple) -> np.ndarray:
    """uint8 [N, H, W, C] of the `expected` (H, W, C) (None: any), or a DataError naming
    both shapes: an encoder applied at another size returns features, but not the ones it
    learned to give."""
    images = given = np.asarray(images)
    if images.ndim == 3 and expected[-1] == 1:
        images = images[..., None]
    fits = images.ndim == 4 and all(
        want is None or got == want for got, want in zip(images.shape[1:], expected, strict=True)
    )
    if images.dtype != np.uint8 or not fits:
        h, w, c = ("H" if d is None else d for d in expected)
        raise DataError(
            f"images of dtype {given.dtype} and shape {given.shape}: the encoder was "
            f"pretrained on uint8 [N, {h}, {w}, {c}] (0..255); resize them to that"
        )
    return images
