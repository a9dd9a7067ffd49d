"""A recipe screen: pretrain one method under several recipes, and say which ones learned.

    python -m experiments.screen --grid=experiments/grids/bt_screen.py --root=runs/bt_screen
    python -m experiments.screen --grid=experiments/grids/bt_screen.py --root=runs/bt_screen \
        --grid.recipes='("default", "old")' --grid.common.train.epochs=2   # a fast look

A screen grid (see `experiments/grids/bt_screen.py`) names a method, a dataset, `common`
overrides applied to every run, and `recipes`: name -> dotted overrides on top of them. Each
recipe is pretrained in ROOT/<recipe> (a finished one is kept), then kNN (and, with
`linear`, the linear probe) scores its encoder on test, with the random encoder of the same
width scored once as the baseline (ROOT/random-knn, ROOT/random-linear).
ROOT/screen_curves.png draws each recipe's curves; the table in ROOT/screen.md and
ROOT/screen.jsonl has, per recipe, what says whether it learned: the
objective (loss and, for Barlow Twins, the mean diagonal of the cross-correlation over the
last 5 logs; SimCLR: the positive-pair accuracy), the embedding and feature RankMe at step 0
and at the end, the conv kernels' angle to their initialisation, the kNN monitor's val AUC
at step 0 and at the end, test AUCs, the verdict (`ssljax.health`: the run's health.json,
or for a run made before verdicts existed, its metrics.jsonl judged now) and the wall time.
"""

import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import ml_collections
import numpy as np

from experiments.cells import apply_overrides
from ssljax import (
    evaluate,
    health,
    methods,
    plots,
    pretrain,
    report_runs,
    stats,
    workdirs,
    writers,
)
from ssljax.errors import ConfigError


def recipe_config(grid: ml_collections.ConfigDict, recipe: str) -> ml_collections.ConfigDict:
    """The pretraining config of `recipe`: the method's default, `common`, then the recipe
    (validated once, by the run's entry: `pretrain.run`)."""
    config = methods.default_config(methods.get(grid.method).config, grid.dataset)
    apply_overrides(config, grid.common, "common")
    apply_overrides(config, grid.recipes[recipe], f"recipes.{recipe}")
    return config


def eval_config(
    grid: ml_collections.ConfigDict, protocol: str, init_workdir: str
) -> ml_collections.ConfigDict:
    """The `protocol` config of the screen's dataset and width, from `init_workdir` ('' for
    the random encoder); validated once, by the run's entry (`evaluate.run`)."""
    config = methods.default_config(evaluate.PROTOCOLS[protocol].config, grid.dataset)
    for key in ("data.root", "model.width", "log.progress"):
        section, leaf = key.split(".")
        if leaf in grid.common.get(section, {}):
            config[section][leaf] = grid.common[section][leaf]
    config.init.workdir = init_workdir
    return config


def summarise(workdir: pathlib.Path) -> dict[str, Any]:
    """The screen's columns from a finished pretraining run's metrics.jsonl and verdict."""
    records = writers.read_metrics(workdir)
    logs = [r for r in records if "loss" in r][-health.LAST_LOGS :]
    monitors = [r for r in records if "embedding/rankme" in r]
    mean = lambda key: sum(r[key] for r in logs) / len(logs) if key in logs[-1] else None  # noqa: E731
    first, last = monitors[0], monitors[-1]
    times = [r["time"] for r in records if "time" in r]
    verdict = report_runs.pretraining_health(workdir, writers.read_config(workdir), records)
    return {
        "loss": mean("loss"),
        "corr_diag_mean": mean("corr_diag_mean"),
        "contrastive_acc": mean("contrastive_acc"),
        "embedding_rankme": (first["embedding/rankme"], last["embedding/rankme"]),
        "features_rankme": (first["features/rankme"], last["features/rankme"]),
        "weight_angle_conv": logs[-1]["weight_angle/conv"],
        "knn_val_auc": (first.get("knn_auc"), last.get("knn_auc")),
        "verdict": verdict["verdict"],
        "reason": "; ".join(verdict["reasons"]) if verdict["verdict"] != "healthy" else "",
        # From the step-0 monitor to the last record: training and its monitors.
        "wall_s": round(times[-1] - times[0]) if times else None,
    }


def _evaluate(grid, protocol: str, name: str, init_workdir: str, root: pathlib.Path) -> dict:
    """{val, test} AUC of `name`'s encoder under `protocol`, and for a pretrained one the
    test AUC gain over the random encoder with its 95% paired bootstrap interval over test
    images (`ssljax.stats`, 1,000 resamples)."""
    workdir = root / f"{name}-{protocol}"
    if not (workdir / evaluate.RESULTS_FILE).exists():
        evaluate.run(eval_config(grid, protocol, init_workdir), workdir)
    with open(workdir / evaluate.RESULTS_FILE) as f:
        results = json.load(f)
    out = {"val": results["val"]["auc"], "test": results["test"]["auc"]}
    if init_workdir:
        ours, base = (
            np.load(root / d / evaluate.TEST_SCORES_FILE)
            for d in (workdir.name, f"random-{protocol}")
        )
        boot = stats.paired_bootstrap_ci(
            results["task"], ours["labels"], ours["scores"][None], base["scores"][None]
        )["auc"]
        out["gain"] = (boot["mean"], *boot["interval"])
    return out


def run_screen(
    grid: ml_collections.ConfigDict, root: pathlib.Path, only: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Pretrains and scores the recipes of `grid` (those named in `only`, if any) in `root`;
    returns the table's rows."""
    unknown = [r for r in only if r not in grid.recipes]
    if unknown:
        raise ConfigError(f"--only names {unknown}; the grid's recipes are {list(grid.recipes)}")
    protocols = ("knn", "linear") if grid.linear else ("knn",)
    rows = []
    baseline = {p: _evaluate(grid, p, "random", "", root) for p in protocols}
    rows.append({"recipe": "random encoder", **{p: baseline[p] for p in protocols}})
    _write(root, grid, rows)
    for recipe in only or grid.recipes:
        workdir = root / recipe
        if not (workdir / "encoder").exists():
            pretrain.run(recipe_config(grid, recipe), workdir)
        row = {"recipe": recipe, **summarise(workdir)}
        row.update({p: _evaluate(grid, p, recipe, str(workdir), root) for p in protocols})
        rows.append(row)
        _write(root, grid, rows)
    curves(root, [r["recipe"] for r in rows[1:]], root / "screen_curves.png")
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple | list):
        return " -> ".join(_fmt(v, digits) for v in value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """The screen as a Markdown table."""
    cols = [
        ("recipe", "recipe", 0),
        ("loss", "loss (last 5 logs)", 1),
        ("corr_diag_mean", "diag of c", 3),
        ("contrastive_acc", "pos-pair acc", 3),
        ("embedding_rankme", "embedding RankMe", 1),
        ("features_rankme", "feature RankMe", 1),
        ("weight_angle_conv", "conv angle (deg)", 1),
        ("knn_val_auc", "kNN monitor val AUC", 3),
        ("knn", "kNN val / test AUC (test gain over random [95% bootstrap])", 3),
        ("linear", "linear val / test AUC (test gain [95% bootstrap])", 3),
        ("verdict", "verdict", 0),
        ("wall_s", "pretraining wall (s)", 0),
    ]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for key, _, digits in cols:
            v = r.get(key)
            if isinstance(v, dict):
                gain = v.get("gain")
                text = _fmt((v["val"], v["test"]), digits).replace(" -> ", " / ")
                if gain:
                    text += f" ({gain[0]:+.3f} [{gain[1]:+.3f}, {gain[2]:+.3f}])"
                cells.append(text)
                continue
            cells.append(_fmt(v, digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# (metrics.jsonl key, panel title, records it is read from: logs or monitors)
CURVES = (
    ("loss", "loss / collapsed fixed point's", "logs"),
    ("corr_diag_mean", "mean diagonal of c", "logs"),
    ("weight_angle/conv", "conv angle to init (deg)", "logs"),
    ("embedding/rankme", "embedding RankMe (val)", "monitors"),
    ("features/rankme", "feature RankMe (val)", "monitors"),
    ("knn_auc", "kNN monitor val AUC", "monitors"),
)


def curves(root: pathlib.Path, recipes: Sequence[str], path: pathlib.Path) -> pathlib.Path:
    """screen_curves.png: per recipe, the objective, the conv angle, RankMe and the kNN
    monitor against the step (the loss divided by its collapsed fixed point's, Barlow Twins;
    SimCLR's raw)."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for recipe in recipes:
        records = writers.read_metrics(root / recipe)
        floor = health.objective_floor(writers.read_config(root / recipe)) or 1.0
        kinds = {
            "logs": [r for r in records if "loss" in r],
            "monitors": [r for r in records if "embedding/rankme" in r],
        }
        for ax, (key, title, kind) in zip(axes.flat, CURVES, strict=True):
            mine = [r for r in kinds[kind] if r.get(key) is not None]
            scale = floor if key == "loss" else 1.0
            ax.plot([r["step"] for r in mine], [r[key] / scale for r in mine], label=recipe)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("step")
    axes.flat[0].axhline(1.0, color="k", lw=0.8, ls="--")
    axes.flat[0].axhline(health.TRAP_FRACTION, color="k", lw=0.8, ls=":")
    for ax in axes.flat[3:5]:
        ax.set_yscale("log")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return plots.save_figure(fig, path)


def _write(root: pathlib.Path, grid, rows: list[dict[str, Any]]) -> None:
    writers.write_json(root / "screen_grid.json", writers.config_json(grid))
    (root / "screen.md").write_text(table(rows))
    with open(root / "screen.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    from absl import app, flags, logging
    from ml_collections import config_flags

    _GRID = config_flags.DEFINE_config_file("grid", None, "Screen grid (experiments/grids/*).")
    _ROOT = flags.DEFINE_string("root", None, "Folder of the screen's runs.")
    _ONLY = flags.DEFINE_list("only", [], "Run only these recipes (default: all, in order).")
    flags.mark_flags_as_required(["grid", "root"])

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.set_verbosity(logging.WARNING)
        root = workdirs.resolve(_ROOT.value, "--root")
        root.mkdir(parents=True, exist_ok=True)
        rows = run_screen(_GRID.value, root, _ONLY.value)
        sys.stdout.write(table(rows))

    app.run(main)
