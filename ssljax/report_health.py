"""The report's evidence that its runs were long enough: fine-tuning and pretraining health.

Two claims stand behind every gain the report shows, and this module puts the numbers
behind them in report.md, read from the workdirs alone:

- "val AUC has plateaued for both arms at every label budget": for the fine-tuning runs the
  learning-rate selection kept, `finetune_curves.png` (val AUC vs epoch, mean over seeds with a
  min..max band) and the section "Fine-tuning budget: has val AUC plateaued?" (best epochs and
  the gain of the last third of training, `plateau_rows`).
- "pretraining learned": the section "Pretraining health" and `pretraining.csv`, one line
  per pretraining run (`health_rows`): its verdict (`ssljax.health`: healthy / warning /
  failed, and why), the final loss, the mean diagonal of the cross-correlation (Barlow
  Twins) or positive-pair accuracy (SimCLR), the conv kernels' angle to their
  initialisation, and kNN AUC and RankMe at step 0 and at the end.

Runs made before a value was logged show '–' for it; nothing here raises on a missing key.
"""

import csv
import logging
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ssljax import files, plots, results  # noqa: E402
from ssljax.errors import DataError  # noqa: E402
from ssljax.report_plots import METHOD_STYLE  # noqa: E402
from ssljax.report_tables import method_label  # noqa: E402

FINETUNE = "finetune"
PLATEAU_TITLE = "## Fine-tuning budget: has val AUC plateaued?"
HEALTH_TITLE = "## Pretraining health"
# (csv column, metrics.jsonl key, when): "end" is the last finite value a record holds,
# "step0" the value of the step-0 record (the monitor before any update).
HEALTH_FIELDS = (
    ("final_loss", "loss", "end"),
    ("param_norm_first", "param_norm", "first"),
    ("param_norm_final", "param_norm", "end"),
    ("weight_change_conv", "weight_change/conv", "end"),
    ("weight_change_bn_scale", "weight_change/bn_scale", "end"),
    ("weight_angle_conv", "weight_angle/conv", "end"),
    ("corr_diag_mean_final", "corr_diag_mean", "end"),
    ("contrastive_acc_final", "contrastive_acc", "end"),
    ("knn_auc_step0", "knn_auc", "step0"),
    ("knn_auc_final", "knn_auc", "end"),
    ("embedding_rankme_step0", "embedding/rankme", "step0"),
    ("embedding_rankme_final", "embedding/rankme", "end"),
    ("features_rankme_step0", "features/rankme", "step0"),
    ("features_rankme_final", "features/rankme", "end"),
)
HEALTH_CSV_FIELDS = (
    "workdir", "dataset", "method", "seed", "steps",
    *(f for f, _, _ in HEALTH_FIELDS), "verdict", "reasons",
)  # fmt: skip
_DPI = 110


def _number(x: Any) -> float | None:
    """x as a float when it is a finite number, else None (missing, null, NaN, text)."""
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


def last_third_start(epochs: int) -> int:
    """The last epoch of the first two thirds: the last third is the last round(E/3)
    epochs, at least one (E=30: epochs 21-30; E=10: 8-10; E=2: 2)."""
    return epochs - max(1, round(epochs / 3))


def last_third_gain(curve: Sequence[tuple[int, float]], epochs: int) -> float | None:
    """Gain of the last third: max val AUC over the epochs after `last_third_start(epochs)`
    minus the max over the epochs up to it; None when either part has no point.

    Args:
      curve: (epoch, val AUC) per evaluated epoch (epochs counted from 1).
    """
    cut = last_third_start(epochs)
    early = [auc for e, auc in curve if e <= cut]
    late = [auc for e, auc in curve if e > cut]
    return max(late) - max(early) if early and late else None


def load_finetune(evals: Sequence[dict[str, Any]], chosen: set[str]) -> list[dict[str, Any]]:
    """The fine-tuning runs in `chosen` (workdirs the lr selection kept), each with epochs,
    steps, best_epoch (None where results.json lacks them), curve [(epoch, val AUC)] and
    final_loss (the last logged train loss) from its metrics.jsonl (empty / None without)."""
    runs = []
    for r in evals:
        if r["protocol"] != FINETUNE or r["workdir"] not in chosen:
            continue
        res = results.read(pathlib.Path(r["workdir"]) / results.RESULTS_FILE)
        try:
            records = files.read_metrics(r["workdir"])
        except DataError as e:
            logging.warning("no fine-tuning curve for %s: %s", r["workdir"], e)
            records = []
        points = {}
        for m in records:
            epoch, auc = _number(m.get("epoch")), _number(m.get("val_auc"))
            if epoch is not None and auc is not None:
                points[int(epoch)] = auc
        curve = sorted(points.items())
        losses = [_number(m.get("loss")) for m in records]
        losses = [x for x in losses if x is not None]
        epochs = res.get("epochs") or (res.get("train") or {}).get("epochs")
        epochs = int(epochs) if epochs else (curve[-1][0] if curve else None)
        best = res.get("best_epoch")
        if best is None and curve:  # the first epoch with the highest val AUC, as selected
            best = max(curve, key=lambda p: (p[1], -p[0]))[0]
        runs.append(
            {
                **{k: r[k] for k in ("dataset", "model", "method", "label_fraction", "seed")},
                "epochs": epochs,
                "steps": res.get("steps"),
                "best_epoch": best,
                "curve": curve,
                "final_loss": losses[-1] if losses else None,
            }
        )
    return runs


def _method_order(method: str) -> tuple[int, str]:
    order = list(METHOD_STYLE)
    return (order.index(method) if method in order else len(order), method)


def _group_key(run: dict[str, Any]) -> tuple:
    return (run["dataset"], run["model"], run["label_fraction"], _method_order(run["method"]))


def plateau_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (dataset, model, label fraction, method): n runs, epochs and steps (sorted sets),
    mean best epoch, runs whose best epoch is in the last third (`late`, of `n_best`), and
    the gain of the last third (`last_third_gain`): mean, max and n over seeds, and the mean
    final train loss (`loss_mean`; a run that did not fit its training set shows here)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: (_group_key(r), r["seed"])):
        groups.setdefault(_group_key(run), []).append(run)
    return [
        {"dataset": d, "model": m, "label_fraction": f, "method": method, **_plateau_row(mine)}
        for (d, m, f, (_, method)), mine in groups.items()
    ]


def _plateau_row(mine: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """plateau_rows' numbers of one group's runs (runs without epochs count only in n)."""
    timed = [r for r in mine if r["epochs"]]
    best = [r for r in timed if r["best_epoch"] is not None]
    gains = [last_third_gain(r["curve"], r["epochs"]) for r in timed]
    gains = [g for g in gains if g is not None]
    losses = [r["final_loss"] for r in mine if r.get("final_loss") is not None]
    return {
        "n": len(mine),
        "epochs": sorted({r["epochs"] for r in timed}),
        "steps": sorted({r["steps"] for r in mine if r["steps"] is not None}),
        "best_epoch_mean": float(np.mean([r["best_epoch"] for r in best])) if best else None,
        "n_best": len(best),
        "late": sum(r["best_epoch"] > last_third_start(r["epochs"]) for r in best),
        "gain_mean": float(np.mean(gains)) if gains else None,
        "gain_max": max(gains) if gains else None,
        "gain_n": len(gains),
        "loss_mean": float(np.mean(losses)) if losses else None,
    }


def _values(values: Sequence) -> str:
    return "–" if not values else "/".join(str(v) for v in values)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def plateau_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The markdown section of `plateau_rows`."""
    out = [
        PLATEAU_TITLE,
        "",
        "Fine-tuning runs kept by the learning-rate selection. Gain of the last third: per "
        "seed, the best val AUC over the last third of the epochs minus the best over the "
        "first two thirds, then the mean (and max) over seeds. How to read it: a gain near "
        "0 or negative, with few best epochs in the last third, means val AUC had plateaued "
        "and more epochs would not have helped that arm; a clearly positive gain means it "
        "was still improving and its budget may be too short. The final train loss says "
        "whether the arm fitted its training set at all.",
        "",
    ]
    if not rows:
        return [*out, "No fine-tuning run was selected.", ""]
    out += [
        "| dataset | model | labels | method | runs | epochs | steps | mean best epoch "
        "| best epoch in last third | gain of the last third, mean (max) "
        "| final train loss, mean |",
        "|---|---|---:|---|---:|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        gain = "–"
        if r["gain_mean"] is not None:
            gain = f"{r['gain_mean']:+.4f} ({r['gain_max']:+.4f}, n={r['gain_n']})"
        out.append(
            f"| {r['dataset']} | {r['model']} | {r['label_fraction']:g} "
            f"| {method_label(r['method'])} | {r['n']} | {_values(r['epochs'])} "
            f"| {_values(r['steps'])} | {_fmt(r['best_epoch_mean'], '.1f')} "
            f"| {r['late']}/{r['n_best']} | {gain} | {_fmt(r.get('loss_mean'), '.3g')} |"
        )
    return [*out, ""]


def finetune_curves(runs: Sequence[dict[str, Any]], path: str | pathlib.Path) -> pathlib.Path:
    """Val AUC vs epoch, one panel per (dataset, model, label fraction), a line per method:
    the mean over seeds at each epoch, with a light min..max band.

    Args:
      runs: `load_finetune` runs; those with an empty curve are left out.
    """
    runs = [r for r in runs if r["curve"]]
    panels = sorted({(r["dataset"], r["model"], r["label_fraction"]) for r in runs})
    cols = min(3, len(panels))
    n_rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        n_rows, cols, figsize=(4.4 * cols, 3.4 * n_rows), squeeze=False, layout="constrained"
    )
    for ax, panel in zip(axes.flat, panels, strict=False):
        mine = [r for r in runs if (r["dataset"], r["model"], r["label_fraction"]) == panel]
        for method in sorted({r["method"] for r in mine}, key=_method_order):
            by_epoch: dict[int, list[float]] = {}
            for r in (r for r in mine if r["method"] == method):
                for epoch, auc in r["curve"]:
                    by_epoch.setdefault(epoch, []).append(auc)
            epochs = sorted(by_epoch)
            values = [np.asarray(by_epoch[e]) for e in epochs]
            color, label = METHOD_STYLE.get(method, (None, method_label(method)))
            n = len({r["seed"] for r in mine if r["method"] == method})
            (line,) = ax.plot(
                epochs, [v.mean() for v in values], color=color, label=f"{label}, {n} seeds"
            )
            lo, hi = [v.min() for v in values], [v.max() for v in values]
            ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set(xlabel="epoch", ylabel="val AUC (mean, min..max over seeds)")
        ax.set_title(f"{panel[0]} · {panel[1]} · labels {panel[2]:g}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    return plots.save_figure(fig, path, dpi=_DPI)


def health_row(run: dict[str, Any]) -> dict[str, Any]:
    """One pretraining run ({workdir, dataset, method, seed, records, health}) -> its
    HEALTH_CSV_FIELDS; None for a value no record holds."""
    records = run["records"]
    steps = [s for s in (_number(r.get("step")) for r in records) if s is not None]
    row = {k: run[k] for k in ("workdir", "dataset", "method", "seed")}
    row["steps"] = int(max(steps)) if steps else None
    for field, key, when in HEALTH_FIELDS:
        mine = [r for r in records if r.get("step") == 0] if when == "step0" else records
        values = [v for v in (_number(r.get(key)) for r in mine) if v is not None]
        row[field] = (values[-1] if when == "end" else values[0]) if values else None
    row["verdict"] = run["health"]["verdict"]
    row["reasons"] = "; ".join(run["health"]["reasons"])
    return row


def health_rows(pretrains: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`health_row` of every run, ordered by dataset, method and seed."""
    rows = [health_row(p) for p in pretrains]
    return sorted(rows, key=lambda r: (r["dataset"], _method_order(r["method"]), r["seed"]))


def write_health_csv(rows: Sequence[dict[str, Any]], path: str | pathlib.Path) -> pathlib.Path:
    """`rows` at full precision; empty cells where a run did not log a value."""
    path = pathlib.Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, HEALTH_CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r[k] is None else r[k] for k in HEALTH_CSV_FIELDS})
    return path


def _arrow(row: dict[str, Any], name: str, spec: str) -> str:
    return f"{_fmt(row[f'{name}_step0'], spec)} → {_fmt(row[f'{name}_final'], spec)}"


def health_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The markdown section of `health_rows`."""
    out = [
        HEALTH_TITLE,
        "",
        "Per pretraining run: its health verdict (`ssljax.health`: the objective improved "
        "and, for Barlow Twins, left the collapsed fixed point; embedding and feature "
        "RankMe kept a share of step 0's; kNN val AUC beat the same encoder at step 0), "
        "the last logged loss, the objective (Barlow Twins: mean diagonal of the "
        "cross-correlation, 1 is perfect invariance; SimCLR: positive-pair accuracy), the "
        "conv kernels' median angle to their initialisation (a diagnostic: movement is "
        "not learning), and kNN val AUC and RankMe (projector embeddings, encoder "
        "features) at step 0 → at the end. No gain is worded from a failed run. "
        "'–': not logged.",
        "",
        "| dataset | method | seed | steps | verdict | final loss | objective | conv angle "
        "| kNN val AUC | RankMe embedding | RankMe features | why |",
        "|---|---|---:|---:|---|---:|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        objective = r["corr_diag_mean_final"]
        objective = r["contrastive_acc_final"] if objective is None else objective
        out.append(
            f"| {r['dataset']} | {method_label(r['method'])} | {r['seed']} "
            f"| {_fmt(r['steps'], 'd')} | **{r['verdict']}** | {_fmt(r['final_loss'], '.4g')} "
            f"| {_fmt(objective, '.3f')} | {_fmt(r['weight_angle_conv'], '.1f')} "
            f"| {_arrow(r, 'knn_auc', '.3f')} "
            f"| {_arrow(r, 'embedding_rankme', '.1f')} | {_arrow(r, 'features_rankme', '.1f')} "
            f"| {r['reasons'] if r['verdict'] != 'healthy' else ''} |"
        )
    return [*out, ""]


def sections(
    evals: Sequence[dict[str, Any]],
    chosen: set[str],
    pretrains: Sequence[dict[str, Any]],
    out: pathlib.Path,
    paths: dict[str, pathlib.Path],
) -> list[str]:
    """Writes finetune_curves.png (where a selected fine-tuning run has a curve) and
    pretraining.csv (where there is a pretraining run) into `out`, adding them to `paths`;
    returns the markdown of both sections (each only where it has runs)."""
    lines: list[str] = []
    runs = load_finetune(evals, chosen)
    if runs:
        lines += plateau_lines(plateau_rows(runs))
    if any(r["curve"] for r in runs):
        paths["finetune_curves"] = finetune_curves(runs, out / "finetune_curves.png")
    if pretrains:
        rows = health_rows(pretrains)
        paths["pretraining_csv"] = write_health_csv(rows, out / "pretraining.csv")
        lines += health_lines(rows)
    return lines
