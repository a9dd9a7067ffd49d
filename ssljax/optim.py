"""Optimisers and learning-rate schedules: LARS for pretraining, SGD/Adam/AdamW for fine-tuning.

Everything derived (the scaled learning rate, step counts from epochs) is computed here from
the primary values in `config.train`, so a command-line override never leaves a stale number.
"""

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

LARGE_BATCH_OPTIMIZERS = ("lars", "sgd")  # learning rate scaled linearly with the batch
ADAPTIVE_OPTIMIZERS = ("adam", "adamw")  # learning rate used as given


def exclude_bias_and_norm(params: Any) -> Any:
    """The optax mask of parameters that get weight decay and trust-ratio adaptation.

    Args:
      params: a pytree of arrays (Flax params, or updates of the same structure).

    Returns:
      A pytree of bool of the same structure: True for parameters with ndim > 1 (kernels:
      decayed and adapted), False for 0-D and 1-D ones (biases, BatchNorm scale and bias:
      excluded), the rule of the Barlow Twins and BYOL references.
    """
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def _bias_and_norm(params: Any) -> Any:
    """The complement of `exclude_bias_and_norm`: True for biases and BatchNorm parameters."""
    return jax.tree.map(lambda keep: not keep, exclude_bias_and_norm(params))


def lars(
    learning_rate: float | optax.Schedule,
    weight_decay: float,
    momentum: float = 0.9,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    bias_lr_factor: float = 1.0,
) -> optax.GradientTransformation:
    """LARS as in the Barlow Twins reference (facebookresearch/barlowtwins, `main.py`).

    Per parameter with ndim > 1: `g <- g + weight_decay * p`, then
    `g <- g * trust_coefficient * ||p|| / (||g|| + eps)` when both norms are > 0 (else
    unchanged). Biases and BatchNorm parameters (ndim <= 1) get neither. Then momentum
    `mu <- momentum * mu + g`, and the step `-lr * mu`, with `lr * bias_lr_factor` for biases
    and BatchNorm parameters (the paper: 0.0048 / 0.2 = 0.024).

    `optax.lars` multiplies by the learning rate *before* the momentum trace; this applies it
    *after*, as the reference does. The two agree at a constant learning rate, but under
    warmup and cosine decay the rate changes every step and the reference order lets each
    step's rate act on the whole accumulated momentum, not only on the newest gradient.

    Args:
      learning_rate: a float or an `optax.Schedule` of the step count.
      weight_decay: L2 coefficient added to the gradient of multi-dimensional parameters.
      momentum: momentum (trace) decay.
      trust_coefficient: LARS eta.
      eps: added to the gradient norm in the trust ratio's denominator.
      bias_lr_factor: learning-rate multiplier of biases and BatchNorm parameters.

    Returns:
      An `optax.GradientTransformation` (needs `params` in `update`).
    """
    steps = [
        optax.masked(optax.add_decayed_weights(weight_decay), exclude_bias_and_norm),
        optax.masked(
            optax.scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps),
            exclude_bias_and_norm,
        ),
        optax.trace(decay=momentum),
        optax.scale_by_learning_rate(learning_rate),
    ]
    if bias_lr_factor != 1.0:
        steps.append(optax.masked(optax.scale(bias_lr_factor), _bias_and_norm))
    return optax.chain(*steps)


def _check_optimizer(optimizer: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(
            f"unknown train.optimizer {optimizer!r}; valid: {', '.join(sorted(OPTIMIZERS))}"
        )


def scaled_learning_rate(base_lr: float, batch_size: int, optimizer: str) -> float:
    """The peak learning rate for a global batch.

    LARS and SGD use the linear scaling rule of the SSL papers, `base_lr * batch_size / 256`.
    Adam and AdamW normalise the update size themselves and use `base_lr` unchanged.
    """
    _check_optimizer(optimizer)
    if batch_size < 1:
        raise ValueError(f"train.batch_size must be >= 1, got {batch_size}")
    if not base_lr >= 0:
        raise ValueError(f"train.base_lr must be >= 0, got {base_lr}")
    if optimizer in LARGE_BATCH_OPTIMIZERS:
        return base_lr * batch_size / 256
    return base_lr


def _cosine(step: jax.Array, peak: float, warmup: int, total: int, _: list[int]) -> jax.Array:
    progress = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    return peak * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))


def _step(step: jax.Array, peak: float, _w: int, _t: int, boundaries: list[int]) -> jax.Array:
    passed = sum((step >= b).astype(jnp.float32) for b in boundaries)
    return peak * jnp.power(0.1, passed)


def _constant(step: jax.Array, peak: float, _w: int, _t: int, _b: list[int]) -> jax.Array:
    return jnp.full_like(step, peak)


# name -> lr after warmup as a function of (step, peak, warmup_steps, total_steps, boundaries).
SCHEDULES: dict[str, Callable[..., jax.Array]] = {
    "cosine": _cosine,
    "step": _step,
    "constant": _constant,
}


def learning_rate_schedule(
    train_config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
    """The learning rate as a function of the optimiser step.

    Linear warmup from 0 to the scaled peak over `warmup_epochs` (step s < W gets
    `peak * s / W`, as the Barlow Twins reference), then by `schedule`:
    `cosine` decays to 0 at `epochs`; `step` multiplies by 0.1 at each of `decay_epochs`;
    `constant` stays at the peak.

    Args:
      train_config: `config.train` (base_lr, batch_size, optimizer, schedule, epochs,
        warmup_epochs, decay_epochs).
      steps_per_epoch: optimiser steps per epoch, >= 1.

    Returns:
      A schedule mapping an int step (scalar, traceable) to a float32 learning rate.
    """
    cfg = train_config
    if not (isinstance(steps_per_epoch, numbers.Integral) and steps_per_epoch >= 1):
        raise ValueError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(
            f"unknown train.schedule {cfg.schedule!r}; valid: {', '.join(sorted(SCHEDULES))}"
        )
    if not cfg.epochs > 0:
        raise ValueError(f"train.epochs must be > 0, got {cfg.epochs}")
    if not 0 <= cfg.warmup_epochs <= cfg.epochs:
        raise ValueError(
            f"train.warmup_epochs must be in [0, train.epochs={cfg.epochs}], "
            f"got {cfg.warmup_epochs}"
        )
    boundaries = []
    if cfg.schedule == "step":
        decay_epochs = list(cfg.decay_epochs)
        if decay_epochs != sorted(decay_epochs) or not all(
            cfg.warmup_epochs <= e <= cfg.epochs for e in decay_epochs
        ):
            raise ValueError(
                "train.decay_epochs must be ascending and within "
                f"[train.warmup_epochs, train.epochs], got {cfg.decay_epochs}"
            )
        boundaries = [round(e * steps_per_epoch) for e in decay_epochs]
    peak = scaled_learning_rate(cfg.base_lr, cfg.batch_size, cfg.optimizer)
    total = max(round(cfg.epochs * steps_per_epoch), 1)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    after_warmup = SCHEDULES[cfg.schedule]

    def schedule(count: jax.Array) -> jax.Array:
        step = jnp.asarray(count, jnp.float32)
        warm = peak * step / max(warmup, 1)
        return jnp.where(step < warmup, warm, after_warmup(step, peak, warmup, total, boundaries))

    return schedule


def _lars(schedule: optax.Schedule, cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return lars(
        schedule, cfg.weight_decay, momentum=cfg.momentum, bias_lr_factor=cfg.bias_lr_factor
    )


def _sgd(schedule: optax.Schedule, cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    # torch.optim.SGD's order (L2 in the gradient, momentum, then lr), decay masked to kernels.
    return optax.chain(
        optax.masked(optax.add_decayed_weights(cfg.weight_decay), exclude_bias_and_norm),
        optax.sgd(schedule, momentum=cfg.momentum),
    )


def _adam(schedule: optax.Schedule, cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    # L2 added to the gradient (torch.optim.Adam's weight_decay), masked to kernels.
    return optax.chain(
        optax.masked(optax.add_decayed_weights(cfg.weight_decay), exclude_bias_and_norm),
        optax.adam(schedule),
    )


def _adamw(
    schedule: optax.Schedule, cfg: ml_collections.ConfigDict
) -> optax.GradientTransformation:
    return optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=exclude_bias_and_norm)


# name -> factory(schedule, config.train) -> GradientTransformation.
OPTIMIZERS: dict[
    str, Callable[[optax.Schedule, ml_collections.ConfigDict], optax.GradientTransformation]
] = {
    "lars": _lars,
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
}


def make_optimizer(
    train_config: ml_collections.ConfigDict, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimiser named by `train_config.optimizer` and its learning-rate schedule.

    Args:
      train_config: `config.train`; reads optimizer, weight_decay, momentum, bias_lr_factor
        and the schedule keys of `learning_rate_schedule`.
      steps_per_epoch: optimiser steps per epoch, >= 1.

    Returns:
      `(tx, schedule)`: the transformation, and the schedule it follows (for logging `lr`).
    """
    _check_optimizer(train_config.optimizer)
    schedule = learning_rate_schedule(train_config, steps_per_epoch)
    return OPTIMIZERS[train_config.optimizer](schedule, train_config), schedule
