"""Pure step factories: pretraining, fine-tuning, and inference.

Factories receive every dependency (model, optimizer, schedule, loss, augmentation
settings) and return pure functions of arrays; they read no config and do no I/O. The training
loop (`ssljax.loop`) jits them over the mesh with the state donated.

RNG is derived, never stored: the key of step s is `fold_in(train_key, s)`.
A non-finite loss never reaches the parameters: the update is skipped and the first such
step is recorded in `state.nonfinite_step`, which the loop checks whenever a periodic action
is due (no host sync per step).
"""

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ssljax import augment, diagnostics

Metrics = dict[str, jax.Array]
# (z1 float32 [B, D], z2 float32 [B, D]) -> (scalar loss, aux scalars)
PairLoss = Callable[[jax.Array, jax.Array], tuple[jax.Array, Metrics]]


def derive_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init_key, train_key) of a run, both derived from its seed.

    Initialisation uses the 'rbg' PRNG: compiling a whole ResNet's threefry initialisers
    takes 3-5x longer on CPU (measured 23 s vs 8 s for a width-8 ResNet-18), and init runs
    once, replicated. Training keys stay threefry, whose draws do not depend on how the
    batch is sharded, so 1 and 8 devices see the same augmentations.
    """
    init_key = jax.random.key(seed, impl="rbg")
    train_key = jax.random.fold_in(jax.random.key(seed), 1)
    return init_key, train_key


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []
    params: Any
    batch_stats: Any
    opt_state: Any
    nonfinite_step: jax.Array  # int32 [], -1 until a loss is non-finite


def init_train_state(
    model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, image_shape: tuple
) -> TrainState:
    """Initial state of `model` for images of shape [H, W, C] (float32 dummy batch of 2)."""
    variables = model.init(key, jnp.zeros((2, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.int32(0),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        nonfinite_step=jnp.int32(-1),
    )


def _apply_update(
    state: TrainState,
    tx: optax.GradientTransformation,
    loss: jax.Array,
    grads: Any,
    batch_stats: Any,
    updates: Any = None,
) -> TrainState:
    """The state after one step; `updates` when the caller already has `tx.update`'s."""
    if updates is None:
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
    else:
        updates, opt_state = updates
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    return TrainState(
        step=state.step + 1,
        params=keep(params, state.params),
        batch_stats=keep(batch_stats, state.batch_stats),
        opt_state=keep(opt_state, state.opt_state),
        nonfinite_step=jnp.where(
            (state.nonfinite_step < 0) & ~finite, state.step, state.nonfinite_step
        ),
    )


def make_pretrain_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    loss_fn: PairLoss,
    views: tuple[augment.ViewParams, augment.ViewParams],
    concat_views: bool,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Metrics]]:
    """A self-supervised train step: two views on the device -> encoder -> projector -> loss.

    Args:
      model: a PretrainModel; `apply(..., x, train=True)` -> (features, embeddings).
      loss_fn: the pair loss with its hyper-parameters bound (float32).
      views: augmentation settings of view 1 and view 2.
      concat_views: run the encoder once on both views concatenated (SimCLR: BatchNorm over
        2B images) instead of once per view (Barlow Twins: BatchNorm per view).
    Returns:
      step(state, images uint8 [B, H, W, C], train_key) -> (state, metrics of float32 []).
    """

    def step(state: TrainState, images: jax.Array, train_key: jax.Array):
        key = jax.random.fold_in(train_key, state.step)
        x1, x2 = augment.two_views(key, images, *views)

        def forward(params):
            def apply(x, batch_stats):
                (_, z), mutated = model.apply(
                    {"params": params, "batch_stats": batch_stats},
                    x,
                    train=True,
                    mutable=["batch_stats"],
                )
                return z, mutated["batch_stats"]

            if concat_views:
                z, batch_stats = apply(jnp.concatenate([x1, x2]), state.batch_stats)
                z1, z2 = jnp.split(z, 2)
            else:
                z1, batch_stats = apply(x1, state.batch_stats)
                z2, batch_stats = apply(x2, batch_stats)
            loss, aux = loss_fn(z1, z2)
            return loss, (aux, batch_stats)

        (loss, (aux, batch_stats)), grads = jax.value_and_grad(forward, has_aux=True)(state.params)
        updates = tx.update(grads, state.opt_state, state.params)
        new_state = _apply_update(state, tx, loss, grads, batch_stats, updates)
        metrics = {
            "loss": loss,
            "lr": schedule(state.step),
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(new_state.params),
            **diagnostics.step_stats(state.params, grads, updates[0]),
            **aux,
        }
        return new_state, metrics

    return step


def make_classifier_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    view: augment.ViewParams | None,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array, jax.Array], tuple[TrainState, Metrics]]:
    """A supervised train step for fine-tuning (or training from random initialisation).

    Args:
      model: a ClassifierModel; `apply(..., x, train=True)` -> logits float32 [B, C].
      loss_fn: (logits float32 [B, C], labels int32 [B] or [B, L]) -> per-example loss [B].
      view: light training augmentation, or None for none (the MedMNIST v2 recipe).
    Returns:
      step(state, images uint8 [B,H,W,C], labels, mask bool [B], train_key) -> (state, metrics).
      Masked-out rows (padding) do not contribute to the loss or its gradient; they do
      enter train-mode BatchNorm statistics, so the fine-tuning stream fills every row.
    """

    def step(state, images, labels, mask, train_key):
        key = jax.random.fold_in(train_key, state.step)
        x = augment.normalize(images) if view is None else augment.augment_batch(key, images, view)

        def forward(params):
            logits, mutated = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            per_example = loss_fn(logits, labels)
            weight = mask.astype(jnp.float32)
            loss = jnp.sum(per_example * weight) / jnp.maximum(weight.sum(), 1.0)
            return loss, mutated["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(forward, has_aux=True)(state.params)
        new_state = _apply_update(state, tx, loss, grads, batch_stats)
        return new_state, {
            "loss": loss,
            "lr": schedule(state.step),
            "grad_norm": optax.tree.norm(grads),
        }

    return step


def scan_steps(step: Callable) -> Callable:
    """Runs `step` over S stacked batches in one dispatch (`lax.scan`), so the host never
    waits on small steps.

    Returns run(state, batches, live, *rest): `batches` is a tuple of arrays [S, ...]
    (images, labels, ...) scanned over; `live` bool [S] marks the steps to run: a step with
    live False (padding, so that a run's last chunk of an epoch has the shape of the others
    and nothing is traced twice) leaves the state as it is and has metrics 0. `rest` (the
    train key) is passed to every step unchanged. Metrics come back stacked, [S].
    """

    def run(state, batches: tuple, live: jax.Array, *rest):
        if batches[0].shape[0] == 1:
            # XLA:CPU runs the conv net ~7x slower inside a scan body (measured 1.45 s vs
            # 13.0 s per Barlow Twins step), so a single step is not wrapped in one. The
            # loop never dispatches a chunk without a live step, so this one is live.
            state, metrics = step(state, *(b[0] for b in batches), *rest)
            return state, jax.tree.map(lambda m: m[None], metrics)

        def body(s, xs):
            batch, alive = xs
            shapes = jax.eval_shape(step, s, *batch, *rest)[1]

            def skip(s, _):
                return s, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

            # A real branch (not a select), so padding steps cost no compute.
            return jax.lax.cond(alive, lambda s, b: step(s, *b, *rest), skip, s, batch)

        return jax.lax.scan(body, state, (batches, live))

    return run


def make_apply_fn(model: nn.Module) -> Callable[[Any, Any, jax.Array], jax.Array]:
    """Inference: (params, batch_stats, images uint8 [B, H, W, C]) -> model output, eval mode.

    For a PretrainModel the output is (features float32 [B, F], embeddings [B, D]); for a
    ClassifierModel, logits float32 [B, C].
    """

    def apply(params, batch_stats, images):
        return model.apply(
            {"params": params, "batch_stats": batch_stats}, augment.normalize(images), train=False
        )

    return apply
