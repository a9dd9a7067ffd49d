"""The pretraining loop: Barlow Twins or SimCLR on the unlabelled training split.

`run(config, workdir)` is what `launch.py` calls. It checks and locks the workdir
(`ssljax.workdirs`), writes `config.json`, `metrics.jsonl`, TensorBoard events and
`checkpoints/`, resumes from the newest checkpoint that restores when started again with the
same command, and exports the final encoder to `encoder/`.

Besides the loss and its terms, it logs whether training is healthy (`ssljax.diagnostics`):
`weight_change/conv` and `weight_change/bn_scale` of the encoder since initialisation at every
log step, and with the kNN monitor (from step 0, the random encoder) the spread and effective
rank of the val embeddings (`embedding/std`, `embedding/rankme`, `features/rankme`).
"""

import functools
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ssljax import (
    augment,
    batchnorm,
    checkpoint,
    diagnostics,
    inference,
    interrupt,
    losses,
    models,
    optim,
    parallel,
    steps,
    workdirs,
    writers,
)
from ssljax.data import batches, load_dataset
from ssljax.errors import ConfigError, NonFiniteLossError

__all__ = ["METHODS", "NonFiniteLossError", "build", "build_model", "json_config", "run"]

# method -> (pair loss from config.loss, encoder on the concatenated views)
METHODS = {
    "barlow_twins": (
        lambda c: functools.partial(
            losses.barlow_twins_loss, lambd=c.lambd, scale=c.scale, has_aux=True
        ),
        False,
    ),
    "simclr": (
        lambda c: functools.partial(losses.nt_xent_loss, temperature=c.temperature, has_aux=True),
        True,
    ),
}


def build_model(config: ml_collections.ConfigDict, image_size: int) -> models.PretrainModel:
    m = config.model
    encoder = models.make_encoder(
        m.name, m.width, m.stem, image_size, m.dtype, m.zero_init_residual
    )
    return models.PretrainModel(
        encoder=encoder, projector_dims=tuple(config.model.projector_dims), dtype=encoder.dtype
    )


class Compiled(NamedTuple):
    """The jitted functions of a pretraining run (built by `build`)."""

    model: models.PretrainModel
    # key -> TrainState, replicated over the mesh.
    init: Callable[[jax.Array], steps.TrainState]
    # (state, (images uint8 [S, B, H, W, C],), train_key) -> (state, metrics [S]); donates state.
    train: Callable[..., tuple[steps.TrainState, dict[str, jax.Array]]]
    # (params, batch_stats, images uint8 [B, H, W, C]) -> (features [B, F], embeddings [B, D]).
    apply: Callable[..., tuple[jax.Array, jax.Array]]


def build(
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
    steps_per_epoch: int,
    mesh: Mesh,
) -> Compiled:
    """Model, optimizer, loss and augmentation from `config`, as jitted functions over `mesh`.

    Args:
      image_shape: (H, W, C) of the training images.
      steps_per_epoch: sets the learning-rate schedule's length.
    """
    model = build_model(config, image_shape[0])
    tx, schedule = optim.make_optimizer(config.train, steps_per_epoch)
    make_loss, concat_views = METHODS[config.method]
    views = (
        augment.ViewParams.from_config(config.augment.view1),
        augment.ViewParams.from_config(config.augment.view2),
    )
    repl = parallel.replicated(mesh)
    init = jax.jit(
        functools.partial(steps.init_train_state, model, tx, image_shape=image_shape),
        out_shardings=repl,
    )
    step_fn = steps.make_pretrain_step(
        model, tx, schedule, make_loss(config.loss), views, concat_views
    )
    train = jax.jit(
        steps.scan_steps(step_fn),
        in_shardings=(repl, (parallel.batch_sharding(mesh, 1),), repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
    return Compiled(model, init, train, jax.jit(steps.make_apply_fn(model)))


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Pretrains an encoder as `config` says, in `workdir`.

    Returns the final metrics: the last log record, the last kNN monitor's, the final
    `weight_change/*`, and `warning` when `diagnostics.barely_moved` says the conv kernels
    barely moved (also printed).
    """
    workdir = workdirs.check(workdir, what="workdir")
    if config.method not in METHODS:
        raise ConfigError(
            f"config.method={config.method!r}: pretraining methods are {list(METHODS)}"
        )
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    with workdirs.lock(workdir):
        return _train(config, workdir, mesh)


def _train(config: ml_collections.ConfigDict, workdir: pathlib.Path, mesh: Mesh) -> dict:
    """`run`'s work, in a checked and locked workdir."""
    writers.check_config_matches(workdir, json_config(config))
    data = load_dataset(config.data)
    train = data.splits["train"]
    n, size = len(train.images), data.size
    batch_size = config.train.batch_size
    steps_per_epoch = batches.steps_per_epoch(n, batch_size)
    total_steps = config.train.epochs * steps_per_epoch

    fns = build(config, train.images.shape[1:], steps_per_epoch, mesh)
    init_key, train_key = steps.derive_keys(config.seed)
    state = fns.init(init_key)
    # The initial encoder for `weight_change`: a pure function of the seed, so recomputed on
    # resume rather than checkpointed; a second init because the train step donates `state`.
    params0 = fns.init(init_key).params["encoder"]
    ckpt = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep)
    restored = ckpt.restore_latest(state)
    start_step = 0
    if restored is not None:
        state, start_step = restored
    writers.write_json(workdir / writers.CONFIG_FILE, json_config(config))
    train_fn, apply_fn = fns.train, fns.apply
    rows = parallel.process_rows(batch_size)

    moments_fn = batchnorm.make_moments_fn(fns.model)
    monitor_bn_images = batchnorm.bn_images(train.images, config.eval.bn_images)

    def outputs() -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The monitor's apply: images uint8 [N, H, W, C] -> (features float32 [N, F],
        embeddings float32 [N, D]), with BatchNorm statistics re-estimated once on the train
        images, as every scoring is (running averages lag; at step 0 they are (0, 1))."""
        stats, e = state.batch_stats, config.eval
        if e.bn_images:
            stats = batchnorm.reestimate(
                moments_fn, state.params, stats, monitor_bn_images, e.batch_size, mesh
            )
        return lambda images: inference.batched_apply(
            apply_fn, state.params, stats, images, e.batch_size, mesh
        )

    writer = writers.MetricWriter(
        workdir, total_steps, start_step, config.log.progress, desc=f"{config.method}"
    )
    writer.message(
        f"{config.method} on {data.name} {size}px: {n} images, {steps_per_epoch} steps/epoch, "
        f"{total_steps} steps, {jax.device_count()} device(s), resuming at step {start_step}"
    )
    step = start_step
    last = {"time": time.perf_counter(), "step": step}
    summary: dict[str, Any] = {}
    try:
        if start_step == 0 and config.log.monitor_every_epochs:
            summary.update(_monitor(config, 0, 0, writer, outputs(), data))
        while step < total_steps:
            interrupt.check()
            epoch_end = (step // steps_per_epoch + 1) * steps_per_epoch
            chunk = min(config.train.steps_per_dispatch, epoch_end - step)
            idx = np.stack(
                [
                    batches.train_batch_indices(config.seed, s, n, batch_size)[rows]
                    for s in range(step, step + chunk)
                ]
            )
            images = parallel.host_to_global(train.images[idx], mesh, batch_axis=1)
            state, metrics = train_fn(state, (images,), train_key)
            step += chunk
            writer.progress(chunk)
            epoch = step // steps_per_epoch
            at_epoch_end = step == epoch_end
            if step % config.log.every_steps < chunk or at_epoch_end:
                _check_finite(state, ckpt)
                summary = _log(writer, state, metrics, params0, step, epoch, batch_size, last)
            if at_epoch_end:
                summary.update(
                    _end_of_epoch(
                        config, epoch, step, total_steps, state, ckpt, writer, outputs, data
                    )
                )
        summary.update(_final_check(writer, state, params0))
    finally:
        try:
            ckpt.close()
        finally:  # also when the last save failed (a full disk)
            writer.close()
    encoder_vars = {
        "params": state.params["encoder"],
        "batch_stats": state.batch_stats["encoder"],
    }
    checkpoint.save_encoder(workdir, encoder_vars)
    return summary


def _check_finite(state: steps.TrainState, ckpt: checkpoint.Checkpointer) -> None:
    bad = int(state.nonfinite_step)  # the 0-based index of the step; metrics count from 1
    if bad >= 0:
        raise NonFiniteLossError.at(
            "pretraining", bad + 1, ckpt.latest_step(), "Lower train.base_lr or check the data."
        )


@jax.jit
def _weight_change(params: Any, params0: Any) -> dict[str, jax.Array]:
    """`diagnostics.weight_change` of the encoder since `params0` (its initial params)."""
    return diagnostics.weight_change(params["encoder"], params0)


@jax.jit
def _representation_stats(features: jax.Array, z: jax.Array) -> dict[str, jax.Array]:
    """features float32 [N, F], projector outputs z float32 [N, D] -> float32 [] scalars."""
    return {**diagnostics.embedding_stats(z), "features/rankme": diagnostics.rankme(features)}


def _log(writer, state, metrics, params0, step, epoch, batch_size, last) -> dict[str, Any]:
    now = time.perf_counter()
    images_per_s = (step - last["step"]) * batch_size / max(now - last["time"], 1e-9)
    last.update(time=now, step=step)
    metrics, change = jax.device_get((metrics, _weight_change(state.params, params0)))
    record = {k: float(v[-1]) for k, v in metrics.items()}
    record.update({k: float(v) for k, v in change.items()})
    record.update(epoch=epoch, images_per_s=images_per_s)
    writer.write(step, record)
    writer.progress(
        0, epoch=epoch, loss=record["loss"], img_s=f"{images_per_s:.0f}", lr=record["lr"]
    )
    return record


def _final_check(writer, state, params0) -> dict[str, Any]:
    """The final `weight_change/*`, and a `warning` when the conv kernels barely moved."""
    change = jax.device_get(_weight_change(state.params, params0))
    out: dict[str, Any] = {k: float(v) for k, v in change.items()}
    warning = diagnostics.barely_moved(out["weight_change/conv"])
    if warning:
        writer.message(warning)
        out["warning"] = warning
    return out


def _monitor(config, epoch, step, writer, outputs, data) -> dict[str, Any]:
    """kNN on val with the train split as bank, and the embedding diagnostics of val."""
    val = data.splits["val"]
    val_features, val_z = outputs(val.images)

    def features(images: np.ndarray) -> np.ndarray:
        return val_features if images is val.images else outputs(images)[0]

    out = inference.knn_score(
        features,
        data.splits["train"],
        val,
        task=data.task,
        num_classes=data.num_outputs,
        k=config.eval.knn_k,
        metric=config.eval.knn_metric,
        temperature=config.eval.knn_temperature,
    )
    rows = slice(diagnostics.MAX_RANK_ROWS)
    stats = jax.device_get(_representation_stats(val_features[rows], val_z[rows]))
    out.update({k: float(v) for k, v in stats.items()})
    writer.write(step, {"epoch": epoch, **out})
    writer.message(
        f"epoch {epoch}: kNN val acc {out['knn_acc']:.4f} auc {out['knn_auc']:.4f}, "
        f"embedding rank {out['embedding/rankme']:.1f}"
    )
    return out


def _end_of_epoch(config, epoch, step, total_steps, state, ckpt, writer, outputs, data):
    done = step >= total_steps
    out: dict[str, Any] = {}
    every = config.log.monitor_every_epochs
    if every and (epoch % every == 0 or done):
        out = _monitor(config, epoch, step, writer, outputs(), data)
    if epoch % config.checkpoint.every_epochs == 0 or done:
        _check_finite(state, ckpt)
        ckpt.save(step, state)
    return out


def json_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort())
