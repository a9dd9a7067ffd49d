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
that needed it are marked blocked, and the sweep goes on. ROOT/sweep.json records every
cell's status and wall time; the exit status is 1 when any cell failed or was blocked.

Cells run in this process, one after another: runs share no compiled functions anyway
(each builds its own jitted closures), so subprocesses would only add each cell's JAX import
and start-up (~5 s here, ~15 minutes over the 174 cells of the CPU study). JAX's persistent
compilation cache (ROOT/.jax_cache) is shared: a random-init twin compiles the program of its
pretrained twin and seeds change only array values, so most cells load their programs. The
price: a hard crash (out of memory) stops the sweep; the same command then resumes it.
"""

import dataclasses
import datetime
import json
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

from configs import barlow, finetune, knn, linear, simclr
from experiments.grids import flatten
from ssljax import evaluate, pretrain, validation, writers
from ssljax.data import registry

PRETRAIN_CONFIGS = {"barlow_twins": barlow.get_config, "simclr": simclr.get_config}
EVAL_CONFIGS = {"finetune": finetune.get_config, "linear": linear.get_config, "knn": knn.get_config}
RANDOM = "random"
METHODS = (*PRETRAIN_CONFIGS, RANDOM)
SECTIONS = ("common", "pretrain", "finetune", "linear", "knn")
GRID_FIELDS = ("name", "datasets", "methods", "label_fractions", "protocols", "seeds", *SECTIONS)
SWEEP_FILE = "sweep.json"
# Statuses that make the sweep exit non-zero.
BAD_STATUSES = ("failed", "blocked", "interrupted")


@dataclasses.dataclass
class Cell:
    """One run of the grid.

    Attributes:
      name: the workdir relative to ROOT, e.g. 'pretrain/barlow_twins-breastmnist-s0'.
      kind: 'pretrain' or 'eval'.
      config: the run's locked config.
      needs: name of the pretraining cell an evaluation starts from ('' for random init).
    """

    name: str
    kind: str
    workdir: pathlib.Path
    config: ml_collections.ConfigDict
    needs: str = ""

    def finished(self) -> bool:
        marker = "encoder" if self.kind == "pretrain" else evaluate.RESULTS_FILE
        return (self.workdir / marker).exists()


def parse_dataset(spec: str) -> tuple[str, int]:
    """'breastmnist' -> ('breastmnist', 28); 'breastmnist_64' -> ('breastmnist', 64)."""
    name, sep, size = spec.rpartition("_")
    if not (sep and size.isdigit()):
        name, size = spec, "28"
    if name not in registry.DATASETS:
        raise ValueError(
            f"grid.datasets: unknown dataset {spec!r}; use a MedMNIST flag, optionally with "
            f"_SIZE: {sorted(registry.DATASETS)}"
        )
    if int(size) not in registry.SIZES:
        raise ValueError(f"grid.datasets: {spec!r} has size {size}; sizes are {registry.SIZES}")
    return name, int(size)


def apply_overrides(
    config: ml_collections.ConfigDict, section: ml_collections.ConfigDict, where: str
) -> None:
    """Sets each dotted key of `section` in `config`; unknown keys and wrong types raise."""
    for key, value in flatten(section).items():
        node = config
        *parents, leaf = key.split(".")
        try:
            for part in parents:
                node = node[part]
            if leaf not in node:
                raise KeyError(leaf)
            node[leaf] = value
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"grid.{where}.{key}={value!r} cannot be applied ({type(e).__name__}: {e}). "
                "Every config key and its type is declared in configs/base.py."
            ) from e


def check_grid(grid: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the grid field that cannot work."""
    missing = [f for f in GRID_FIELDS if f not in grid]
    if missing:
        raise ValueError(f"the grid lacks {missing}; a grid names {list(GRID_FIELDS)}")
    for field, valid in (("methods", METHODS), ("protocols", tuple(EVAL_CONFIGS))):
        bad = [v for v in grid[field] if v not in valid]
        if bad:
            raise ValueError(f"grid.{field}: unknown {bad}; valid: {list(valid)}")
    for field in ("datasets", "methods", "label_fractions", "seeds"):
        values = tuple(grid[field])
        if not values or len(set(values)) != len(values):
            raise ValueError(f"grid.{field}={values}: must be non-empty, without repeats")
    bad = [f for f in grid.label_fractions if not 0 < f <= 1]
    if bad:
        raise ValueError(f"grid.label_fractions: {bad} are not in (0, 1]")
    if not all(isinstance(s, int) for s in grid.seeds):
        raise ValueError(f"grid.seeds={tuple(grid.seeds)}: seeds are integers")
    for spec in grid.datasets:
        parse_dataset(spec)
    for spec, specific in grid.by_dataset.items() if "by_dataset" in grid else ():
        unknown = [k for k in specific if k not in SECTIONS]
        if spec not in grid.datasets or unknown:
            raise ValueError(
                f"grid.by_dataset.{spec}: names a dataset of grid.datasets {tuple(grid.datasets)} "
                f"and holds sections of {list(SECTIONS)}; got {list(specific)}"
            )


def _config(
    get_config: Callable[[str], ml_collections.ConfigDict],
    grid: ml_collections.ConfigDict,
    section: str,
    spec: str,
    seed: int,
    **values: Any,
) -> ml_collections.ConfigDict:
    name, size = parse_dataset(spec)
    config = get_config(name)
    apply_overrides(config, grid.common, "common")
    apply_overrides(config, grid[section], section)
    specific = grid.by_dataset[spec] if "by_dataset" in grid and spec in grid.by_dataset else {}
    for where in ("common", section):
        if where in specific:
            apply_overrides(config, specific[where], f"by_dataset.{spec}.{where}")
    config.data.size = size
    config.seed = seed
    for key, value in values.items():
        node, _, leaf = key.rpartition("__")
        config[node][leaf] = value
    config.lock()
    return config


def expand(grid: ml_collections.ConfigDict, root: str | pathlib.Path) -> list[Cell]:
    """The grid's cells in run order: seed by seed, each dataset's pretraining before the
    evaluations that use it, so a sweep cut short still holds complete seeds."""
    check_grid(grid)
    root = pathlib.Path(root)
    cells = []
    for seed in grid.seeds:
        for spec in grid.datasets:
            for method in grid.methods:
                if method == RANDOM:
                    continue
                name = f"pretrain/{method}-{spec}-s{seed}"
                config = _config(PRETRAIN_CONFIGS[method], grid, "pretrain", spec, seed)
                cells.append(Cell(name, "pretrain", root / name, config))
            for protocol in grid.protocols:
                for method in grid.methods:
                    needs = "" if method == RANDOM else f"pretrain/{method}-{spec}-s{seed}"
                    for fraction in grid.label_fractions:
                        name = f"eval/{spec}/{protocol}/{method}/f{fraction}-s{seed}"
                        config = _config(
                            EVAL_CONFIGS[protocol],
                            grid,
                            protocol,
                            spec,
                            seed,
                            data__label_fraction=float(fraction),
                            init__workdir=str(root / needs) if needs else "",
                        )
                        cells.append(Cell(name, "eval", root / name, config, needs))
    return cells


def run_cell(cell: Cell) -> None:
    """Validates and runs one cell in this process (resuming from its checkpoints)."""
    validation.validate(cell.config)
    if cell.kind == "pretrain":
        pretrain.run(cell.config, cell.workdir)
    else:
        evaluate.run(cell.config, cell.workdir)


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
      ValueError before any run when the grid is invalid; KeyboardInterrupt after recording
      the interrupted cell.
    """
    root = pathlib.Path(root)
    cells = expand(grid, root)
    root.mkdir(parents=True, exist_ok=True)
    if compile_cache:
        jax.config.update("jax_compilation_cache_dir", str(compile_cache))
    started = time.perf_counter()
    record: dict[str, Any] = {
        "grid": json.loads(grid.to_json_best_effort()),
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
            elif cell.finished():
                _skip_or_fail(cell, entry)
            else:
                try:
                    runner(cell)
                    entry["status"] = "done"
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
            if entry["status"] in ("failed", "blocked"):
                unusable.add(cell.name)
                if entry["status"] == "failed":
                    bar.write(f"FAILED {cell.name}: {entry['error']}")
            bar.update(1)
    except KeyboardInterrupt:
        entry.update(status="interrupted", wall_s=round(time.perf_counter() - start, 2))
        raise
    finally:
        bar.close()
        _save(root, record, started)
    return record


def _skip_or_fail(cell: Cell, entry: dict[str, Any]) -> None:
    """A finished cell is skipped, unless it was made with another config than the grid's."""
    new = pretrain.json_config(cell.config)
    old_path = cell.workdir / writers.CONFIG_FILE
    old = json.loads(old_path.read_text()) if old_path.exists() else new
    # The same pretraining run, named through a relative or an absolute --root.
    same = [pathlib.Path(c["init"]["workdir"]).resolve() for c in (old, new)]
    if old["init"]["workdir"] and new["init"]["workdir"] and same[0] == same[1]:
        new["init"]["workdir"] = old["init"]["workdir"]
    try:
        writers.check_config_matches(cell.workdir, new)
        entry["status"] = "skipped"
    except ValueError as e:
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
    grid, root = holders["grid"].value, pathlib.Path(holders["root"].value)
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


if __name__ == "__main__":
    from absl import app

    _FLAGS = define_flags(default_grid=None, default_root=None)

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        record = run_from_flags(_FLAGS, "experiments.sweep")
        if record is not None:
            print(summary_text(record))
            if failures(record):
                sys.exit(1)

    app.run(main)
