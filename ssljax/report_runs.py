"""The report's runs: every evaluation (results.json) and pretraining run under some folders.

A run that cannot be read (a results.json, config.json or metrics.jsonl that is not JSON,
cut short or edited; a results.json without the fields ssljax writes) is left out with a
warning naming the file, and the report is made of the others.
"""

import logging
import math
import pathlib
from collections.abc import Sequence
from typing import Any

from ssljax import facts, files, health, results
from ssljax.data import registry
from ssljax.errors import DataError

SCORES_FILE, RESULTS_FILE = results.TEST_SCORES_FILE, results.RESULTS_FILE


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _optional_fields(r: dict[str, Any], path: pathlib.Path) -> dict[str, Any]:
    """Fields newer runs write; None where a run predates them."""
    low = (r.get("selection") or {}).get("low_label_val") or {}
    values = [_finite(low[s][m]) for s in ("val", "test") for m in ("acc", "auc")] if low else []
    # A small val subset can lack a class: without its AUC nothing can be selected on it.
    low_values = values if values and None not in values else [None] * 4
    # Only fine-tuning trains with a learning rate; frozen protocols' configs carry an unused one.
    base_lr = (r.get("train") or {}).get("base_lr") if r.get("protocol") == "finetune" else None
    scores = path.parent / SCORES_FILE
    return {
        "task": r.get("task"),
        "base_lr": None if base_lr is None else float(base_lr),
        "low_n_val": low.get("n_val") if low_values[0] is not None else None,
        "low_val_auc": low_values[1],
        "low_test_acc": low_values[2],
        "low_test_auc": low_values[3],
        "scores_file": str(scores) if scores.is_file() else None,
    }


def _run_record(path: pathlib.Path) -> dict[str, Any]:
    """A results.json (any readable schema version), flattened; DataError naming it when it
    cannot be read."""
    r = results.read(path)
    try:
        init = r["init"]
        method = facts.RANDOM if init["kind"] == facts.RANDOM else init.get("method", "pretrained")
        return {
            "workdir": str(path.parent),
            "init_workdir": init.get("workdir") or "",
            "dataset": registry.dataset_key(r["dataset"], r["size"]),
            "size": r["size"],
            "model": f"{r['model']['name']} w{r['model']['width']}",
            "protocol": r["protocol"],
            "method": method,
            "label_fraction": float(r["label_fraction"]),
            "n_labelled": int(r["n_labelled"]),
            "seed": int(r["seed"]),
            "test_acc": float(r["test"]["acc"]),
            "test_auc": float(r["test"]["auc"]),
            "val_acc": float(r["val"]["acc"]),
            "val_auc": float(r["val"]["auc"]),
            **_optional_fields(r, path),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path} is not an ssljax results.json (field {e})") from e


def _pretraining_run(config_path: pathlib.Path) -> dict[str, Any] | None:
    """The pretraining run whose config.json is `config_path`; None for an evaluation's."""
    c = files.read_config(config_path.parent)
    if not isinstance(c, dict) or c.get("method") not in facts.METHODS:
        return None
    try:
        dataset = registry.dataset_key(registry.own_name(c["data"]), c["data"]["size"])
        seed = c["seed"]
    except (KeyError, TypeError) as e:
        raise DataError(f"{config_path} is not an ssljax config.json (field {e})") from e
    records = files.read_metrics(config_path.parent)
    return {
        "workdir": str(config_path.parent),
        "dataset": dataset,
        "method": c["method"],
        "seed": seed,
        "records": records,
        "health": pretraining_health(config_path.parent, c, records),
    }


def pretraining_health(
    workdir: pathlib.Path, config: dict[str, Any], records: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The run's health.json; for a run made before verdicts existed (or unfinished), the
    verdict `ssljax.health` gives its metrics.jsonl now."""
    verdict = health.read_verdict(workdir)
    if verdict is None:
        verdict = health.verdict(records, config["method"], health.objective_floor(config))
    return verdict


def collect(paths: Sequence[str | pathlib.Path]) -> tuple[list[dict], list[dict]]:
    """(evaluation runs, pretraining runs) found under `paths` (run folders or roots).

    An evaluation run is a results.json record (flattened); a pretraining run is
    {workdir, dataset, method, seed, records (its metrics.jsonl)}. Runs that cannot be read
    are left out, each with a warning naming its file.

    Raises:
      DataError: a path is not a folder.
    """
    # resolved path -> the path as found (relative paths stay relative in the report)
    results: dict[pathlib.Path, pathlib.Path] = {}
    configs: dict[pathlib.Path, pathlib.Path] = {}
    for p in map(pathlib.Path, paths):
        if not p.is_dir():
            raise DataError(f"{p} is not a folder: give the folder that holds the runs")
        results.update((q.resolve(), q) for q in p.rglob(RESULTS_FILE))
        configs.update((q.resolve(), q) for q in p.rglob(files.CONFIG_FILE))
    evals = [r for r in map(_readable(_run_record), map(results.get, sorted(results))) if r]
    read = _readable(_pretraining_run)
    pretrains = [r for r in map(read, map(configs.get, sorted(configs))) if r]
    link_health(evals, pretrains)
    return evals, pretrains


def link_health(evals: Sequence[dict[str, Any]], pretrains: Sequence[dict[str, Any]]) -> None:
    """Sets each evaluation's `pretrain_verdict`: the verdict of the pretraining run it
    started from; None for random init or a pretraining run not among `pretrains`.

    An evaluation names its start (`init.workdir`) as it was given, often relative to where
    the sweep ran: it is matched by its resolved path, else by its trailing path components
    (`pretrain/barlow_twins-breastmnist-s0`), when exactly one pretraining run ends so.
    """
    runs = [(pathlib.Path(p["workdir"]), p["health"]["verdict"]) for p in pretrains]
    resolved = {path.resolve(): verdict for path, verdict in runs}
    for r in evals:
        r["pretrain_verdict"] = None
        if not r["init_workdir"]:
            continue
        source = pathlib.Path(r["init_workdir"])
        if source.name == "encoder":
            source = source.parent
        if source.resolve() in resolved:
            r["pretrain_verdict"] = resolved[source.resolve()]
            continue
        tail = source.parts[-2:]
        found = [verdict for path, verdict in runs if path.parts[-len(tail) :] == tail]
        if len(found) == 1:
            r["pretrain_verdict"] = found[0]


def _readable(read):
    """`read`, returning None (after a warning naming the file) where it raises DataError."""

    def attempt(path: pathlib.Path) -> dict[str, Any] | None:
        try:
            return read(path)
        except DataError as e:
            logging.warning("left out of the report: %s", e)
            return None

    return attempt
