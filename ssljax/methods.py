"""The pretraining methods: the one list of their names, and what each one is.

A method is a pair loss over the projector outputs of two augmented views, a rule for how the
views meet the encoder, and the config file it starts from. `launch.py`, `validation`, the
pretraining loop, the sweep, the benchmark and the report read `METHODS`; the evaluation
protocols are their own registry, `ssljax.evaluate.PROTOCOLS`.
"""

import dataclasses
import functools
import importlib
from collections.abc import Callable

import jax
import ml_collections

from ssljax import augment, losses
from ssljax.errors import ConfigError

# (z1 float32 [B, D], z2 float32 [B, D]) -> (loss float32 [], aux {name: float32 []}).
PairLoss = Callable[[jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
# The two views every method trains on: keys of `config.augment`.
VIEWS = ("view1", "view2")
# The arm of a comparison without pretraining: the same network from random initialisation.
RANDOM = "random"
# init.transfer -> the suffix of its arm ('barlow_twins:bn'): what of a pretrained encoder an
# evaluation keeps, the rest being the seed's random initialisation.
TRANSFERS = {"all": "", "batchnorm": "bn"}


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


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("barlow_twins", "Barlow Twins", "BT", "configs.barlow", _barlow_twins, False),
        Method("simclr", "SimCLR", "SimCLR", "configs.simclr", _simclr, True),
    )
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


def arm(method: str, transfer: str) -> str:
    """The name of an evaluated encoder in tables: 'barlow_twins', 'barlow_twins:bn'."""
    suffix = TRANSFERS[transfer]
    return f"{method}:{suffix}" if suffix else method


def parse_arm(name: str) -> tuple[str, str]:
    """'barlow_twins' -> ('barlow_twins', 'all'); 'barlow_twins:bn' -> ('barlow_twins',
    'batchnorm'); 'random' -> ('random', 'all'). ConfigError for an unknown name."""
    method, _, suffix = name.partition(":")
    transfers = {s: t for t, s in TRANSFERS.items()}
    if method not in (*METHODS, RANDOM) or suffix not in transfers or (suffix and method == RANDOM):
        raise ConfigError(f"unknown arm {name!r}; arms are {arms()}")
    return method, transfers[suffix]


def arms() -> list[str]:
    """Every arm: random initialisation, and each method with each transfer."""
    return [RANDOM, *(arm(m, t) for m in METHODS for t in TRANSFERS)]


def default_config(module: str, dataset: str) -> ml_collections.ConfigDict:
    """`get_config(dataset)` of the config module a registry names (`Method.config`,
    `evaluate.Protocol.config`), e.g. 'configs.barlow'."""
    return importlib.import_module(module).get_config(dataset)
