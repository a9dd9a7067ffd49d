"""What a pretraining run learned, in pictures: written into its workdir at the run's end.

    cross_correlation.npz/.png  Barlow Twins' cross-correlation of the two views' projector
                                outputs, at the seed's fresh initialisation and after
                                pretraining (`correlation_summary` of each: the first
                                CORR_BLOCK dims and means over all of them)
    embeddings.npz/.png         PCA (2D) of the frozen features of a sample of the test
                                split (`config.eval.figure_images`, a fixed draw), fresh and
                                after, with each image's class

Both use capped samples, so the time a run spends after its last step does not grow with the
dataset (a 400k-image test split, embedded whole twice, took more than 11 minutes).

The report (`ssljax.report_plots`) draws its cross-run figures from these files: it reads
workdirs and never rebuilds a model.
"""

import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from ssljax import augment, facts, parallel, plots, writers
from ssljax.data import registry

CROSS_CORRELATION, EMBEDDINGS = facts.CROSS_CORRELATION, facts.EMBEDDINGS  # NAME.npz / .png
CORR_BLOCK = 64  # dims of the matrix kept and drawn; the means cover all of them
MAX_IMAGES = 512  # val images whose two views make the cross-correlation batch (<= 64 px)
MAX_PIXELS = MAX_IMAGES * 64 * 64  # larger images: fewer of them, one train-mode batch


def standardised_cross_correlation(z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    """Barlow Twins' c = z1n.T @ z2n / B, each dim standardised over the batch (biased):
    z1, z2 float [B, D] -> float64 [D, D]."""
    z1, z2 = (np.asarray(z, np.float64) for z in (z1, z2))
    norm = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)  # noqa: E731
    return norm(z1).T @ norm(z2) / len(z1)


def correlation_summary(c: np.ndarray) -> dict[str, np.ndarray]:
    """c float [D, D] -> block float32 [K, K] (K = min(D, CORR_BLOCK)), mean_diag and
    mean_abs_off (of the off-diagonal entries, 0 when D = 1) over all D dims, dims = D."""
    d = c.shape[0]
    off = np.abs(c[~np.eye(d, dtype=bool)]).mean() if d > 1 else 0.0
    return {
        "block": c[:CORR_BLOCK, :CORR_BLOCK].astype(np.float32),
        "mean_diag": np.float64(np.diag(c).mean()),
        "mean_abs_off": np.float64(off),
        "dims": np.int64(d),
    }


def pca_2d(features: np.ndarray) -> np.ndarray:
    """features float [N, F] -> their projection on the top 2 principal axes, float [N, 2]."""
    x = np.asarray(features, np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def two_view_correlation(
    model: nn.Module, states: Sequence[Any], images: np.ndarray, key: jax.Array, views, mesh
) -> list[np.ndarray]:
    """The cross-correlation float64 [D, D] of each state's projector outputs on two views
    of `images` (uint8 [B, H, W, C], the same on every process), augmented with `key` and
    `views` (ViewParams of view 1 and 2), in train-mode BatchNorm, as the loss saw them.
    The batch is sharded over `mesh` as in training (replicated, every device would hold
    every image's activations: 8x the memory on 8 devices); B is trimmed to a multiple of
    the device count."""
    repl = parallel.replicated(mesh)
    images = images[: len(images) - len(images) % mesh.devices.size]

    @jax.jit
    def embed(params, batch_stats, images, key):
        def z(x):
            (_, out), _ = model.apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return out

        return tuple(z(x) for x in augment.two_views(key, images, *views))

    images = parallel.host_to_global(images[parallel.process_rows(len(images))], mesh)
    key = jax.device_put(key, repl)
    out = []
    for s in states:
        z1, z2 = jax.device_get(embed(s.params, s.batch_stats, images, key))
        out.append(standardised_cross_correlation(z1, z2))
    return out


def classes(task: str, labels: np.ndarray, label_names: Sequence[str]):
    """(class int [N], names) to colour points by: for multi-label, whether any label is
    on; unlabelled data all in one class."""
    labels = np.asarray(labels)
    if task == registry.UNLABELLED:  # labels [N, 0]: one colour
        return np.zeros(len(labels), int), ("unlabelled",)
    if task == registry.MULTI_LABEL:
        return (labels.sum(1) > 0).astype(int), ("no finding", "any finding")
    return labels.reshape(-1).astype(int), tuple(label_names)


def write(
    workdir: pathlib.Path,
    data,
    model: nn.Module,
    states: tuple[Any, Any],
    outputs: Callable[[Any], Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]],
    key: jax.Array,
    views,
    mesh,
    title: str,
    max_images: int = 2048,
) -> None:
    """Writes both .npz files and their PNGs for `states` = (fresh, final); every process
    computes, process 0 writes.

    Args:
      data: the run's `ssljax.data.Dataset`.
      outputs: state -> (images uint8 [N, ...] -> (features float32 [N, F], embeddings)),
        the monitor's apply (BatchNorm statistics re-estimated on train images).
      key, views: the augmentation of the cross-correlation batch (step 0's key).
      max_images: test images embedded for the PCA (`config.eval.figure_images`); 0: all.
    """
    val, test = data.splits["val"], data.splits["test"]
    count = max(64, min(MAX_IMAGES, MAX_PIXELS // data.size**2))  # 512 at 64 px, 64 at 224
    images = val.images[:count]
    corr = two_view_correlation(model, states, images, key, views, mesh)
    rows = sample(len(test), max_images)
    if jax.process_index() == 0:
        print(
            f"end of run: PCA of {len(rows)} of {len(test)} test images, fresh and after "
            f"(eval.figure_images={max_images}), cross-correlation of {len(images)} val images",
            flush=True,
        )
    test_images = np.asarray(test.images[rows]) if len(rows) < len(test) else test.images
    xy = [pca_2d(outputs(s)(test_images)[0]) for s in states]
    cls, label_names = classes(data.task, np.asarray(test.labels)[rows], data.label_names)
    if jax.process_index() == 0:
        save(workdir, corr, xy, cls, label_names, f"{title}, {len(images)} val images")


def sample(n: int, cap: int) -> np.ndarray:
    """Rows of a split of `n` drawn for the figures: int64 [min(n, cap)], sorted, the same
    draw on every process and run (seed 0); all n when `cap` is 0 or >= n."""
    if cap <= 0 or n <= cap:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(0).choice(n, cap, replace=False)).astype(np.int64)


def save(
    workdir: pathlib.Path,
    correlations: Sequence[np.ndarray],
    xy: Sequence[np.ndarray],
    cls: np.ndarray,
    label_names: Sequence[str],
    title: str,
) -> None:
    """Writes the .npz files and PNGs of (fresh, final): cross-correlations float [D, D],
    PCA points float [N, 2], classes int [N] of the test images and their names."""
    names = ("fresh init", "after pretraining")
    summaries = [correlation_summary(c) for c in correlations]
    arrays = {
        f"{w}_{k}": v
        for w, s in zip(("init", "final"), summaries, strict=True)
        for k, v in s.items()
    }
    _save(workdir / f"{CROSS_CORRELATION}.npz", arrays)
    plots.cross_correlation_figure(
        list(zip(names, summaries, strict=True)),
        workdir / f"{CROSS_CORRELATION}.png",
        f"cross-correlation of two views, {title}",
    )
    _save(
        workdir / f"{EMBEDDINGS}.npz",
        {"init": xy[0], "final": xy[1], "classes": cls, "label_names": np.array(label_names)},
    )
    panels = [(n, p, cls) for n, p in zip(names, xy, strict=True)]
    plots.embeddings_figure(
        panels, label_names, workdir / f"{EMBEDDINGS}.png", f"PCA of test features, {title}"
    )


def load(workdir: str | pathlib.Path, name: str) -> dict[str, np.ndarray]:
    """The arrays of WORKDIR/NAME.npz (`CROSS_CORRELATION` or `EMBEDDINGS`)."""
    with np.load(pathlib.Path(workdir) / f"{name}.npz") as f:
        return dict(f)


def _save(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    writers.atomic_write(path, lambda f: np.savez(f, **arrays))
