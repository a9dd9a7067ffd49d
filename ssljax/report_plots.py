"""The report's figures, from the files of finished runs only.

Label efficiency and pretraining curves come from numbers `ssljax.report` collected. The
Barlow Twins cross-correlation and the 2D embeddings come from the arrays each pretraining
run wrote at its end (`ssljax.representations`, read here with numpy alone): the report never
rebuilds a model, and imports no JAX.
"""

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ssljax import facts, plots  # noqa: E402

# Methods in a fixed order and colour across every figure.
METHOD_STYLE = facts.METHOD_STYLE
# Report figures hold many panels; 110 dpi keeps their PNGs small.
_DPI = 110


def _style(method: str) -> tuple[str | None, str]:
    return METHOD_STYLE.get(method, (None, method))


def method_name(method: str) -> str:
    """'barlow_twins' -> 'Barlow Twins', as figures label it."""
    return _style(method)[1]


def label_efficiency(rows: Sequence[dict[str, Any]], path: str | pathlib.Path) -> pathlib.Path:
    """Test AUC vs label fraction (log x), a line per method with seed std as error bars;
    one panel per (dataset, protocol).

    Args:
      rows: aggregated table rows (keys dataset, model, protocol, method, label_fraction,
        auc_mean, auc_std; auc_std None for a single seed).
    """
    # Rows come in the report's order (dataset, model, protocol), which the panels keep.
    panels = list(dict.fromkeys((r["dataset"], r["model"], r["protocol"]) for r in rows))
    cols = min(3, len(panels))
    n_rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        n_rows, cols, figsize=(4.4 * cols, 3.4 * n_rows), squeeze=False, layout="constrained"
    )
    for ax, (dataset, model, protocol) in zip(axes.flat, panels, strict=False):
        mine = [
            r
            for r in rows
            if (r["dataset"], r["model"], r["protocol"]) == (dataset, model, protocol)
        ]
        for method in sorted({r["method"] for r in mine}, key=_method_order):
            pts = sorted(
                (r for r in mine if r["method"] == method), key=lambda r: r["label_fraction"]
            )
            color, label = _style(method)
            ax.errorbar(
                [r["label_fraction"] for r in pts],
                [r["auc_mean"] for r in pts],
                yerr=[r["auc_std"] or 0.0 for r in pts],
                marker="o",
                capsize=3,
                color=color,
                label=label,
            )
        ax.set_xscale("log")
        ax.set_xlabel("label fraction")
        ax.set_ylabel("test AUC")
        ax.set_title(f"{dataset} · {protocol} · {model}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    return plots.save_figure(fig, path, dpi=_DPI)


def _method_order(method: str) -> tuple[int, str]:
    order = list(METHOD_STYLE)
    return (order.index(method) if method in order else len(order), method)


def pretraining_curves(runs: Sequence[dict[str, Any]], path: str | pathlib.Path) -> pathlib.Path:
    """Loss vs step (log y), the kNN monitor (val ACC and AUC) vs epoch, and the encoder's
    weight change since initialisation vs step (log y; conv kernels solid, BatchNorm scales
    dashed, `ssljax.diagnostics`): a row per (dataset, method), a line per seed.

    Args:
      runs: dicts with dataset, method, seed and records (metrics.jsonl, as dicts).
    """
    groups = sorted({(r["dataset"], r["method"]) for r in runs})
    fig, axes = plt.subplots(
        len(groups), 3, figsize=(13.5, 3 * len(groups)), squeeze=False, layout="constrained"
    )
    for (loss_ax, knn_ax, change_ax), (dataset, method) in zip(axes, groups, strict=True):
        mine = sorted(
            (r for r in runs if (r["dataset"], r["method"]) == (dataset, method)),
            key=lambda r: r["seed"],
        )
        for i, run in enumerate(mine):
            color = f"C{i % 10}"
            losses = [r for r in run["records"] if "loss" in r]
            knn = [r for r in run["records"] if "knn_acc" in r]
            loss_ax.plot(
                [r["step"] for r in losses],
                [r["loss"] for r in losses],
                color=color,
                label=f"seed {run['seed']}",
            )
            for key, ls in (("knn_acc", "-"), ("knn_auc", "--")):
                knn_ax.plot(
                    [r["epoch"] for r in knn],
                    [r[key] for r in knn],
                    ls,
                    color=color,
                    marker="o",
                    label=f"{key[4:].upper()} seed {run['seed']}",
                )
            _plot_weight_change(change_ax, run["records"], color, run["seed"])
        loss_ax.set_yscale("log")
        loss_ax.set(xlabel="step", ylabel="loss", title=f"{dataset} · {_style(method)[1]} loss")
        knn_ax.set(
            xlabel="epoch", ylabel="kNN on val", title=f"{dataset} · {_style(method)[1]} kNN"
        )
        change_ax.set(
            xlabel="step",
            ylabel="||w - w0|| / ||w0||, median",
            title=f"{dataset} · {_style(method)[1]} weight change",
        )
        if not change_ax.has_data():
            change_ax.text(0.5, 0.5, "not logged", ha="center", transform=change_ax.transAxes)
        for ax in (loss_ax, knn_ax, change_ax):
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=7)
    return plots.save_figure(fig, path, dpi=_DPI)


def _plot_weight_change(ax, records: Sequence[dict[str, Any]], color: str, seed: int) -> None:
    """`weight_change/conv` (solid) and `weight_change/bn_scale` (dashed) vs step; runs made
    before these were logged have none and leave the panel empty."""
    for key, ls, name in (("conv", "-", "conv"), ("bn_scale", "--", "BN scale")):
        pts = [r for r in records if math.isfinite(r.get(f"weight_change/{key}", math.nan))]
        if pts:
            ax.plot(
                [r["step"] for r in pts],
                [r[f"weight_change/{key}"] for r in pts],
                ls,
                color=color,
                label=f"{name} seed {seed}",
            )
            ax.set_yscale("log")


def model_figures(
    pretrains: Sequence[dict[str, Any]],
    out: pathlib.Path,
    paths: dict[str, pathlib.Path],
    notes: list[str],
) -> None:
    """Cross-correlation and embedding figures per dataset, from the arrays the lowest seed
    of each method wrote (`ssljax.representations`), into `out`; adds each figure to `paths`,
    and a line to `notes` for a figure that could not be drawn (the tables must not be lost
    to a figure).

    Args:
      pretrains: pretraining runs as `ssljax.report.collect` finds them.
    """

    def attempt(name: str, draw) -> None:
        try:
            paths[name] = draw(out / f"{name}.png")
        except Exception as e:  # noqa: BLE001 - a figure must not cost the tables
            notes.append(f"{name}.png could not be drawn: {type(e).__name__}: {e}")

    def correlation(run: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
        arrays = _arrays(run, facts.CROSS_CORRELATION)
        panels = [
            (
                name,
                {k: arrays[f"{when}_{k}"] for k in ("block", "mean_diag", "mean_abs_off", "dims")},
            )
            for name, when in (("fresh init", "init"), ("after pretraining", "final"))
        ]
        title = f"Barlow Twins cross-correlation, {run['dataset']}, seed {run['seed']}, val batch"
        return plots.cross_correlation_figure(panels, path, title)

    def embeddings(runs: dict[str, dict], path: pathlib.Path) -> pathlib.Path:
        first = next(iter(runs.values()))
        arrays = {m: _arrays(r, facts.EMBEDDINGS) for m, r in runs.items()}
        # Random init with the architecture and seed of the first pretraining run.
        init = arrays[next(iter(runs))]
        panels = [(method_name("random"), init["init"], init["classes"])]
        panels += [(method_name(m), a["final"], a["classes"]) for m, a in arrays.items()]
        title = f"PCA of frozen test features, {first['dataset']}"
        return plots.embeddings_figure(panels, list(init["label_names"]), path, title)

    finished = [p for p in pretrains if (pathlib.Path(p["workdir"]) / "encoder").is_dir()]
    for dataset in sorted({p["dataset"] for p in finished}):
        runs: dict[str, dict] = {}
        for p in sorted(finished, key=lambda p: p["seed"]):
            if p["dataset"] == dataset:
                runs.setdefault(p["method"], p)
        if "barlow_twins" in runs:
            attempt(
                f"cross_correlation_{dataset}",
                lambda path, r=runs["barlow_twins"]: correlation(r, path),
            )
        attempt(f"embeddings_{dataset}", lambda path, r=runs: embeddings(r, path))


def _arrays(run: dict[str, Any], name: str) -> dict[str, Any]:
    """A pretraining run's NAME.npz; FileNotFoundError saying why it may be missing."""
    path = pathlib.Path(run["workdir"]) / f"{name}.npz"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing (runs made before pretraining wrote it have none)"
        )
    with np.load(path) as f:  # as `representations.load` reads it
        return dict(f)
