"""Fine-tuning: encoder + linear head trained on the labelled subset, best val epoch tested.

The budget is counted in epochs of the *full* train split (ceil(N_train / batch) optimiser
steps each), whatever the label count: a 1% subset gets as many steps as 100%, streamed
over its few examples, and a random-init arm gets the same steps as a pretrained one. Before
each scoring, BatchNorm statistics are re-estimated on the train split's images. The epoch
is chosen twice from the same run: on the full val split (reported as `val`/`test`) and on
the low-label val subset (`selection.low_label_val`).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import (
    augment,
    batchnorm,
    inference,
    loop,
    metrics,
    models,
    optim,
    parallel,
    steps,
    trainer,
)
from ssljax.data import batches
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
    plan = optim.step_plan(config.train, len(data.train), drop_last=False)
    tx, schedule = optim.make_optimizer(config.train, plan)
    init_key, train_key = steps.derive_keys(config.seed)
    repl = parallel.replicated(mesh)
    init = _init_fn(model, tx, data.train.images.shape[1:], config.init.transfer)
    training = trainer.Trainer(config, workdir, plan, mesh, "fine-tuning", "Lower train.base_lr.")
    # The encoder variables are an argument, not a closure: a closure's arrays would be
    # baked into the compiled program as constants.
    state = training.init(init, init_key, init_vars)
    # Each selection's best variables travel with the state, so a resumed run keeps them.
    best = {name: _best(state.params, state.batch_stats, -1.0, 0, repl) for name in SELECTIONS}
    carry, start_step = training.restore({"state": state, **best})
    state, best = carry.pop("state"), carry
    view = augment.ViewParams.from_config(config.augment.view1) if config.augment.enabled else None
    step_fn = steps.make_classifier_step(
        model, tx, schedule, setup.classification_loss(data.task), view
    )
    train_fn = trainer.jit_steps(step_fn, mesh, batch_args=3)  # images, labels, mask
    predict = _predictor(config, data, model, mesh)
    subsets = {"full_val": np.arange(len(data.val)), "low_label_val": val_idx}
    writer = training.open_writer(f"finetune {data.name}")

    def score_epoch(chunk: loop.Chunk) -> None:
        """Scores val, keeps each selection's best epoch, writes the epoch's record."""
        epoch = plan.epoch(chunk.step)
        s = chunk.state
        probs, stats = predict(s.params, s.batch_stats, data.val)
        record = {"epoch": epoch, **chunk.last_metrics()}
        for name, vi in subsets.items():
            val = _scores(data.task, data.val.labels[vi], probs[vi])
            prefix = "val" if name == "full_val" else "val_low"
            record.update({f"{prefix}_{k}": v for k, v in val.items()})
            if val["auc"] > float(jax.device_get(best[name]["auc"])):
                best[name] = _best(s.params, stats, val["auc"], epoch, repl)
        writer.write(chunk.step, record)
        writer.progress(0, epoch=epoch, loss=record["loss"], val_auc=record["val_auc"])

    finetuning = training.loop(
        train_fn,
        _batch_at(config, data, labelled),
        [loop.Action(loop.every(plan.steps_per_epoch, plan), score_epoch)],
        saved=lambda state: {"state": state, **best},
    )
    with training.closing():
        finetuning.run(state, start_step, train_key)
    out: dict[str, Any] = {"selection": {}, "epochs": config.train.epochs}
    out["steps"] = plan.total_steps
    for name, vi in subsets.items():
        b = best[name]
        test_scores = predict(b["params"], b["batch_stats"], data.test, reestimate=False)[0]
        val_scores = predict(b["params"], b["batch_stats"], data.val, reestimate=False)[0][vi]
        out["selection"][name] = {
            "n_val": int(len(vi)),
            "best_epoch": int(jax.device_get(b["epoch"])),
            "val": _scores(data.task, data.val.labels[vi], val_scores),
            "test": _scores(data.task, data.test.labels, test_scores),
        }
        if name == "full_val":
            out.update(best_epoch=out["selection"][name]["best_epoch"], test_scores=test_scores)
    return out


_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def _best(params, batch_stats, auc: float, epoch: int, repl) -> dict[str, Any]:
    """A selection's kept variables (copies: the train step donates the state's buffers),
    val AUC (float32 []) and epoch (int32 []), replicated."""
    score = jax.device_put({"auc": np.float32(auc), "epoch": np.int32(epoch)}, repl)
    return {**_copy({"params": params, "batch_stats": batch_stats}), **score}


def _batch_at(config, data, labelled: np.ndarray) -> loop.BatchAt:
    """Steps [s, s + n) -> (images uint8, labels, mask bool), each [n, rows of this
    process, ...], from the endless stream over the labelled subset
    (`batches.stream_batch_indices`), which fills every batch with real examples."""
    # The images are read per batch (they may live on disk, `data.source=tfds`).
    images, labels = data.train.images, data.train.labels[labelled]
    n, batch_size = len(labelled), config.train.batch_size
    rows = parallel.process_rows(batch_size)

    def batch_at(first: int, count: int):
        idx = np.stack(
            [
                batches.stream_batch_indices(config.seed, s, n, batch_size)[rows]
                for s in range(first, first + count)
            ]
        )
        return images[labelled[idx]], labels[idx], np.ones(idx.shape, bool)

    return batch_at


def _predictor(config, data, model, mesh):
    """predict(params, batch_stats, split, reestimate=True) -> (probabilities of
    `split.images`, the BatchNorm statistics used): re-estimated on the train split's images
    first (`eval.bn_images`), as before every scoring."""
    apply_fn = jax.jit(steps.make_apply_fn(model))
    moments_fn = batchnorm.make_moments_fn(model)
    bn_images = batchnorm.bn_images(data.train.images, config.eval.bn_images)
    e = config.eval

    def predict(params, stats, split, reestimate=True):
        if reestimate and e.bn_images:
            stats = batchnorm.reestimate(moments_fn, params, stats, bn_images, e.batch_size, mesh)
        logits = inference.batched_apply(apply_fn, params, stats, split.images, e.batch_size, mesh)
        return metrics.probabilities(data.task, logits), stats

    return predict
