"""A PNG of original images and their two augmented views, to check augmentation by eye."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ssljax.augment import ViewParams, normalize, two_views

_ROW_LABELS = ("original", "view 1", "view 2")
_two_views = jax.jit(two_views, static_argnums=(2, 3))


def save_views_grid(
    images: np.ndarray,
    p1: ViewParams,
    p2: ViewParams,
    key: jax.Array,
    path: str | pathlib.Path,
    *,
    n: int = 8,
    title: str | None = None,
) -> pathlib.Path:
    """Writes a grid (rows: original, view 1, view 2; one column per image) to `path`.

    images: uint8 [N, H, W, C] with C = 1 or 3; the first min(n, N) are shown. Views are made
    by `two_views(key, ...)`, exactly as in training, and mapped back to [0, 1] for display.
    Returns the path written; its parent folders are created.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"save_views_grid: expected uint8 [N, H, W, C] with C in (1, 3), got "
            f"{images.dtype} {images.shape}"
        )
    if n < 1 or len(images) == 0:
        raise ValueError(f"save_views_grid: nothing to show (n={n}, {len(images)} images)")
    batch = images[: min(n, len(images))]
    rows = [normalize(batch), *_two_views(key, batch, p1, p2)]
    # float32 [3, n, H, W, C] in [0, 1]: undo the mean-0.5 / std-0.5 normalisation.
    grid = np.clip(np.stack([np.asarray(r) for r in rows]) * 0.5 + 0.5, 0.0, 1.0)
    grey = grid.shape[-1] == 1

    count = len(batch)
    fig = Figure(figsize=(1.4 * count + 0.8, 1.4 * len(rows) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), count, squeeze=False)
    for r, label in enumerate(_ROW_LABELS):
        for c in range(count):
            ax = axes[r, c]
            pixels = grid[r, c, ..., 0] if grey else grid[r, c]
            ax.imshow(pixels, cmap="gray" if grey else None, vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label)
    height, width = images.shape[1:3]
    fig.suptitle(title or f"{count} images ({height}x{width}) and their two augmented views")
    fig.tight_layout()

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def preview_config(config, path: str | pathlib.Path, n: int = 8) -> pathlib.Path:
    """The augmentation preview of a run config: its dataset's first `n` training images and
    the two views its `config.augment` settings make (`launch.py --mode=preview`)."""
    from ssljax.data import load_dataset

    data = load_dataset(config.data)
    p1, p2 = (ViewParams.from_config(v) for v in (config.augment.view1, config.augment.view2))
    title = f"{data.name} {data.size}px, {config.method}: original / view 1 / view 2"
    return save_views_grid(
        data.train.images[:n], p1, p2, jax.random.key(config.seed), path, n=n, title=title
    )
