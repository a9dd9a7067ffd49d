"""A PNG of training images and their two augmented views, to check augmentation by eye.

The preview of a run config (`launch.py --mode=preview`) shows what step 0 of its pretraining
augments: the batch `batches.train_batch_indices(seed, 0, ...)` under the key of step 0
(`steps.derive_keys(seed)` then `fold_in(train_key, 0)`, as the train step derives it).
"""

from __future__ import annotations

import pathlib

import jax
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ssljax import methods, steps
from ssljax.augment import ViewParams, normalize, two_views
from ssljax.data import batches, sources

_ROW_LABELS = ("original", "view 1", "view 2")
_two_views = jax.jit(two_views, static_argnums=(2, 3))


def step0_batch(config: ml_collections.ConfigDict, train_images: np.ndarray):
    """What training step 0 augments: (images uint8 [B, H, W, C], key).

    Args:
      train_images: uint8 [N, H, W, C], the training split: an array, or a
        `pipeline.RecordImages` (data.source=tfds), of which only the batch's rows are read.
    Returns:
      The global batch of step 0 (B = config.train.batch_size) and the key the train step
      draws both views from: `fold_in(train_key, 0)`.
    """
    n, batch_size = len(train_images), config.train.batch_size
    indices = batches.train_batch_indices(config.seed, 0, n, batch_size)
    _, train_key = steps.derive_keys(config.seed)
    return np.asarray(train_images[indices]), jax.random.fold_in(train_key, 0)


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
    by `two_views(key, images)` of all N images, as training augments its whole batch, and
    mapped back to [0, 1] for display.
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
    count = min(n, len(images))
    rows = [normalize(images[:count]), *(v[:count] for v in _two_views(key, images, p1, p2))]
    # float32 [3, n, H, W, C] in [0, 1]: undo the mean-0.5 / std-0.5 normalisation.
    grid = np.clip(np.stack([np.asarray(r) for r in rows]) * 0.5 + 0.5, 0.0, 1.0)
    grey = grid.shape[-1] == 1

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
    """The augmentation preview of a run config: the first `n` images of the batch of
    training step 0 and the two views step 0 makes of them (`step0_batch`)."""
    data = sources.open_dataset(config.data)
    config = batches.fit_to_split(config, len(data.train.images), jax.device_count())
    p1, p2 = methods.views(config)
    images, key = step0_batch(config, data.train.images)
    title = f"{data.name} {data.size}px, {config.method}, step 0: original / view 1 / view 2"
    return save_views_grid(images, p1, p2, key, path, n=n, title=title)


PREVIEW_FILE = "augment_preview.png"


def job(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> pathlib.Path:
    """`launch.py --mode=preview` under `ssljax.entry` (no lock: it writes one PNG):
    WORKDIR/augment_preview.png, said in one line."""
    path = preview_config(config, workdir / PREVIEW_FILE)
    print(f"wrote {path}")
    return path
