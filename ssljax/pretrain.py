"""Pretraining: Barlow Twins or SimCLR on the unlabelled training split.

`run(config, workdir)` is what `launch.py` calls (through `ssljax.jobs`, which runs `job`
under `ssljax.entry`: the config validated, the workdir checked and locked). It builds the
model and its jitted step, resumes from the newest checkpoint that restores when started
again with the same command, and trains on `ssljax.loop` with two actions: log and kNN
monitor. It writes `config.json`, `metrics.jsonl`, TensorBoard events and `checkpoints/`; at
the end the cross-correlation and embedding pictures (`ssljax.representations`) and, last,
the final encoder in `encoder/` (the mark of a finished run).

Besides the loss and its terms, it logs whether training is healthy (`ssljax.diagnostics`):
`weight_change/conv`, `weight_change/bn_scale` and `weight_angle/conv` of the encoder since
initialisation at every log step, and with the kNN monitor (from step 0, the random encoder)
the spread and effective rank of the val embeddings (`embedding/std`, `embedding/rankme`,
`features/rankme`).
"""

import contextlib
import functools
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ssljax import (
    batchnorm,
    checkpoint,
    diagnostics,
    entry,
    health,
    inference,
    loop,
    methods,
    models,
    optim,
    parallel,
    representations,
    steps,
    trainer,
    writers,
)
from ssljax.data import batches, pipeline, registry, sources
from ssljax.errors import NonFiniteLossError

__all__ = ["NonFiniteLossError", "build", "build_model", "run"]
# What the non-finite error advises.
_FIX = "Lower train.base_lr or check the data."


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
    # (state, (images uint8 [S, B, H, W, C],), live bool [S], train_key) -> (state, metrics
    # [S]); donates state (`steps.scan_steps`).
    train: Callable[..., tuple[steps.TrainState, dict[str, jax.Array]]]
    # (params, batch_stats, images uint8 [B, H, W, C]) -> (features [B, F], embeddings [B, D]).
    apply: Callable[..., tuple[jax.Array, jax.Array]]


def build(
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, int, int],
    plan: optim.StepPlan,
    mesh: Mesh,
) -> Compiled:
    """Model, optimizer, loss and augmentation from `config`, as jitted functions over `mesh`.

    Args:
      image_shape: (H, W, C) of the training images.
      plan: the run's step counts, which set the learning-rate schedule.
    """
    model = build_model(config, image_shape[0])
    tx, schedule = optim.make_optimizer(config.train, plan)
    method = methods.get(config.method)
    repl = parallel.replicated(mesh)
    init = jax.jit(
        functools.partial(steps.init_train_state, model, tx, image_shape=image_shape),
        out_shardings=repl,
    )
    step_fn = steps.make_pretrain_step(
        model,
        tx,
        schedule,
        method.make_loss(config.loss),
        methods.views(config),
        method.concat_views,
    )
    train = trainer.jit_steps(step_fn, mesh, batch_args=1)
    return Compiled(model, init, train, jax.jit(steps.make_apply_fn(model)))


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Pretrains an encoder as `config` says, in `workdir`, through `ssljax.entry` (config
    validated, workdir checked and held, once).

    Returns the final metrics: the last log record, the last kNN monitor's, the final
    `weight_change/*` and `weight_angle/conv`, and `health`: the verdict of
    `ssljax.health` (also in `health.json`, and printed as the run's last line).
    """
    return entry.run(config, workdir, job)


def job(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
    """`run`'s work, for `ssljax.entry`: a valid config, a checked and held workdir."""
    methods.get(config.method)  # ConfigError naming the pretraining methods
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    return _train(config, workdir, mesh)


def _train(config: ml_collections.ConfigDict, workdir: pathlib.Path, mesh: Mesh) -> dict:
    """`run`'s work, in a checked and locked workdir."""
    writers.check_config_matches(workdir, config)
    data = sources.open_dataset(config.data)
    images = data.splits["train"].images
    given, config = config, batches.fit_to_split(config, len(images), mesh.devices.size)
    plan = optim.step_plan(config.train, len(images))
    fns = build(config, images.shape[1:], plan, mesh)
    init_key, train_key = steps.derive_keys(config.seed)
    # The initial encoder for `weight_change`: a pure function of the seed, so recomputed on
    # resume rather than checkpointed; a second init because the train step donates `state`.
    params0 = fns.init(init_key).params["encoder"]
    training = trainer.Trainer(config, workdir, plan, mesh, "pretraining", _FIX)
    state, start_step = training.restore(fns.init(init_key))
    writers.write_config(workdir, given)
    d = config.data
    host_batches = pipeline.TrainBatches(
        images,
        seed=config.seed,
        batch_size=config.train.batch_size,
        workers=d.workers,
        threads=d.threads,
        prefetch=d.prefetch,
    )
    writer = training.open_writer(config.method)
    writer.message(
        f"{config.method} on {data.name} {data.size}px: {len(images)} images, "
        f"{plan.steps_per_epoch} steps/epoch, {plan.total_steps} steps, "
        f"{jax.device_count()} device(s), resuming at step {start_step}"
    )
    outputs = _outputs_fn(config, fns, images, mesh)
    summary: dict[str, Any] = {}

    def monitor(chunk: loop.Chunk) -> None:
        epoch = plan.epoch(chunk.step)
        summary.update(_monitor(config, epoch, chunk.step, writer, outputs(chunk.state), data))

    spe, every_epochs = plan.steps_per_epoch, config.log.monitor_every_epochs
    log_every, epoch_end = loop.every(config.log.every_steps, plan), loop.every(spe, plan)
    log = _logger(writer, params0, config.train.batch_size, plan, start_step, summary)
    pretraining = training.loop(
        fns.train,
        lambda step, n: (host_batches.batch_at(step, n),),
        [
            loop.Action(lambda s, n: log_every(s, n) or epoch_end(s, n), log),
            loop.Action(loop.every(every_epochs * spe, plan), monitor),
        ],
    )
    with training.closing(), contextlib.closing(host_batches):
        if start_step == 0 and every_epochs:
            monitor(loop.Chunk(0, 1, state, {}))
        state = pretraining.run(state, start_step, train_key)
        change = jax.device_get(_weight_change(state.params, params0))
        summary.update({k: float(v) for k, v in change.items()})
    verdict = health.verdict(
        writers.read_metrics(workdir), config.method, health.objective_floor(config)
    )
    writers.write_json(workdir / health.HEALTH_FILE, verdict)
    summary["health"] = verdict
    representations.write(
        workdir,
        data,
        fns.model,
        (fns.init(init_key), state),
        outputs,
        jax.random.fold_in(train_key, 0),
        methods.views(config),
        mesh,
        f"{config.method}, {data.name}, seed {config.seed}",
        config.eval.figure_images,
    )
    encoder_vars = {
        "params": state.params["encoder"],
        "batch_stats": state.batch_stats["encoder"],
    }
    checkpoint.save_encoder(workdir, encoder_vars)
    if jax.process_index() == 0:
        print(health.line(verdict), flush=True)
    return summary


def _outputs_fn(config, fns: Compiled, train_images: np.ndarray, mesh: Mesh):
    """state -> the monitor's apply: images uint8 [N, H, W, C] -> (features float32 [N, F],
    embeddings float32 [N, D]), with BatchNorm statistics re-estimated once on the train
    images, as every scoring is (running averages lag; at step 0 they are (0, 1))."""
    moments_fn = batchnorm.make_moments_fn(fns.model)
    bn_images = batchnorm.bn_images(train_images, config.eval.bn_images)
    e = config.eval

    def outputs(state: steps.TrainState) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        stats = state.batch_stats
        if e.bn_images:
            stats = batchnorm.reestimate(
                moments_fn, state.params, stats, bn_images, e.batch_size, mesh
            )
        return lambda images: inference.batched_apply(
            fns.apply, state.params, stats, images, e.batch_size, mesh
        )

    return outputs


@jax.jit
def _weight_change(params: Any, params0: Any) -> dict[str, jax.Array]:
    """`diagnostics.weight_change` of the encoder since `params0` (its initial params)."""
    return diagnostics.weight_change(params["encoder"], params0)


@jax.jit
def _representation_stats(features: jax.Array, z: jax.Array) -> dict[str, jax.Array]:
    """features float32 [N, F], projector outputs z float32 [N, D] -> float32 [] scalars."""
    return {**diagnostics.embedding_stats(z), "features/rankme": diagnostics.rankme(features)}


def _logger(writer, params0, batch_size, plan, start_step, summary) -> Callable[[loop.Chunk], None]:
    """The log action: the last step's metrics, weight change and angle, images/s; into
    `summary`."""
    last = {"time": time.perf_counter(), "step": start_step}

    def log(chunk: loop.Chunk) -> None:
        now, step, epoch = time.perf_counter(), chunk.step, plan.epoch(chunk.step)
        images_per_s = (step - last["step"]) * batch_size / max(now - last["time"], 1e-9)
        last.update(time=now, step=step)
        change = jax.device_get(_weight_change(chunk.state.params, params0))
        record = {**chunk.last_metrics(), **{k: float(v) for k, v in change.items()}}
        record.update(epoch=epoch, images_per_s=images_per_s)
        writer.write(step, record)
        writer.progress(
            0, epoch=epoch, loss=record["loss"], img_s=f"{images_per_s:.0f}", lr=record["lr"]
        )
        summary.clear()
        summary.update(record)

    return log


def _monitor(config, epoch, step, writer, outputs, data) -> dict[str, Any]:
    """kNN on val with the train split as bank, and the embedding diagnostics of val."""
    val = data.splits["val"]
    val_features, val_z = outputs(val.images)

    def features(images: np.ndarray) -> np.ndarray:
        return val_features if images is val.images else outputs(images)[0]

    out = {}
    if data.task != registry.UNLABELLED:  # an unlabelled folder: the embedding stats alone
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
    knn = f"kNN val acc {out['knn_acc']:.4f} auc {out['knn_auc']:.4f}, " if "knn_acc" in out else ""
    writer.message(f"epoch {epoch}: {knn}embedding rank {out['embedding/rankme']:.1f}")
    return out
