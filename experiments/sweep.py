"""A resumable grid of pretraining and evaluation runs: `python -m experiments.sweep`.

    python -m experiments.sweep --grid=experiments/grids/quickstart.py --root=runs/quickstart
    python -m experiments.sweep --grid=experiments/grids/study_cpu.py --root=runs/study \
        --grid.seeds='(0,)' --grid.pretrain.train.epochs=5      # any grid value, overridden

A grid (a ConfigDict; see `experiments/grids/`) names:
  datasets         MedMNIST flags at 28 px ('breastmnist') or flag_SIZE ('breastmnist_64')
  methods          of 'barlow_twins', 'simclr' and 'random' (no pretraining: the baseline)
  label_fractions  labelled share of the train split, each in (0, 1]
  protocols        of 'finetune', 'linear', 'knn'
  seeds            one pretraining run per (method, dataset, seed); evaluations reuse it
  common, pretrain, finetune, linear, knn
                   config overrides (nested, mirroring configs/base.py): `common` applies to
                   every run, the others on top of configs/{barlow,simclr}.py:DATASET and
                   configs/{finetune,linear,knn}.py:DATASET.
  by_dataset       optional: DATASET -> sections as above, applied after the general ones
                   (`--grid.by_dataset.pneumoniamnist.pretrain.train.epochs=5`).

Cells and their workdirs:
  ROOT/pretrain/<method>-<dataset>-s<seed>                 exports encoder/
  ROOT/eval/<dataset>/<protocol>/<method>/f<fraction>-s<seed>   writes results.json; its
      config.init.workdir is the pretraining cell of the same method, dataset and seed, so a
      pretrained encoder and its random-init twin see the same labelled subset (paired seeds).

A finished cell is skipped (after checking its config.json still matches the grid); an
interrupted one resumes from its last checkpoint; a failed one is recorded, the evaluations
that needed it are marked blocked, and the sweep goes on. A pretraining run whose health
verdict (`ssljax.health`) is 'failed' is recorded as unhealthy and not evaluated either,
unless the grid sets `evaluate_failed=True`. ROOT/sweep.json records every
cell's status and wall time; the exit status is 1 when any cell failed or was blocked.

Cells run in this process, one after another: runs share no compiled functions anyway
(each builds its own jitted closures), so subprocesses would only add each cell's JAX import
and start-up (~5 s here, ~15 minutes over the 174 cells of the CPU study). JAX's persistent
compilation cache (ROOT/.jax_cache) is shared: a random-init twin compiles the program of its
pretrained twin and seeds change only array values, so most cells load their programs. The
price: a hard crash (out of memory) stops the sweep; the same command then resumes it.
"""

import datetime
import os
import pathlib
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import tqdm

from experiments.cells import Cell, expand  # noqa: F401 - the sweep's API
from ssljax import errors, health, interrupt, jobs, report_runs, workdirs, writers

SWEEP_FILE = "sweep.json"
# Statuses that make the sweep exit non-zero.
# A pretraining run that finished with the health verdict 'failed' (ssljax.health).
UNHEALTHY = "unhealthy"
BAD_STATUSES = ("failed", "blocked", "interrupted", UNHEALTHY)


def run_cell(cell: Cell) -> None:
    """Runs one cell in this process (resuming from its checkpoints), through the entry
    launch.py uses (`ssljax.jobs.run`): validated, checked and locked once."""
    jobs.run(cell.config, cell.workdir)


def run_sweep(
    grid: ml_collections.ConfigDict,
    root: str | pathlib.Path,
    *,
    progress: bool = True,
    compile_cache: str | pathlib.Path | None = None,
    command: str = "",
    runner: Callable[[Cell], None] = run_cell,
) -> dict[str, Any]:
    """Runs every unfinished cell of `grid` under `root`; returns the sweep.json record.

    Args:
      progress: a tqdm bar over the whole grid.
      compile_cache: folder for JAX's persistent compilation cache (None: leave it as is).
      command: the command line, recorded in sweep.json.
      runner: runs one cell (tests substitute a failing one).
    Raises:
      ConfigError before any run when the grid is invalid; WorkdirError when `root` cannot
      be used or another sweep holds it; KeyboardInterrupt after recording the interrupted
      cell.
    """
    root = workdirs.check(root, what="--root")
    cells = expand(grid, root)
    with workdirs.lock(root), errors.library_logs_to_workdir(root):
        return _run_cells(grid, root, cells, progress, compile_cache, command, runner)


def _run_cells(grid, root, cells, progress, compile_cache, command, runner) -> dict[str, Any]:
    """`run_sweep`'s work, in a checked and locked root."""
    if compile_cache:
        jax.config.update("jax_compilation_cache_dir", str(compile_cache))
    started = time.perf_counter()
    record: dict[str, Any] = {
        "grid": writers.config_json(grid),
        "root": str(root),
        "command": command,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "environment": {
            "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()],
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "cells": [
            {"name": c.name, "kind": c.kind, "status": "pending", "wall_s": None, "error": ""}
            for c in cells
        ],
    }
    unusable: set[str] = set()
    unhealthy: set[str] = set()
    bar = tqdm.tqdm(
        total=len(cells), desc=f"sweep {grid.name}", unit="run", disable=not progress, ncols=100
    )
    entry: dict[str, Any] = {}
    start = started
    try:
        for cell, entry in zip(cells, record["cells"], strict=True):
            bar.set_postfix_str(cell.name, refresh=True)
            start = time.perf_counter()
            entry["status"] = "running"
            _save(root, record, started)
            if cell.needs in unusable:
                entry.update(status="blocked", error=f"its pretraining run {cell.needs} failed")
                if cell.needs in unhealthy:
                    entry["error"] += (
                        " its health check; evaluate it anyway with --grid.evaluate_failed=True"
                    )
            elif cell.finished():
                _skip_or_fail(cell, entry)
                _health_gate(grid, cell, entry)
            else:
                try:
                    runner(cell)
                    entry["status"] = "done"
                    _health_gate(grid, cell, entry)
                except Exception as e:  # noqa: BLE001 - one bad cell must not stop the sweep
                    entry.update(
                        status="failed",
                        error=f"{type(e).__name__}: {e}",
                        traceback=traceback.format_exc(),
                    )
                finally:
                    # Compiled programs of finished runs are never called again.
                    jax.clear_caches()
            entry["wall_s"] = round(time.perf_counter() - start, 2)
            if entry["status"] in ("failed", "blocked", UNHEALTHY):
                unusable.add(cell.name)
                if entry["status"] == UNHEALTHY:
                    unhealthy.add(cell.name)
                if entry["status"] != "blocked":
                    bar.write(f"{entry['status'].upper()} {cell.name}: {entry['error']}")
            bar.update(1)
    except KeyboardInterrupt:
        entry.update(status="interrupted", wall_s=round(time.perf_counter() - start, 2))
        raise
    finally:
        bar.close()
        _save(root, record, started)
    return record


def _health_gate(grid: ml_collections.ConfigDict, cell: Cell, entry: dict[str, Any]) -> None:
    """A finished pretraining cell whose health verdict is 'failed' becomes UNHEALTHY (its
    evaluations are blocked) unless the grid sets `evaluate_failed`. A run finished before
    verdicts existed is judged from its metrics.jsonl, as the report judges it."""
    if cell.kind != "pretrain" or entry["status"] not in ("done", "skipped"):
        return
    records = writers.read_metrics(cell.workdir)
    if not records and health.read_verdict(cell.workdir) is None:
        return  # nothing to judge it by
    config = writers.config_json(cell.config)
    verdict = report_runs.pretraining_health(cell.workdir, config, records)
    if verdict["verdict"] == "failed" and not grid.get("evaluate_failed", False):
        entry.update(status=UNHEALTHY, error="; ".join(verdict["reasons"]))


def _skip_or_fail(cell: Cell, entry: dict[str, Any]) -> None:
    """A finished cell is skipped, unless it was made with another config than the grid's."""
    new = writers.config_json(cell.config)
    try:
        old = (
            writers.read_config(cell.workdir)
            if cell.workdir.joinpath(writers.CONFIG_FILE).exists()
            else new
        )
    except errors.DataError as e:
        entry.update(status="failed", error=str(e))
        return
    # The same pretraining run, named through a relative or an absolute --root.
    same = [pathlib.Path(c["init"]["workdir"]).resolve() for c in (old, new)]
    if old["init"]["workdir"] and new["init"]["workdir"] and same[0] == same[1]:
        new["init"]["workdir"] = old["init"]["workdir"]
    try:
        writers.check_config_matches(cell.workdir, new)
        entry["status"] = "skipped"
    except errors.WorkdirError as e:
        entry.update(status="failed", error=f"finished with another config: {e}")


def _save(root: pathlib.Path, record: dict[str, Any], started: float) -> None:
    counts: dict[str, int] = {}
    for entry in record["cells"]:
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    record.update(counts=counts, wall_s=round(time.perf_counter() - started, 2))
    writers.write_json(root / SWEEP_FILE, record)


def failures(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells of a sweep record that failed, were blocked or were interrupted."""
    return [e for e in record["cells"] if e["status"] in BAD_STATUSES]


def summary_text(record: dict[str, Any]) -> str:
    """Counts, wall time, and one line per failed cell."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(record["counts"].items()))
    lines = [f"sweep {record['root']}: {counts} in {record['wall_s']:.0f} s"]
    lines += [f"  {e['status'].upper()} {e['name']}: {e['error']}" for e in failures(record)]
    return "\n".join(lines)


def define_flags(default_grid: str | None, default_root: str | None) -> dict[str, Any]:
    """The sweep's flags (shared with experiments/quickstart.py); call once, before parsing."""
    from absl import flags
    from ml_collections import config_flags

    holders = {
        "grid": config_flags.DEFINE_config_file(
            "grid", default_grid, "Grid config file (experiments/grids/*.py[:ARG])."
        ),
        "root": flags.DEFINE_string("root", default_root, "Folder of the sweep's runs."),
        "jax_cache": flags.DEFINE_string(
            "jax_cache",
            None,
            "Persistent compilation cache folder; default ROOT/.jax_cache, '' to disable.",
        ),
        "progress": flags.DEFINE_bool("progress", True, "Show a progress bar over the grid."),
        "dry_run": flags.DEFINE_bool("dry_run", False, "List the cells and their state; run none."),
        "verbose": flags.DEFINE_bool(
            "verbose", False, "On an error, also print its traceback (always in ROOT/errors.log)."
        ),
    }
    for name in ("grid", "root"):
        if holders[name].default is None:
            flags.mark_flag_as_required(name)
    return holders


def run_from_flags(holders: dict[str, Any], module: str) -> dict[str, Any] | None:
    """Runs (or, with --dry_run, lists) the sweep the flags describe.

    Args:
      module: the script's module (recorded with its arguments as the command).
    """
    from absl import flags, logging

    if not flags.FLAGS["verbosity"].present:
        # Orbax and JAX log every checkpoint step at INFO; the progress bar says what matters.
        logging.set_verbosity(logging.WARNING)
    grid, root = holders["grid"].value, workdirs.resolve(holders["root"].value, "--root")
    if holders["dry_run"].value:
        for cell in expand(grid, root):
            print(f"{'finished' if cell.finished() else 'to run':9s} {cell.name}")
        return None
    cache = holders["jax_cache"].value
    return run_sweep(
        grid,
        root,
        progress=holders["progress"].value,
        compile_cache=root / ".jax_cache" if cache is None else cache,
        command=" ".join(["python -m", module, *sys.argv[1:]]),
    )


def _resume(holders: dict[str, Any]) -> str:
    root = pathlib.Path(holders["root"].value or ".").expanduser()
    return f"the sweep in {root} (finished cells are skipped)"


def install_ctrl_c(holders: dict[str, Any]) -> None:
    """Ctrl-C stops the sweep at the next step boundary; twice, at once (`ssljax.interrupt`)."""
    interrupt.install(lambda: errors.interrupted_line(_resume(holders)))


def exit_status(exc: BaseException, holders: dict[str, Any]) -> int:
    """Says in one line why the sweep command failed (`errors.report_failure`: its traceback
    to ROOT/errors.log when a sweep used ROOT); returns the exit status. Re-raises a bug."""
    root = pathlib.Path(holders["root"].value or ".").expanduser()
    used = root if (root / workdirs.LOCK_FILE).is_file() else None
    return errors.report_failure(exc, used, _resume(holders), holders["verbose"].value)


if __name__ == "__main__":
    from absl import app

    _FLAGS = define_flags(default_grid=None, default_root=None)

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        install_ctrl_c(_FLAGS)
        try:
            record = run_from_flags(_FLAGS, "experiments.sweep")
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - bugs are re-raised
            sys.exit(exit_status(e, _FLAGS))
        if record is not None:
            print(summary_text(record))
            if failures(record):
                sys.exit(1)

    app.run(main)
