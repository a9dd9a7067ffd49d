"""Config checks that run before any device work, each error naming the key to fix.

The one checker of a config: the allowed values are read from the modules that own them
(`facts`: methods, protocols, transfers; encoders, optimizers, schedules, kNN metrics, the
data sources and registry, view rules), never listed here.
"""

import math

import ml_collections

from ssljax import facts, methods, models, optim, probes
from ssljax.data import sources
from ssljax.errors import ConfigError


def _require(ok: bool, key: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"config.{key}={value!r}: {why}")


def _in(config: ml_collections.ConfigDict, key: str, valid) -> None:
    value = config
    for part in key.split("."):
        value = value[part]
    _require(value in valid, key, value, f"must be one of {list(valid)}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for an impossible config, before data loading or compilation."""
    _in(config, "method", (*facts.METHODS, *facts.PROTOCOLS))
    d = config.data
    sources.check_config(d)
    gb = d.memory_budget_gb
    _require(gb > 0 and math.isfinite(gb), "data.memory_budget_gb", gb, "must be > 0 (GiB)")
    if d.source != "memory":
        _require(bool(d.tfds_dir), "data.tfds_dir", d.tfds_dir, "name a writable folder")
    _require(d.workers >= 0, "data.workers", d.workers, "must be >= 0")
    _require(d.threads >= 1, "data.threads", d.threads, "must be >= 1")
    _require(d.prefetch >= 1, "data.prefetch", d.prefetch, "must be >= 1")
    f = d.label_fraction
    _require(0 < f <= 1, "data.label_fraction", f, "must be in (0, 1]")
    _require(d.labels_per_class >= 0, "data.labels_per_class", d.labels_per_class, "must be >= 0")

    _in(config, "model.name", tuple(models.ENCODERS))
    _in(config, "model.stem", models.STEMS)
    _in(config, "model.dtype", tuple(models.DTYPES))
    _require(config.model.width > 0, "model.width", config.model.width, "must be > 0")
    dims = tuple(config.model.projector_dims)
    _require(
        len(dims) >= 1 and all(isinstance(x, int) and x > 0 for x in dims),
        "model.projector_dims",
        dims,
        "must be a non-empty tuple of positive ints",
    )
    _require(config.loss.lambd >= 0, "loss.lambd", config.loss.lambd, "must be >= 0")
    t = config.loss.temperature
    _require(t > 0 and math.isfinite(t), "loss.temperature", t, "must be > 0")

    tr = config.train
    _require(tr.batch_size > 0, "train.batch_size", tr.batch_size, "must be > 0")
    _require(tr.epochs > 0, "train.epochs", tr.epochs, "must be > 0")
    try:
        optim.schedule_epochs(tr)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    _in(config, "train.optimizer", tuple(optim.OPTIMIZERS))
    _in(config, "train.trust_on", optim.TRUST_ON)
    _in(config, "train.schedule", tuple(optim.SCHEDULES))
    _require(tr.base_lr > 0, "train.base_lr", tr.base_lr, "must be > 0")
    _require(tr.weight_decay >= 0, "train.weight_decay", tr.weight_decay, "must be >= 0")
    _require(0 <= tr.momentum < 1, "train.momentum", tr.momentum, "must be in [0, 1)")
    _require(
        tr.steps_per_dispatch >= 1,
        "train.steps_per_dispatch",
        tr.steps_per_dispatch,
        "must be >= 1",
    )
    _require(config.checkpoint.keep >= 1, "checkpoint.keep", config.checkpoint.keep, "must be >= 1")
    _require(
        config.checkpoint.every_epochs >= 1,
        "checkpoint.every_epochs",
        config.checkpoint.every_epochs,
        "must be >= 1",
    )
    _require(config.log.every_steps >= 1, "log.every_steps", config.log.every_steps, "must be >= 1")
    _require(config.eval.knn_k >= 1, "eval.knn_k", config.eval.knn_k, "must be >= 1")
    _in(config, "eval.knn_metric", probes.KNN_METRICS)
    _require(config.eval.batch_size > 0, "eval.batch_size", config.eval.batch_size, "must be > 0")
    _require(config.eval.bn_images >= 0, "eval.bn_images", config.eval.bn_images, "must be >= 0")
    e = config.eval
    _require(e.figure_images >= 0, "eval.figure_images", e.figure_images, "must be >= 0 (0: all)")
    _in(config, "init.transfer", tuple(facts.TRANSFERS))
    methods.views(config)
