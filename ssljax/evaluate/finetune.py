"""Fine-tuning: encoder + linear head trained on the labelled subset, best val epoch tested.

The budget is counted in epochs of the *full* train split (ceil(N_train / batch) optimiser
steps each), whatever the label count: a 1% subset gets as many steps as 100%, streamed
over its few examples, and a random-init arm gets the same steps as a pretrained one. Before
each scoring, BatchNorm statistics are re-estimated on the train split's images. The epoch
is chosen twice from the same run: on the full val split (reported as `val`/`test`) and on
the low-label val subset (`selection.low_label_val`).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import (
    augment,
    batchnorm,
    checkpoint,
    inference,
    interrupt,
    metrics,
    models,
    optim,
    parallel,
    steps,
    writers,
)
from ssljax.data import batches
from ssljax.errors import NonFiniteLossError
from ssljax.evaluate import setup

SELECTIONS = ("full_val", "low_label_val")


def _scores(task, labels, y_score) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.evaluate(task, labels, y_score).items()}


def _init_fn(model, tx, image_shape, how):
    def init(key, encoder_vars):
        state = steps.init_train_state(model, tx, key, image_shape)
        if encoder_vars is None:
            return state
        random = {"params": state.params["encoder"], "batch_stats": state.batch_stats["encoder"]}
        start = setup.transfer(encoder_vars, random, how)
        params = {**state.params, "encoder": start["params"]}
        stats = {**state.batch_stats, "encoder": start["batch_stats"]}
        return state.replace(params=params, batch_stats=stats, opt_state=tx.init(params))

    return init


def run(config, workdir, data, labelled, val_idx, encoder, init_vars, mesh) -> dict[str, Any]:
    """Trains; returns scores of both selections and the full-val choice's test scores."""
    model = models.ClassifierModel(encoder=encoder, num_outputs=data.num_outputs)
    n, batch_size = len(labelled), config.train.batch_size
    steps_per_epoch = math.ceil(len(data.train) / batch_size)
    total_steps = config.train.epochs * steps_per_epoch
    tx, schedule = optim.make_optimizer(config.train, steps_per_epoch)
    init_key, train_key = steps.derive_keys(config.seed)
    repl = parallel.replicated(mesh)
    init = _init_fn(model, tx, data.train.images.shape[1:], config.init.transfer)
    # The encoder variables are an argument, not a closure: a closure's arrays would be
    # baked into the compiled program as constants.
    state = jax.jit(init, out_shardings=repl)(init_key, init_vars)
    copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=repl)
    # Each selection's best variables travel with the state, so a resumed run keeps them.
    carry: dict[str, Any] = {"state": state}
    for name in SELECTIONS:
        carry[name] = {
            "params": copy(state.params),
            "batch_stats": copy(state.batch_stats),
            "auc": jnp.float32(-1.0),
            "epoch": jnp.int32(0),
        }
    ckpt = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep)
    restored = ckpt.restore_latest(carry)
    start_step = restored[1] if restored else 0
    if restored:
        carry = restored[0]
    view = augment.ViewParams.from_config(config.augment.view1) if config.augment.enabled else None
    step_fn = steps.make_classifier_step(
        model, tx, schedule, setup.classification_loss(data.task), view
    )
    batch_sharding = parallel.batch_sharding(mesh, 1)
    train_fn = jax.jit(
        steps.scan_steps(step_fn),
        in_shardings=(repl, (batch_sharding, batch_sharding, batch_sharding), repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
    apply_fn = jax.jit(steps.make_apply_fn(model))
    moments_fn = batchnorm.make_moments_fn(model)
    bn_images = batchnorm.bn_images(data.train.images, config.eval.bn_images)
    rows = parallel.process_rows(batch_size)
    images, labels = data.train.images[labelled], data.train.labels[labelled]

    def scoring_stats(params, stats):
        if not config.eval.bn_images:
            return stats
        return batchnorm.reestimate(
            moments_fn, params, stats, bn_images, config.eval.batch_size, mesh
        )

    def predict(params, stats, split):
        logits = inference.batched_apply(
            apply_fn, params, stats, split.images, config.eval.batch_size, mesh
        )
        return metrics.probabilities(data.task, logits)

    subsets = {"full_val": np.arange(len(data.val)), "low_label_val": val_idx}
    writer = writers.MetricWriter(
        workdir, total_steps, start_step, config.log.progress, desc=f"finetune {data.name}"
    )
    state, step = carry["state"], start_step
    try:
        while step < total_steps:
            interrupt.check()
            chunk = min(config.train.steps_per_dispatch, steps_per_epoch - step % steps_per_epoch)
            idx = np.stack(
                [
                    batches.stream_batch_indices(config.seed, s, n, batch_size)[rows]
                    for s in range(step, step + chunk)
                ]
            )
            x = parallel.host_to_global(images[idx], mesh, batch_axis=1)
            y = parallel.host_to_global(labels[idx], mesh, batch_axis=1)
            # The stream fills every batch with real examples, so no row is masked out.
            mask = parallel.host_to_global(np.ones(idx.shape, bool), mesh, batch_axis=1)
            state, m = train_fn(state, (x, y, mask), train_key)
            step += chunk
            writer.progress(chunk)
            if step % steps_per_epoch:
                continue
            epoch = step // steps_per_epoch
            if int(state.nonfinite_step) >= 0:  # 0-based; metrics.jsonl counts from 1
                raise NonFiniteLossError.at(
                    "fine-tuning",
                    int(state.nonfinite_step) + 1,
                    ckpt.latest_step(),
                    "Lower train.base_lr.",
                )
            stats = scoring_stats(state.params, state.batch_stats)
            probs = predict(state.params, stats, data.val)
            record = {"epoch": epoch, **{k: float(np.asarray(v)[-1]) for k, v in m.items()}}
            for name, vi in subsets.items():
                val = _scores(data.task, data.val.labels[vi], probs[vi])
                prefix = "val" if name == "full_val" else "val_low"
                record.update({f"{prefix}_{k}": v for k, v in val.items()})
                if val["auc"] > float(carry[name]["auc"]):
                    carry[name] = {
                        "params": copy(state.params),
                        "batch_stats": copy(stats),
                        "auc": jnp.float32(val["auc"]),
                        "epoch": jnp.int32(epoch),
                    }
            writer.write(step, record)
            writer.progress(0, epoch=epoch, loss=record["loss"], val_auc=record["val_auc"])
            if epoch % config.checkpoint.every_epochs == 0 or step == total_steps:
                carry["state"] = state
                ckpt.save(step, carry)
    finally:
        try:
            ckpt.close()
        finally:  # also when the last save failed (a full disk)
            writer.close()
    out: dict[str, Any] = {"selection": {}, "epochs": config.train.epochs}
    out["steps"] = total_steps
    for name, vi in subsets.items():
        best = carry[name]
        test_scores = predict(best["params"], best["batch_stats"], data.test)
        val_scores = predict(best["params"], best["batch_stats"], data.val)[vi]
        out["selection"][name] = {
            "n_val": int(len(vi)),
            "best_epoch": int(best["epoch"]),
            "val": _scores(data.task, data.val.labels[vi], val_scores),
            "test": _scores(data.task, data.test.labels, test_scores),
        }
        if name == "full_val":
            out.update(best_epoch=int(best["epoch"]), test_scores=test_scores)
    return out
