"""Optimisers and learning-rate schedules: LARS for pretraining, SGD/Adam/AdamW for fine-tuning.

Everything derived (the scaled learning rate, step counts from epochs) is computed here from
the primary values in `config.train`, so a command-line override never leaves a stale number.
`StepPlan` is the one place a run's step counts (per epoch, total, warmup, decay) come from:
the training loop, the schedule and the start-up message all read it.
"""

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssljax.data import batches

LARGE_BATCH_OPTIMIZERS = ("lars", "sgd")  # learning rate scaled linearly with the batch
ADAPTIVE_OPTIMIZERS = ("adam", "adamw")  # learning rate used as given
# Where LARS's trust ratio acts: on each gradient (the references) or on the momentum update.
TRUST_ON = ("gradient", "update")


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


def scale_by_clipped_trust_ratio(
    learning_rate: float | optax.Schedule, trust_coefficient: float, clip: bool, eps: float = 0.0
) -> optax.GradientTransformation:
    """LARS's layer-wise trust ratio, optionally clipped so that no layer outruns the global rate.

    Per leaf `u <- u * r` with `r = trust_coefficient * ||p|| / (||u|| + eps)` when both norms
    are > 0 (else `r = 1`). With `clip`, `r <- min(r / lr_t, 1)` where `lr_t` is the learning
    rate of this step (solo-learn's `clip_lr`, `solo/utils/lars.py`): after the final `-lr_t`
    scaling a layer moves at `min(trust_coefficient * ||p|| / ||u||, lr_t) * u`, i.e. the trust
    ratio only ever slows a layer down. Unclipped, it is `optax.scale_by_trust_ratio`.

    What the clip bounds depends on where `lars` places this (`trust_on`): on each gradient
    before the momentum trace (the references) it bounds each step's *contribution to the
    trace*, `||r u|| <= eta ||p|| / lr_t`, which later, larger rates of a warmup multiply, so
    the step taken can exceed `eta ||p||` (7x in warmup steps 1-10, tests/test_optim.py, and
    still ~2x after the warmup, from momentum alone); on the trace itself it bounds the step
    taken, `||lr_t r m|| <= min(eta ||p||, lr_t ||m||)`. Either way only the adapted
    parameters (kernels) are bounded; biases and BatchNorm parameters move by `lr_t m`. The
    bound on the update has a price (issue 20's screen): with gradients far larger than
    `eta ||p|| / lr_t`, every step is the bound, so the step no longer follows the schedule
    until its last ~10%.
    """
    schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

    def init(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params):
        lr = jnp.asarray(schedule(state.count), jnp.float32)

        def ratio(u, p):
            p_norm, u_norm = jnp.linalg.norm(p), jnp.linalg.norm(u)
            r = jnp.where(
                (p_norm > 0) & (u_norm > 0), trust_coefficient * p_norm / (u_norm + eps), 1.0
            )
            if clip:
                r = jnp.where(lr > 0, jnp.minimum(r / jnp.maximum(lr, 1e-30), 1.0), 1.0)
            return u * r.astype(u.dtype)

        updates = jax.tree.map(ratio, updates, params)
        return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def lars(
    learning_rate: float | optax.Schedule,
    weight_decay: float,
    momentum: float = 0.9,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    bias_lr_factor: float = 1.0,
    clip_lr: bool = False,
    trust_on: str = "gradient",
) -> optax.GradientTransformation:
    """LARS as in the Barlow Twins reference (facebookresearch/barlowtwins, `main.py`), with
    solo-learn's optional learning-rate clipping.

    Per parameter with ndim > 1: `g <- g + weight_decay * p`, then
    `g <- g * trust_coefficient * ||p|| / (||g|| + eps)` when both norms are > 0 (else
    unchanged; with `clip_lr` the factor is divided by the step's learning rate and capped at
    1, see `scale_by_clipped_trust_ratio`). Biases and BatchNorm parameters (ndim <= 1) get
    neither. Then momentum `mu <- momentum * mu + g`, and the step `-lr * mu`, with
    `lr * bias_lr_factor` for biases and BatchNorm parameters (the paper: 0.0048 / 0.2 = 0.024).

    The norm in the trust ratio is that of `g + weight_decay * p` (the Barlow Twins reference);
    solo-learn divides by `||g|| + weight_decay * ||p||`, which differs by the triangle
    inequality only when the two point in different directions, at weight decay 1e-4 a
    negligible difference.

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
      clip_lr: cap each layer's trust-scaled rate at the global rate (solo-learn).
      trust_on: where the trust ratio (and its clip) acts. 'gradient' (the references):
        on each step's gradient, before the momentum trace. 'update': on the momentum
        trace itself, just before the step, so the clip bounds every kernel's step taken
        (see `scale_by_clipped_trust_ratio` for what each bounds, and the price).

    Returns:
      An `optax.GradientTransformation` (needs `params` in `update`).
    """
    if trust_on not in TRUST_ON:
        raise ValueError(f"unknown train.trust_on {trust_on!r}; valid: {', '.join(TRUST_ON)}")
    trust = optax.masked(
        scale_by_clipped_trust_ratio(learning_rate, trust_coefficient, clip_lr, eps),
        exclude_bias_and_norm,
    )
    trace = optax.trace(decay=momentum)
    steps = [
        optax.masked(optax.add_decayed_weights(weight_decay), exclude_bias_and_norm),
        *((trust, trace) if trust_on == "gradient" else (trace, trust)),
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


def schedule_epochs(train_config: ml_collections.ConfigDict) -> tuple[float, tuple[float, ...]]:
    """(warmup epochs, step-decay epochs) of a run: the one place they are resolved.

    `train.warmup_epochs` / `train.decay_epochs` when the user set them (not None), else
    `train.warmup_fraction` / `train.decay_fractions` of `train.epochs`, so that
    `--config.train.epochs=N` alone always gives a schedule of the run's length.

    Raises:
      ValueError: naming the key, when a value cannot make a schedule.
    """
    cfg = train_config
    if not cfg.epochs > 0:
        raise ValueError(f"train.epochs must be > 0, got {cfg.epochs}")
    if cfg.warmup_epochs is None:
        if not 0 <= cfg.warmup_fraction <= 1:
            raise ValueError(f"train.warmup_fraction must be in [0, 1], got {cfg.warmup_fraction}")
        warmup = cfg.warmup_fraction * cfg.epochs
    else:
        warmup = cfg.warmup_epochs
        if not 0 <= warmup <= cfg.epochs:
            raise ValueError(
                f"train.warmup_epochs must be in [0, train.epochs={cfg.epochs}], got {warmup}; "
                "leave it unset to warm up for train.warmup_fraction of the run"
            )
    if cfg.decay_epochs is None:
        fractions = tuple(cfg.decay_fractions)
        if list(fractions) != sorted(fractions) or not all(0 <= f <= 1 for f in fractions):
            raise ValueError(
                f"train.decay_fractions must be ascending and within [0, 1], got {fractions}"
            )
        decay = tuple(max(f * cfg.epochs, warmup) for f in fractions)
    else:
        decay = tuple(cfg.decay_epochs)
        if list(decay) != sorted(decay) or not all(warmup <= e <= cfg.epochs for e in decay):
            raise ValueError(
                "train.decay_epochs must be ascending and within "
                f"[warmup epochs={warmup:g}, train.epochs={cfg.epochs}], got {decay}; leave it "
                "unset to decay at train.decay_fractions of the run"
            )
    return float(warmup), decay


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """A run's step counts, from `config.train` and the dataset's size (`step_plan`)."""

    steps_per_epoch: int  # optimiser steps per epoch, >= 1
    total_steps: int  # train.epochs * steps_per_epoch
    warmup_steps: int  # linear warmup over steps [0, warmup_steps)
    decay_steps: tuple[int, ...]  # the step schedule's x0.1 boundaries, ascending

    @classmethod
    def from_steps_per_epoch(
        cls, train_config: ml_collections.ConfigDict, steps_per_epoch: int
    ) -> "StepPlan":
        """The plan of `train_config` (epochs and the keys of `schedule_epochs`) at
        `steps_per_epoch`, an int >= 1; ValueError naming the key otherwise."""
        if not (isinstance(steps_per_epoch, numbers.Integral) and steps_per_epoch >= 1):
            raise ValueError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")
        warmup, decay = schedule_epochs(train_config)
        return cls(
            steps_per_epoch=int(steps_per_epoch),
            total_steps=int(train_config.epochs * steps_per_epoch),
            warmup_steps=round(warmup * steps_per_epoch),
            decay_steps=tuple(round(e * steps_per_epoch) for e in decay),
        )

    def epoch(self, step: int) -> int:
        """Whole epochs done after `step` steps."""
        return step // self.steps_per_epoch


def step_plan(
    train_config: ml_collections.ConfigDict, n_examples: int, drop_last: bool = True
) -> StepPlan:
    """The plan of a run over `n_examples` per epoch at `train_config.batch_size`: full
    batches only (`drop_last`, pretraining) or every example once (fine-tuning), by the one
    rule `batches.steps_per_epoch`."""
    spe = batches.steps_per_epoch(n_examples, train_config.batch_size, drop_last)
    return StepPlan.from_steps_per_epoch(train_config, spe)


def learning_rate_schedule(
    train_config: ml_collections.ConfigDict, plan: StepPlan
) -> optax.Schedule:
    """The learning rate as a function of the optimiser step.

    Linear warmup from 0 to the scaled peak over `plan.warmup_steps` (step s < W gets
    `peak * s / W`, as the Barlow Twins reference), then by `schedule`: `cosine` decays to 0
    at `plan.total_steps`; `step` multiplies by 0.1 at each of `plan.decay_steps`; `constant`
    stays at the peak.

    Args:
      train_config: `config.train` (base_lr, batch_size, optimizer, schedule).
      plan: the run's step counts.

    Returns:
      A schedule mapping an int step (scalar, traceable) to a float32 learning rate.
    """
    cfg = train_config
    if cfg.schedule not in SCHEDULES:
        raise ValueError(
            f"unknown train.schedule {cfg.schedule!r}; valid: {', '.join(sorted(SCHEDULES))}"
        )
    boundaries = list(plan.decay_steps) if cfg.schedule == "step" else []
    peak = scaled_learning_rate(cfg.base_lr, cfg.batch_size, cfg.optimizer)
    total, warmup = max(plan.total_steps, 1), plan.warmup_steps
    after_warmup = SCHEDULES[cfg.schedule]

    def schedule(count: jax.Array) -> jax.Array:
        step = jnp.asarray(count, jnp.float32)
        warm = peak * step / max(warmup, 1)
        return jnp.where(step < warmup, warm, after_warmup(step, peak, warmup, total, boundaries))

    return schedule


def _lars(schedule: optax.Schedule, cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return lars(
        schedule,
        cfg.weight_decay,
        momentum=cfg.momentum,
        trust_coefficient=cfg.trust_coefficient,
        bias_lr_factor=cfg.bias_lr_factor,
        clip_lr=cfg.clip_lr,
        trust_on=cfg.trust_on,
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
    train_config: ml_collections.ConfigDict, plan: StepPlan
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimiser named by `train_config.optimizer` and its learning-rate schedule.

    Args:
      train_config: `config.train`; reads optimizer, weight_decay, momentum, bias_lr_factor
        and the keys of `learning_rate_schedule`.
      plan: the run's step counts.

    Returns:
      `(tx, schedule)`: the transformation, and the schedule it follows (for logging `lr`).
    """
    _check_optimizer(train_config.optimizer)
    schedule = learning_rate_schedule(train_config, plan)
    return OPTIMIZERS[train_config.optimizer](schedule, train_config), schedule
