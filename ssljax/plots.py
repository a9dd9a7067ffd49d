"""Figures a person would rather look at than read (matplotlib, Agg backend, PNG)."""

import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ssljax import metrics  # noqa: E402
from ssljax.data import registry  # noqa: E402


def save_figure(fig, path: str | pathlib.Path, dpi: int = 120) -> pathlib.Path:
    """Writes `fig` as a PNG at `path` (folders created) and closes it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _matrix(ax, cm: np.ndarray, names: Sequence[str], title: str) -> None:
    ax.imshow(cm, cmap="Blues")
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), v in np.ndenumerate(cm):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v > threshold else "black",
        )


def confusion_matrices(
    task: str,
    y_true: np.ndarray,
    y_score: np.ndarray,
    label_names: Sequence[str],
    path: str | pathlib.Path,
    title: str = "",
) -> pathlib.Path:
    """Confusion matrix of the predictions MedMNIST's ACC scores (one 2x2 per label for
    multi-label tasks).

    Args:
      y_true: int [N] (or [N, 1]), or 0/1 [N, L] for multi-label.
      y_score: probabilities float [N, C] (or [N, L]).
    """
    y_pred = metrics.predict_labels(task, y_score)
    y_true = np.asarray(y_true)
    short = [n if len(n) <= 18 else n[:16] + "…" for n in label_names]
    if task != registry.MULTI_LABEL:
        k = len(label_names)
        cm = metrics.confusion_matrix(y_true.reshape(-1), y_pred.reshape(-1), k)
        fig, ax = plt.subplots(figsize=(2.5 + 0.45 * k, 2.2 + 0.45 * k))
        _matrix(ax, cm, short, title)
        return save_figure(fig, path)
    n_labels = y_true.shape[1]
    cols = min(n_labels, 5)
    rows = -(-n_labels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n_labels:
            ax.axis("off")
            continue
        cm = metrics.confusion_matrix(y_true[:, i], y_pred[:, i], 2)
        _matrix(ax, cm, ["0", "1"], short[i])
    fig.suptitle(title)
    return save_figure(fig, path)


def embedding_map(
    features: np.ndarray, groups: Sequence[str], path: str | pathlib.Path, title: str = ""
) -> pathlib.Path:
    """A 2D map of features: their first two principal components, one colour per group.

    Args:
      features: float [N, F].
      groups: N names (the label of each row; '' for none); the 19 most frequent get their
        own colour, the rest are drawn grey as 'other'.
    """
    x = np.asarray(features, np.float64)
    x = x - x.mean(0)
    # The principal axes from the F x F covariance: cheap for any N.
    _, vectors = np.linalg.eigh(x.T @ x)
    points = x @ vectors[:, ::-1][:, :2]
    if points.shape[1] < 2:
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    names, counts = np.unique(np.asarray(groups, dtype=object).astype(str), return_counts=True)
    shown = list(names[np.argsort(-counts, kind="stable")][:19])
    fig, ax = plt.subplots(figsize=(6, 5))
    # tab10's distinct colours first, then tab20's lighter shades.
    colours = plt.get_cmap("tab10").colors + plt.get_cmap("tab20").colors[1::2]
    marker = max(1.0, 12.0 / np.sqrt(max(len(x), 1) / 100))
    groups = np.asarray(groups, dtype=object).astype(str)
    other = ~np.isin(groups, shown)
    if other.any():
        ax.scatter(*points[other].T, s=marker, color="0.7", alpha=0.6, label="other", lw=0)
    for i, name in enumerate(shown):
        at = groups == name
        ax.scatter(*points[at].T, s=marker, color=colours[i], alpha=0.7, lw=0, label=name or "—")
    if len(shown) > 1 or other.any():
        ax.legend(fontsize=7, markerscale=max(1.0, 4 / marker), loc="best")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def cross_correlation_figure(
    panels: Sequence[tuple[str, dict[str, np.ndarray]]], path: str | pathlib.Path, title: str
) -> pathlib.Path:
    """Cross-correlation matrices side by side, one per (name, summary) panel; a summary
    (`representations.correlation_summary`) holds the matrix's first dims, `block` float
    [K, K], and its `mean_diag` and `mean_abs_off` over all D dims, and `dims` (D)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    for ax, (name, c) in zip(axes[0], panels, strict=True):
        im = ax.imshow(c["block"], cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(
            f"{name}\nmean diag {float(c['mean_diag']):.2f}, "
            f"mean |off| {float(c['mean_abs_off']):.2f}",
            fontsize=9,
        )
        ax.set_xlabel(f"view 2 dim (first {len(c['block'])} of {int(c['dims'])})")
        ax.set_ylabel("view 1 dim")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)


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
    return save_figure(fig, path, dpi=110)
