"""ssljax: self-supervised pretraining (Barlow Twins, SimCLR) and its evaluation on MedMNIST.

`ssljax.load_encoder(workdir)` gives a pretraining run's encoder to code of your own
(`ssljax/encoder.py`).
"""

from ssljax.version import __version__

__all__ = ["__version__", "load_encoder"]


def load_encoder(workdir, *, bn_images=None, batch_size=256):
    """A pretraining run's encoder: `Encoder(variables, apply, model, image_shape)`, `apply`
    taking images uint8 [N, H, W, C] to features float32 [N, F]. See `ssljax.encoder`
    (imported on first use, so that `import ssljax` stays free of JAX)."""
    from ssljax import encoder  # noqa: PLC0415

    return encoder.load_encoder(workdir, bn_images=bn_images, batch_size=batch_size)
