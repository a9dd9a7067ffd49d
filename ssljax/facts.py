"""The names a study is made of, in plain Python: methods, arms, protocols, figure styles.

Everything that names a run's parts and what it writes lives here, free of JAX, so that the
study wing (the report, its tables, plots and statistics, the run health verdict) and the
config checker read names without importing the training stack. The code behind each name is
its owner's: `methods.METHODS` (a method's loss and view handling) and `evaluate.PROTOCOLS`
(a protocol's scorer) are keyed by the names listed here, and check at import that they hold
exactly these. What an evaluation writes, and its schema, is `ssljax.results`'.
"""

import dataclasses
import importlib
from typing import Any

from ssljax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MethodFacts:
    """What a pretraining method is called and where its defaults live.

    Attributes:
      name: the value of `config.method`, e.g. 'barlow_twins'.
      title: how figures and tables name it, e.g. 'Barlow Twins'.
      short: its abbreviation in table rows, e.g. 'BT'.
      config: the module of its default config (`get_config(dataset)`), e.g. 'configs.barlow'.
      colour: its colour in every figure (a matplotlib colour name).
    """

    name: str
    title: str
    short: str
    config: str
    colour: str


# The one list of pretraining methods (`config.method` of a pretraining run).
METHODS: dict[str, MethodFacts] = {
    m.name: m
    for m in (
        MethodFacts("barlow_twins", "Barlow Twins", "BT", "configs.barlow", "tab:blue"),
        MethodFacts("simclr", "SimCLR", "SimCLR", "configs.simclr", "tab:orange"),
    )
}
# The one list of evaluation protocols (`config.method` of an evaluation), in the report's
# order: name -> the module of its default config.
PROTOCOLS: dict[str, str] = {
    "finetune": "configs.finetune",
    "linear": "configs.linear",
    "knn": "configs.knn",
}
# The arm of a comparison without pretraining: the same network from random initialisation.
RANDOM = "random"
# init.transfer -> the suffix of its arm ('barlow_twins:bn'): what of a pretrained encoder an
# evaluation keeps, the rest being the seed's random initialisation.
TRANSFERS = {"all": "", "batchnorm": "bn"}
# Arm base -> (colour, title) in every figure, in the figures' fixed order.
METHOD_STYLE: dict[str, tuple[str, str]] = {
    RANDOM: ("tab:gray", "random init"),
    **{m.name: (m.colour, m.title) for m in METHODS.values()},
}

# The arrays a pretraining run writes at its end (`representations.py`), as NAME.npz / .png.
CROSS_CORRELATION = "cross_correlation"
EMBEDDINGS = "embeddings"


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


def default_config(module: str, dataset: str) -> Any:
    """`get_config(dataset)` of the config module a name maps to (`MethodFacts.config`,
    `PROTOCOLS[name]`), e.g. 'configs.barlow'; an `ml_collections.ConfigDict`."""
    return importlib.import_module(module).get_config(dataset)
