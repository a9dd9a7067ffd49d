"""Evaluation at a label budget: fine-tuning, linear probe, kNN; MedMNIST ACC and AUC.

`run(config, workdir)` is what `launch.py` calls (through `ssljax.jobs`) for `method` in
`PROTOCOLS`; `job` is its work under `ssljax.entry`. The encoder
starts from `config.init.workdir` (a pretraining run, or its `encoder/` folder; with
`init.transfer='batchnorm'` only its BatchNorm parameters, on random kernels) or, when that
is empty, from random initialisation with the identical network and schedule. BatchNorm
statistics are re-estimated on the train split's images before anything is scored, for
every arm. Model selection uses the val split (best epoch, or best L2 strength, by val AUC),
and again a val subset scaled with the label budget (`selection.low_label_val`); the test
split is scored on each choice. Everything lands in `workdir/results.json`, the full-val
choice's per-image test scores in `test_scores.npz`, and a confusion matrix beside them.

    setup.py     encoder, starting variables, label-budget checks, low-label val subset
    frozen.py    linear probe and kNN on frozen features (computed once per encoder)
    finetune.py  fine-tuning with a step budget independent of the label count
"""

import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from ssljax import (
    batchnorm,
    entry,
    facts,
    parallel,
    plots,
    results,
    version,
    writers,
)
from ssljax.data import sources, subsets
from ssljax.errors import ConfigError
from ssljax.evaluate import finetune, frozen, setup

# Re-exported: the sweep and the tests name the files through evaluate.
RESULTS_FILE, TEST_SCORES_FILE = results.RESULTS_FILE, results.TEST_SCORES_FILE


def _finetune(config, workdir, data, labelled, val_idx, encoder, init_vars, init_info, mesh):
    return finetune.run(config, workdir, data, labelled, val_idx, encoder, init_vars, mesh)


def _frozen(protocol):
    def run_protocol(config, workdir, data, labelled, val_idx, encoder, init_vars, init_info, mesh):
        f = frozen.features(config, data, encoder, init_vars, init_info, mesh)
        return protocol(config, data, labelled, val_idx, f)

    return run_protocol


class Protocol(NamedTuple):
    """One evaluation protocol: how it scores an encoder, and the config it starts from."""

    # (config, workdir, data, labelled, val_idx, encoder, init_vars, init_info, mesh) ->
    # {'selection', 'test_scores' float32 [N, C], ...} of results.json.
    run: Callable[..., dict[str, Any]]
    # The module of its default config (`get_config(dataset)`), e.g. 'configs.finetune'.
    config: str


# The scorer of each of `facts.PROTOCOLS` (the one list of protocol names), in its order.
_SCORERS = {"finetune": _finetune, "linear": _frozen(frozen.linear), "knn": _frozen(frozen.knn)}
PROTOCOLS = {name: Protocol(_SCORERS[name], module) for name, module in facts.PROTOCOLS.items()}


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Evaluates as `config.method` says; writes and returns the results record.

    Through `ssljax.entry`: the config is validated, `workdir` checked and held for the run,
    once; when the run fails before writing anything, no folder is left behind.
    """
    return entry.run(config, workdir, job)


def job(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
    """`run`'s work, for `ssljax.entry`: a valid config, a checked and held workdir."""
    if config.method not in PROTOCOLS:
        raise ConfigError(f"config.method={config.method!r}: protocols are {list(PROTOCOLS)}")
    return _evaluate(config, workdir)


def _evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
    start = time.time()
    # A fine-tuning run resumes from workdir's checkpoints: they must come from this config.
    writers.check_config_matches(workdir, config)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.eval.batch_size, mesh, key="eval.batch_size")
    if config.method == "finetune":
        parallel.check_batch_size(config.train.batch_size, mesh)
    data = sources.open_dataset(config.data)
    setup.check_labelled(data, config.method)
    labelled = subsets.subset_from_config(data.train.labels, data.task, config.data, config.seed)
    setup.check_classes(data, labelled)
    val_idx = setup.val_subset(data, config)
    encoder = setup.build_encoder(config, data.size)
    init_vars, init_info = setup.load_init(config, encoder, data.train.images.shape[1:])
    writers.write_config(workdir, config)

    out = PROTOCOLS[config.method].run(
        config, workdir, data, labelled, val_idx, encoder, init_vars, init_info, mesh
    )
    test_scores = out.pop("test_scores")
    full = out["selection"]["full_val"]
    record = {
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
        "bn_reestimated_on": _bn_count(config, len(data.train), mesh.devices.size),
        "code": writers.code_version(),
        "ssljax_version": version.__version__,
        "wall_time_s": round(time.time() - start, 2),
        "val": full["val"],
        "test": full["test"],
        **out,
    }
    if config.method == "finetune":  # the frozen protocols train nothing with a learning rate
        record["train"] = {"base_lr": config.train.base_lr, "epochs": config.train.epochs}
    if jax.process_index() == 0:
        _save_scores(workdir / TEST_SCORES_FILE, test_scores, data.test.labels)
        plots.confusion_matrices(
            data.task,
            data.test.labels,
            test_scores,
            data.label_names,
            workdir / "confusion_test.png",
            title=f"{data.name} {config.method} ({init_info['kind']}), test",
        )
    # Last: a results.json marks the run finished, for the sweep and the report.
    record = results.record(record)
    writers.write_json(workdir / RESULTS_FILE, record)
    return record


def _bn_count(config: ml_collections.ConfigDict, n_train: int, devices: int) -> int:
    """How many train images BatchNorm statistics were re-estimated on (0: not re-estimated)."""
    n = min(config.eval.bn_images, n_train)
    return batchnorm.images_used(n, config.eval.batch_size, devices) if n else 0


def _save_scores(path: pathlib.Path, scores: np.ndarray, labels: np.ndarray) -> None:
    """test_scores.npz (scores float32 [N, C], labels [N] or [N, L]), written atomically."""
    arrays = {"scores": np.asarray(scores, np.float32), "labels": np.asarray(labels)}
    writers.atomic_write(path, lambda f: np.savez(f, **arrays))
