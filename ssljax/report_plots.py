"""The report's figures, and the model computations behind two of them.

Plain figures (label efficiency, pretraining curves) only need numbers collected by
`ssljax.report`. The Barlow Twins cross-correlation and the 2D embeddings need a model: they
restore a pretraining run's checkpoint (the projector is not in `encoder/`) or its exported
encoder, and compare it with a fresh initialisation from the same seed.
"""

import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from ssljax import (  # noqa: E402
    augment,
    checkpoint,
    inference,
    methods,
    parallel,
    plots,
    pretrain,
    steps,
    writers,
)
from ssljax.data import batches, load_dataset, registry  # noqa: E402

# Methods in a fixed order and colour across every figure.
METHOD_STYLE = {
    "random": ("tab:gray", "random init"),
    "barlow_twins": ("tab:blue", "Barlow Twins"),
    "simclr": ("tab:orange", "SimCLR"),
}
# Dimensions of the cross-correlation matrix drawn (its summary covers all of them).
CORR_BLOCK = 64
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


def cross_correlation_figure(
    before: np.ndarray, after: np.ndarray, path: str | pathlib.Path, title: str
) -> pathlib.Path:
    """The two [D, D] matrices side by side (first CORR_BLOCK dims), each titled with the
    mean diagonal and mean |off-diagonal| over all D dims."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, c, name in zip(axes, (before, after), ("fresh init", "after pretraining"), strict=True):
        d = c.shape[0]
        off = np.abs(c[~np.eye(d, dtype=bool)]).mean() if d > 1 else 0.0
        im = ax.imshow(c[:CORR_BLOCK, :CORR_BLOCK], cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"{name}\nmean diag {np.diag(c).mean():.2f}, mean |off| {off:.2f}", fontsize=9)
        ax.set_xlabel(f"view 2 dim (first {min(d, CORR_BLOCK)} of {d})")
        ax.set_ylabel("view 1 dim")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path, dpi=_DPI)


def embeddings_figure(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    label_names: Sequence[str],
    path: str | pathlib.Path,
    title: str,
) -> pathlib.Path:
    """2D scatter per panel (title, points float [N, 2], class int [N]) coloured by class."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (name, xy, cls) in zip(axes[0], panels, strict=True):
        for k in np.unique(cls):
            sel = cls == k
            label = label_names[k] if k < len(label_names) else str(k)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.7, color=cmap(k % 10), label=label[:20])
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path, dpi=_DPI)


def load_run_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """A run's config.json as a ConfigDict (JSON lists back to tuples). The data root is
    `$SSLJAX_DATA_DIR` when set, so a run made elsewhere can be plotted here."""
    config = writers.load_config(workdir)
    if os.environ.get("SSLJAX_DATA_DIR"):
        config.data.root = os.environ["SSLJAX_DATA_DIR"]
    return config


def _standardised_cross_correlation(z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    """Barlow Twins' c = z1n.T @ z2n / B, each dim standardised over the batch (biased)."""
    z1, z2 = (np.asarray(z, np.float64) for z in (z1, z2))
    norm = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)  # noqa: E731
    return norm(z1).T @ norm(z2) / len(z1)


def cross_correlation(
    workdir: str | pathlib.Path, max_images: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-correlation matrices float64 [D, D] of a pretraining run's two views, with the
    fresh initialisation of its seed and with its newest checkpoint.

    Both use the same batch (the first `max_images` val images), the same two augmented
    views (the run's view settings, the key of its step 0) and train-mode BatchNorm, as
    the loss saw them.
    """
    config = load_run_config(workdir)
    data = load_dataset(config.data, progress=False)
    train_images = data.splits["train"].images
    steps_per_epoch = batches.steps_per_epoch(len(train_images), config.train.batch_size)
    fns = pretrain.build(config, train_images.shape[1:], steps_per_epoch, parallel.make_mesh())
    init_key, train_key = steps.derive_keys(config.seed)
    fresh = fns.init(init_key)
    # Only read: the run may be live, and the report changes nothing in a workdir.
    ckpt = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep, repair=False)
    try:
        restored = ckpt.restore_latest(fresh)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"{workdir} has no committed checkpoint to restore")
    views = augment.two_views(
        jax.random.fold_in(train_key, 0),
        jnp.asarray(data.splits["val"].images[:max_images]),
        *methods.views(config),
    )

    @jax.jit
    def embed(params, batch_stats, x):
        (_, z), _ = fns.model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return z

    def matrix(state) -> np.ndarray:
        z1, z2 = (np.asarray(embed(state.params, state.batch_stats, x)) for x in views)
        return _standardised_cross_correlation(z1, z2)

    return matrix(fresh), matrix(restored[0])


def pca_2d(features: np.ndarray) -> np.ndarray:
    """features float [N, F] -> their projection on the top 2 principal axes, float [N, 2]."""
    x = np.asarray(features, np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def encoder_features(
    config: ml_collections.ConfigDict, encoder_dir: str | pathlib.Path | None
) -> tuple[np.ndarray, np.ndarray, Sequence[str]]:
    """Frozen-encoder features of the test split: the encoder exported to `encoder_dir`, or
    the random initialisation of `config.seed` (as evaluation builds it) when None.

    Returns (features float32 [N, F], class int [N] (any positive label for multi-label),
    label names).
    """
    data = load_dataset(config.data, progress=False)
    test = data.splits["test"]
    encoder = pretrain.build_model(config, data.size).encoder
    if encoder_dir is None:
        variables = encoder.init(
            steps.derive_keys(config.seed)[0], jnp.zeros((1, *test.images.shape[1:])), train=False
        )
    else:
        variables = checkpoint.load_encoder(encoder_dir)
    mesh = parallel.make_mesh()
    batch = -(-config.eval.batch_size // jax.device_count()) * jax.device_count()
    features = inference.batched_apply(
        jax.jit(steps.make_apply_fn(encoder)),
        variables["params"],
        variables["batch_stats"],
        test.images,
        batch,
        mesh,
    )
    labels = np.asarray(test.labels)
    if data.task == registry.MULTI_LABEL:
        return features, (labels.sum(1) > 0).astype(int), ("no finding", "any finding")
    return features, labels.reshape(-1).astype(int), data.label_names


def model_figures(
    pretrains: Sequence[dict[str, Any]],
    out: pathlib.Path,
    paths: dict[str, pathlib.Path],
    notes: list[str],
) -> None:
    """Cross-correlation and embedding figures per dataset, from the lowest seed of each
    method, into `out`; adds each figure to `paths`, and a line to `notes` for a figure that
    could not be drawn (the tables must not be lost to a figure).

    Args:
      pretrains: pretraining runs as `ssljax.report.collect` finds them.
    """

    def attempt(name: str, draw) -> None:
        try:
            paths[name] = draw(out / f"{name}.png")
        except Exception as e:  # noqa: BLE001 - a figure must not cost the tables
            notes.append(f"{name}.png could not be drawn: {type(e).__name__}: {e}")

    def correlation(run: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
        before, after = cross_correlation(run["workdir"])
        title = f"Barlow Twins cross-correlation, {run['dataset']}, seed {run['seed']}, val batch"
        return cross_correlation_figure(before, after, path, title)

    def embeddings(runs: dict[str, dict], path: pathlib.Path) -> pathlib.Path:
        first = next(iter(runs.values()))
        # Random init with the architecture and seed of the first pretraining run.
        config = load_run_config(first["workdir"])
        panels = []
        for method, workdir in [("random", None), *((m, r["workdir"]) for m, r in runs.items())]:
            features, classes, names = encoder_features(config, workdir)
            panels.append((method_name(method), pca_2d(features), classes))
        title = f"PCA of frozen test features, {first['dataset']}"
        return embeddings_figure(panels, names, path, title)

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
