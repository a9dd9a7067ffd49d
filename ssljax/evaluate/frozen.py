"""Frozen-encoder protocols: the linear probe and kNN on features computed once.

Features come from the frozen encoder in eval mode with BatchNorm statistics re-estimated on
the train split's images (`batchnorm.py`), for the random encoder as for a pretrained one.
They do not depend on the label budget, and a pretrained encoder's not on the evaluation
seed either, so a sweep computes them once per encoder: `features` keeps the last few in
memory.
"""

import collections
import hashlib
import json
from typing import Any

import jax
import ml_collections
import numpy as np

from ssljax import batchnorm, inference, metrics, probes, steps
from ssljax.data import Dataset
from ssljax.evaluate import setup

_CACHE: collections.OrderedDict[str, dict[str, np.ndarray]] = collections.OrderedDict()
_CACHE_SIZE = 8


_CHUNK = 4096  # images hashed at a time


def _fingerprint(data: Dataset) -> str:
    """A digest of every image of the dataset: two files of one name never share features."""
    digest = hashlib.sha1()
    for split in (data.train, data.val, data.test):
        digest.update(str(split.images.shape).encode())
        # In chunks: the same digest as the whole array, and bounded memory when the images
        # are read from TFDS (`pipeline.RecordImages`).
        for start in range(0, len(split.images), _CHUNK):
            digest.update(np.ascontiguousarray(split.images[start : start + _CHUNK]).data)
    return digest.hexdigest()


def _cache_key(config: ml_collections.ConfigDict, data: Dataset, init_info: dict) -> str:
    random_part = init_info["kind"] == "random" or config.init.transfer != "all"
    return json.dumps(
        {
            "data": [data.name, data.size, _fingerprint(data)],
            "model": config.model.to_dict(),
            "init": [
                init_info["workdir"],
                init_info.get("config_sha256", ""),
                config.init.transfer,
            ],
            "seed": config.seed if random_part else None,
            "bn_images": config.eval.bn_images,
            "batch": config.eval.batch_size,
        },
        sort_keys=True,
        default=str,
    )


def features(config, data, encoder, init_vars, init_info, mesh) -> dict[str, np.ndarray]:
    """Features float32 [N, F] of the whole train split, val and test (frozen encoder)."""
    key = _cache_key(config, data, init_info)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    variables = setup.frozen_variables(config, encoder, init_vars, data.train.images.shape[1:])
    stats = variables["batch_stats"]
    if config.eval.bn_images:
        stats = batchnorm.reestimate(
            batchnorm.make_moments_fn(encoder),
            variables["params"],
            stats,
            batchnorm.bn_images(data.train.images, config.eval.bn_images),
            config.eval.batch_size,
            mesh,
        )
    apply_fn = jax.jit(steps.make_apply_fn(encoder))
    out = {
        name: inference.batched_apply(
            apply_fn, variables["params"], stats, split.images, config.eval.batch_size, mesh
        )
        for name, split in (("train", data.train), ("val", data.val), ("test", data.test))
    }
    _CACHE[key] = out
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def _scores(task: str, labels: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.evaluate(task, labels, y_score).items()}


def linear(config, data, labelled, val_idx, f) -> dict[str, Any]:
    """L-BFGS logistic regression per L2 strength, chosen on the full val split and, apart,
    on the low-label val subset `val_idx`; each choice scored on test."""
    out: dict[str, Any] = {"selection": {}}
    for name, idx in (("full_val", np.arange(len(data.val))), ("low_label_val", val_idx)):
        probe = probes.train_linear_probe(
            f["train"][labelled],
            data.train.labels[labelled],
            f["val"][idx],
            data.val.labels[idx],
            task=data.task,
            num_classes=data.num_outputs,
            l2_values=tuple(config.eval.linear_l2),
            epochs=config.eval.linear_epochs,
        )
        test_scores = probes.predict_proba(probe, f["test"])
        out["selection"][name] = {
            "n_val": int(len(idx)),
            "linear_l2": probe.l2,
            "val": _scores(
                data.task, data.val.labels[idx], probes.predict_proba(probe, f["val"][idx])
            ),
            "test": _scores(data.task, data.test.labels, test_scores),
        }
        if name == "full_val":
            out.update(
                linear_l2=probe.l2,
                linear_val_auc_by_l2={str(k): v["auc"] for k, v in probe.val_scores.items()},
                test_scores=test_scores,
            )
    return out


def knn(config, data, labelled, val_idx, f) -> dict[str, Any]:
    """kNN with the labelled subset as memory bank; nothing is selected on val."""
    e = config.eval
    k = min(e.knn_k, len(labelled))

    def predict(query):
        return probes.knn_predict(
            f["train"][labelled],
            data.train.labels[labelled],
            query,
            num_classes=data.num_outputs,
            task=data.task,
            k=k,
            metric=e.knn_metric,
            temperature=e.knn_temperature,
        )

    test_scores = predict(f["test"])
    test = _scores(data.task, data.test.labels, test_scores)
    val_scores = predict(f["val"])
    selection = {
        name: {
            "n_val": int(len(idx)),
            "val": _scores(data.task, data.val.labels[idx], val_scores[idx]),
            "test": test,
        }
        for name, idx in (("full_val", np.arange(len(data.val))), ("low_label_val", val_idx))
    }
    return {
        "knn": {"k": k, "metric": e.knn_metric},
        "selection": selection,
        "test_scores": test_scores,
    }
