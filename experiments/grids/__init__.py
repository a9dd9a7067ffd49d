"""Sweep grids: one config file per study, read by `python -m experiments.sweep --grid=F`.

A grid is an ml-collections ConfigDict (see `experiments/sweep.py` for its fields). Override
sections (`common`, `pretrain`, `finetune`, `linear`, `knn`) are nested ConfigDicts that
mirror `configs/base.py`, so each value can be changed from the command line:
`--grid.pretrain.train.epochs=2`. Build them from dotted keys with `overrides`.
"""

from collections.abc import Mapping
from typing import Any

import ml_collections

from ssljax.errors import ConfigError


def overrides(flat: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Dotted keys -> a nested ConfigDict: {'train.epochs': 5} -> train: {epochs: 5}.

    Raises:
      ValueError: when a key is both a value and a section ('train' and 'train.epochs').
    """
    root = ml_collections.ConfigDict()
    for key, value in flat.items():
        node = root
        *parents, leaf = key.split(".")
        for part in parents:
            if part not in node:
                node[part] = ml_collections.ConfigDict()
            node = node[part]
            if not isinstance(node, ml_collections.ConfigDict):
                raise ConfigError(f"override {key!r}: {part!r} is a value, not a config section")
        if leaf in node and isinstance(node[leaf], ml_collections.ConfigDict):
            raise ConfigError(f"override {key!r}: {leaf!r} is a config section, not a value")
        node[leaf] = value
    return root


def flatten(section: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """The inverse of `overrides`: a nested section -> {'train.epochs': 5, ...}."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
