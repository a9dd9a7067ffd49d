"""The pretraining methods: what each one of `facts.METHODS` does.

A method is a pair loss over the projector outputs of two augmented views, a rule for how the
views meet the encoder, and the config file it starts from. Its name, title and config module
are `ssljax.facts`' (the names a study is made of, free of JAX); this registry adds the code
and holds exactly the names listed there. The evaluation protocols are their own registry,
`ssljax.evaluate.PROTOCOLS`. `RANDOM`, `TRANSFERS`, `arm`, `parse_arm`, `arms` and
`default_config` are `facts`' own, re-exported here.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import ml_collections

from ssljax import augment, facts, losses
from ssljax.errors import ConfigError
from ssljax.facts import (  # noqa: F401  (re-exported: callers use methods.X)
    RANDOM,
    TRANSFERS,
    arm,
    arms,
    default_config,
    parse_arm,
)

# (z1 float32 [B, D], z2 float32 [B, D]) -> (loss float32 [], aux {name: float32 []}).
PairLoss = Callable[[jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
# The two views every method trains on: keys of `config.augment`.
VIEWS = ("view1", "view2")


@dataclasses.dataclass(frozen=True)
class Method:
    """One pretraining method.

    Attributes:
      name: the value of `config.method`, e.g. 'barlow_twins'.
      title: how figures and tables name it, e.g. 'Barlow Twins'.
      short: its abbreviation in table rows, e.g. 'BT'.
      config: the module of its default config (`get_config(dataset)`), e.g. 'configs.barlow'.
      make_loss: `config.loss` -> its pair loss with the hyper-parameters bound (float32).
      concat_views: the encoder runs once on both views concatenated (BatchNorm statistics
        over 2B images, as SimCLR's reference) instead of once per view (Barlow Twins).
    """

    name: str
    title: str
    short: str
    config: str
    make_loss: Callable[[ml_collections.ConfigDict], PairLoss]
    concat_views: bool


def _barlow_twins(loss: ml_collections.ConfigDict) -> PairLoss:
    return functools.partial(
        losses.barlow_twins_loss, lambd=loss.lambd, scale=loss.scale, has_aux=True
    )


def _simclr(loss: ml_collections.ConfigDict) -> PairLoss:
    return functools.partial(losses.nt_xent_loss, temperature=loss.temperature, has_aux=True)


def _method(name: str, make_loss: Callable, concat_views: bool) -> Method:
    f = facts.METHODS[name]
    return Method(f.name, f.title, f.short, f.config, make_loss, concat_views)


METHODS: dict[str, Method] = {
    "barlow_twins": _method("barlow_twins", _barlow_twins, concat_views=False),
    "simclr": _method("simclr", _simclr, concat_views=True),
}


def get(name: str) -> Method:
    """The method `name`; ConfigError naming `config.method` and the valid names otherwise."""
    if name not in METHODS:
        raise ConfigError(f"config.method={name!r}: pretraining methods are {list(METHODS)}")
    return METHODS[name]


def views(config: ml_collections.ConfigDict) -> tuple[augment.ViewParams, augment.ViewParams]:
    """The two views' settings from `config.augment`, checked by `augment.ViewParams`
    (ConfigError naming `config.augment.viewN.<key>`)."""
    make = augment.ViewParams.from_config
    view1, view2 = (make(config.augment[v], f"augment.{v}") for v in VIEWS)
    return view1, view2
