"""Evaluation at a label budget: fine-tuning, linear probe, kNN; MedMNIST ACC and AUC.

`run(config, workdir)` is what `launch.py` calls for `method` in `PROTOCOLS`. The encoder
starts from `config.init.workdir` (a pretraining run, or its `encoder/` folder) or, when
that is empty, from random initialisation with the identical network and schedule. Model
selection uses the val split (best epoch, or best L2 strength, by val AUC); the test split
is scored once, on that choice. Everything lands in `workdir/results.json`, with a
confusion matrix of the test split beside it.
"""

import hashlib
import json
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import ssljax
from ssljax import (
    augment,
    checkpoint,
    inference,
    metrics,
    models,
    optim,
    parallel,
    plots,
    probes,
    steps,
    validation,
    writers,
)
from ssljax.data import Dataset, batches, load_dataset, registry, subsets

RESULTS_FILE = "results.json"


def classification_loss(task: str):
    """(logits float32 [B, C], labels int32 [B] or [B, L]) -> per-example loss float32 [B]."""
    if task == registry.MULTI_LABEL:
        return lambda logits, labels: optax.sigmoid_binary_cross_entropy(
            logits, labels.astype(jnp.float32)
        ).mean(-1)
    return optax.softmax_cross_entropy_with_integer_labels


def build_encoder(config: ml_collections.ConfigDict, image_size: int) -> models.ResNet:
    m = config.model
    return models.make_encoder(m.name, m.width, m.stem, image_size, m.dtype)


def check_classes(data: Dataset, labelled: np.ndarray) -> None:
    """Raises before training when a class (a label, for multi-label tasks) cannot be learned
    or scored: a single-label class needs examples in the labelled train subset, val and test;
    a multi-label label needs positives and negatives in val and test (AUC needs both).

    Args:
      labelled: int64 [M], indices of the labelled train subset.
    """
    names = data.label_names
    if data.task == registry.MULTI_LABEL:
        splits = (("val", data.val.labels), ("test", data.test.labels))
        for split, y in splits:
            positives = np.asarray(y).sum(axis=0)
            for i in np.flatnonzero((positives == 0) | (positives == len(y))):
                kind = "no positive" if positives[i] == 0 else "no negative"
                raise ValueError(
                    f"{data.name}: label {i} ({names[i]!r}) has {kind} example in the {split} "
                    "split, so its AUC is undefined. Every label needs both in val and test; "
                    "fix or drop that label in the data file."
                )
        return
    splits = (
        ("labelled train subset", data.train.labels[labelled]),
        ("val", data.val.labels),
        ("test", data.test.labels),
    )
    for split, y in splits:
        counts = np.bincount(np.asarray(y).reshape(-1), minlength=len(names))
        empty = [f"{i} ({names[i]!r})" for i in np.flatnonzero(counts == 0)]
        if empty:
            raise ValueError(
                f"{data.name}: class {', '.join(empty)} has no examples in the {split}. Every "
                "class needs examples in train, val and test; fix or drop that class in the "
                "data file."
            )


def _init_run_config(source: pathlib.Path) -> pathlib.Path:
    """The config.json of the pretraining run that exported the encoder at `source`."""
    if source.name == checkpoint.ENCODER_DIR and not (source / writers.CONFIG_FILE).exists():
        return source.parent / writers.CONFIG_FILE
    return source / writers.CONFIG_FILE


def load_init(
    config: ml_collections.ConfigDict, encoder: models.ResNet, image_shape: tuple
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The pretrained encoder variables named by config.init.workdir (None: random init).

    Args:
      image_shape: (H, W, C) of the images the encoder will see.
    Returns:
      (variables {'params', 'batch_stats'} or None, a description for results.json).
    Raises:
      FileNotFoundError: the folder holds no encoder export.
      ValueError: the encoder's architecture, width or input channels differ from the config.
    """
    source = config.init.workdir
    if not source:
        return None, {"workdir": "", "kind": "random"}
    source = pathlib.Path(source).expanduser()
    variables = checkpoint.load_encoder(source)
    expected = jax.eval_shape(
        lambda: encoder.init(jax.random.key(0), jnp.zeros((1, *image_shape)), train=False)
    )
    shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)  # noqa: E731
    init_config = _init_run_config(source)
    theirs = json.loads(init_config.read_text()) if init_config.exists() else None
    if shapes(variables) != shapes(dict(expected)):
        used = ""
        if theirs is not None:
            used = (
                f" The pretraining run used model.name={theirs['model']['name']}, "
                f"model.width={theirs['model']['width']} on {theirs['data']['name']} "
                f"({theirs['data']['size']} px)."
            )
        raise ValueError(
            f"the encoder in {source} does not match this config (model.name="
            f"{config.model.name}, model.width={config.model.width}, {image_shape[-1]} input "
            f"channel(s), {image_shape[0]} px).{used} Set model.name and model.width as the "
            "pretraining run did, on a dataset with the same number of channels."
        )
    info = {"workdir": str(source), "kind": "pretrained"}
    if theirs is not None:
        info["config_sha256"] = hashlib.sha256(init_config.read_bytes()).hexdigest()
        info["method"] = theirs["method"]
    return variables, info


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Evaluates as `config.method` says; writes and returns the results record."""
    if config.method not in PROTOCOLS:
        raise ValueError(f"config.method={config.method!r}: protocols are {list(PROTOCOLS)}")
    validation.validate(config)
    start = time.time()
    workdir = pathlib.Path(workdir)
    json_config = json.loads(config.to_json_best_effort())
    # A fine-tuning run resumes from workdir's checkpoints: they must come from this config.
    writers.check_config_matches(workdir, json_config)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.eval.batch_size, mesh, key="eval.batch_size")
    if config.method == "finetune":
        parallel.check_batch_size(config.train.batch_size, mesh)
    data = load_dataset(config.data)
    labelled = subsets.subset_from_config(data.train.labels, data.task, config.data, config.seed)
    check_classes(data, labelled)
    encoder = build_encoder(config, data.size)
    init_vars, init_info = load_init(config, encoder, data.train.images.shape[1:])
    writers.write_json(workdir / writers.CONFIG_FILE, json_config)

    out = PROTOCOLS[config.method](config, workdir, data, labelled, encoder, init_vars, mesh)
    test_scores = out.pop("test_scores")
    results = {
        "dataset": data.name,
        "size": data.size,
        "task": data.task,
        "protocol": config.method,
        "init": init_info,
        "label_fraction": config.data.label_fraction,
        "labels_per_class": config.data.labels_per_class,
        "n_labelled": int(len(labelled)),
        "n_train": int(len(data.train)),
        "n_test": int(len(test_scores)),
        "seed": config.seed,
        "model": {"name": config.model.name, "width": config.model.width},
        "ssljax_version": ssljax.__version__,
        "wall_time_s": round(time.time() - start, 2),
        **out,
    }
    writers.write_json(workdir / RESULTS_FILE, results)
    if jax.process_index() == 0:
        plots.confusion_matrices(
            data.task,
            data.test.labels,
            test_scores,
            data.label_names,
            workdir / "confusion_test.png",
            title=f"{data.name} {config.method} ({init_info['kind']}), test",
        )
    return results


def _scores(task: str, labels: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.evaluate(task, labels, y_score).items()}


def _frozen_features(config, data, labelled, encoder, init_vars, mesh):
    """Features float32 [N, F] of the labelled train subset, val and test (frozen encoder)."""
    image_shape = data.train.images.shape[1:]
    variables = init_vars
    if variables is None:
        # Jitted: an eager init dispatches (and on CPU compiles) every initialiser op alone.
        init = jax.jit(lambda key: encoder.init(key, jnp.zeros((1, *image_shape)), train=False))
        variables = init(steps.derive_keys(config.seed)[0])
    apply_fn = jax.jit(steps.make_apply_fn(encoder))
    feats = {}
    for name, images in (
        ("train", data.train.images[labelled]),
        ("val", data.val.images),
        ("test", data.test.images),
    ):
        feats[name] = inference.batched_apply(
            apply_fn,
            variables["params"],
            variables["batch_stats"],
            images,
            config.eval.batch_size,
            mesh,
        )
    return feats


def _linear(config, workdir, data, labelled, encoder, init_vars, mesh) -> dict[str, Any]:
    f = _frozen_features(config, data, labelled, encoder, init_vars, mesh)
    probe = probes.train_linear_probe(
        f["train"],
        data.train.labels[labelled],
        f["val"],
        data.val.labels,
        task=data.task,
        num_classes=data.num_outputs,
        l2_values=tuple(config.eval.linear_l2),
        epochs=config.eval.linear_epochs,
    )
    test_scores = probes.predict_proba(probe, f["test"])
    return {
        "val": _scores(data.task, data.val.labels, probes.predict_proba(probe, f["val"])),
        "test": _scores(data.task, data.test.labels, test_scores),
        "linear_l2": probe.l2,
        "linear_val_auc_by_l2": {str(k): v["auc"] for k, v in probe.val_scores.items()},
        "test_scores": test_scores,
    }


def _knn(config, workdir, data, labelled, encoder, init_vars, mesh) -> dict[str, Any]:
    f = _frozen_features(config, data, labelled, encoder, init_vars, mesh)
    e = config.eval

    def predict(query):
        return probes.knn_predict(
            f["train"],
            data.train.labels[labelled],
            query,
            num_classes=data.num_outputs,
            task=data.task,
            k=min(e.knn_k, len(labelled)),
            metric=e.knn_metric,
            temperature=e.knn_temperature,
        )

    test_scores = predict(f["test"])
    return {
        "val": _scores(data.task, data.val.labels, predict(f["val"])),
        "test": _scores(data.task, data.test.labels, test_scores),
        "knn": {"k": min(e.knn_k, len(labelled)), "metric": e.knn_metric},
        "test_scores": test_scores,
    }


def _finetune(config, workdir, data, labelled, encoder, init_vars, mesh) -> dict[str, Any]:
    """Trains encoder + head on the labelled subset; the best val-AUC epoch is tested."""
    model = models.ClassifierModel(encoder=encoder, num_outputs=data.num_outputs)
    n, batch_size = len(labelled), config.train.batch_size
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = config.train.epochs * steps_per_epoch
    tx, schedule = optim.make_optimizer(config.train, steps_per_epoch)
    init_key, train_key = steps.derive_keys(config.seed)
    repl = parallel.replicated(mesh)

    def init(key, encoder_vars):
        state = steps.init_train_state(model, tx, key, data.train.images.shape[1:])
        if encoder_vars is None:
            return state
        params = {**state.params, "encoder": encoder_vars["params"]}
        stats = {**state.batch_stats, "encoder": encoder_vars["batch_stats"]}
        return state.replace(params=params, batch_stats=stats, opt_state=tx.init(params))

    # The encoder variables are an argument, not a closure: a closure's arrays would be
    # baked into the compiled program as constants.
    state = jax.jit(init, out_shardings=repl)(init_key, init_vars)
    # The state is donated to each train step, so the best epoch's variables need buffers
    # of their own: one jitted copy, not an eager dispatch per leaf.
    copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=repl)
    # The best epoch's variables travel with the state so that a resumed run keeps them.
    carry = {
        "state": state,
        "best_params": copy(state.params),
        "best_batch_stats": copy(state.batch_stats),
        "best_auc": jnp.float32(-1.0),
        "best_epoch": jnp.int32(0),
    }
    ckpt = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep)
    restored = ckpt.restore_latest(carry)
    start_step = restored[1] if restored else 0
    if restored:
        carry = restored[0]
    view = augment.ViewParams.from_config(config.augment.view1) if config.augment.enabled else None
    step_fn = steps.make_classifier_step(model, tx, schedule, classification_loss(data.task), view)
    batch_sharding = parallel.batch_sharding(mesh, 1)
    train_fn = jax.jit(
        steps.scan_steps(step_fn),
        in_shardings=(repl, (batch_sharding, batch_sharding, batch_sharding), repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
    apply_fn = jax.jit(steps.make_apply_fn(model))
    rows = parallel.process_rows(batch_size)
    images, labels = data.train.images[labelled], data.train.labels[labelled]

    def predict(params, stats, split):
        logits = inference.batched_apply(
            apply_fn, params, stats, split.images, config.eval.batch_size, mesh
        )
        return metrics.probabilities(data.task, logits)

    writer = writers.MetricWriter(
        workdir, total_steps, start_step, config.log.progress, desc=f"finetune {data.name}"
    )
    state, step = carry["state"], start_step
    try:
        while step < total_steps:
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
            if int(state.nonfinite_step) >= 0:
                raise FloatingPointError(
                    f"fine-tuning loss became non-finite at step {int(state.nonfinite_step)}; "
                    "lower train.base_lr."
                )
            val = _scores(
                data.task, data.val.labels, predict(state.params, state.batch_stats, data.val)
            )
            record = {"epoch": epoch, **{k: float(np.asarray(v)[-1]) for k, v in m.items()}}
            record.update({f"val_{k}": v for k, v in val.items()})
            writer.write(step, record)
            writer.progress(0, epoch=epoch, loss=record["loss"], val_auc=val["auc"])
            if val["auc"] > float(carry["best_auc"]):
                carry.update(
                    best_params=copy(state.params),
                    best_batch_stats=copy(state.batch_stats),
                    best_auc=jnp.float32(val["auc"]),
                    best_epoch=jnp.int32(epoch),
                )
            if epoch % config.checkpoint.every_epochs == 0 or step == total_steps:
                carry["state"] = state
                ckpt.save(step, carry)
    finally:
        ckpt.close()
        writer.close()
    best = (carry["best_params"], carry["best_batch_stats"])
    test_scores = predict(*best, data.test)
    return {
        "val": _scores(data.task, data.val.labels, predict(*best, data.val)),
        "test": _scores(data.task, data.test.labels, test_scores),
        "best_epoch": int(carry["best_epoch"]),
        "epochs": config.train.epochs,
        "test_scores": test_scores,
    }


PROTOCOLS = {"finetune": _finetune, "linear": _linear, "knn": _knn}
