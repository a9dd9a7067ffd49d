"""The settings of one augmented view, and the one place their rules are checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ssljax.errors import ConfigError

_PAIRS = ("crop_scale", "crop_ratio", "blur_sigma")
_PROBABILITIES = (
    "hflip_prob",
    "vflip_prob",
    "jitter_prob",
    "grayscale_prob",
    "blur_prob",
    "solarize_prob",
)
_NON_NEGATIVE = ("brightness", "contrast", "saturation", "gamma", "noise_std")


@dataclasses.dataclass(frozen=True)
class ViewParams:
    """Settings of one augmented view; frozen and hashable, so a valid `jax.jit` static arg.

    Fields mirror `configs/base.py:view_config`. Probabilities are in [0, 1]; `crop_scale` is
    the (low, high) area fraction, `crop_ratio` the (low, high) aspect ratio (log-uniform),
    `blur_sigma` the (low, high) sigma in pixels. Impossible settings raise ConfigError.
    """

    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    hflip_prob: float
    vflip_prob: float
    jitter_prob: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale_prob: float
    gamma: float
    noise_std: float
    blur_prob: float
    blur_sigma: tuple[float, float]
    solarize_prob: float

    def __post_init__(self) -> None:
        _check(dataclasses.asdict(self), "augment.view")

    @classmethod
    def from_config(cls, view_cfg: Any, where: str = "augment.view") -> ViewParams:
        """Builds the params from a view ConfigDict (`config.augment.view1` or `view2`).

        Raises:
          ConfigError: naming `config.<where>.<key>`, for a missing, non-numeric or
            impossible setting.
        """
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in view_cfg:
                raise ConfigError(
                    f"config.{where} has no key {field.name!r}; start the view from "
                    "configs/base.py:view_config()"
                )
            value = view_cfg[field.name]
            try:
                if isinstance(value, tuple | list):
                    values[field.name] = tuple(float(v) for v in value)
                else:
                    values[field.name] = float(value)
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"config.{where}.{field.name}={value!r} is not a number or a pair of "
                    "numbers; see configs/base.py:view_config() for the expected form"
                ) from err
        _check(values, where)
        return cls(**values)


def _check(values: Mapping[str, Any], where: str) -> None:
    """The rules of a view's settings: ConfigError naming `config.<where>.<key>`."""

    def require(ok: bool, field: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"config.{where}.{field}={values[field]!r}: {rule}")

    for field in _PAIRS:
        value = values[field]
        pair = isinstance(value, tuple) and len(value) == 2
        require(pair and value[0] <= value[1], field, "must be a (low, high) pair, low <= high")
    low, high = values["crop_scale"]
    require(low > 0.0 and high <= 1.0, "crop_scale", "need 0 < low <= high <= 1")
    require(values["crop_ratio"][0] > 0.0, "crop_ratio", "need 0 < low <= high")
    require(values["blur_sigma"][0] > 0.0, "blur_sigma", "need 0 < low <= high")
    for field in _PROBABILITIES:
        require(0.0 <= values[field] <= 1.0, field, "a probability must be in [0, 1]")
    for field in _NON_NEGATIVE:
        require(values[field] >= 0.0, field, "must be >= 0")
    require(0.0 <= values["hue"] <= 0.5, "hue", "must be in [0, 0.5]")
