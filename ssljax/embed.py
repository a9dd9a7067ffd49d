"""`launch.py --mode=embed`: the features of every image of a dataset, for your own analysis.

    python launch.py --mode=embed --config=configs/barlow.py --config.data.folder=DIR \
        --config.init.workdir=RUN --workdir=W

writes to W (replacing earlier ones, atomically):
  embeddings.npy      float32 [N, F]: the frozen encoder's features, rows train then val then
                      test, each split in its stored order (a folder's: its manifest's);
  embeddings.csv      row, split, index (within the split), file (a folder's path, relative
                      to it; empty for .npz datasets), label (class name; for multi-label the
                      positive names joined by '|'; empty when unlabelled);
  embeddings_map.png  the first two principal components, coloured by label.
The encoder is the one evaluation would score: `config.init.workdir`'s, with BatchNorm
statistics re-estimated on up to `eval.bn_images` train images (`evaluate/frozen.py`).
"""

import csv
import io
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from ssljax import checkpoint, entry, parallel, plots, writers
from ssljax.data import SPLITS, Dataset, registry, sources
from ssljax.errors import ConfigError
from ssljax.evaluate import frozen, setup

EMBEDDINGS_FILE = "embeddings.npy"
CSV_FILE = "embeddings.csv"
MAP_FILE = "embeddings_map.png"


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Embeds every image of `config.data` with `config.init.workdir`'s encoder into
    `workdir`, through `ssljax.entry` (config validated, workdir checked and held, once);
    returns {'rows', 'features', 'files'}."""
    return entry.run(config, workdir, job)


def job(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
    """`run`'s work, for `ssljax.entry`: a valid config, a checked and held workdir."""
    if not config.init.workdir:
        raise ConfigError(
            "config.init.workdir is empty: --mode=embed needs the pretraining run whose "
            "encoder embeds the images (--config.init.workdir=RUN)"
        )
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.eval.batch_size, mesh, key="eval.batch_size")
    size = sources.declared_size(config.data)
    if size is not None:  # before converting a folder at a size the encoder never saw
        _check_size(config, size)
    data = sources.open_dataset(config.data)
    _check_size(config, data.size)
    encoder = setup.build_encoder(config, data.size)
    init_vars, init_info = setup.load_init(config, encoder, data.train.images.shape[1:])
    features = frozen.features(config, data, encoder, init_vars, init_info, mesh)
    embeddings = np.concatenate([features[s] for s in SPLITS]).astype(np.float32)
    table = rows(data, data.files)
    out = {
        "rows": len(table),
        "features": int(embeddings.shape[1]),
        "files": [str(workdir / f) for f in (EMBEDDINGS_FILE, CSV_FILE, MAP_FILE)],
    }
    if jax.process_index() == 0:
        writers.atomic_write(workdir / EMBEDDINGS_FILE, lambda f: np.save(f, embeddings))
        writers.atomic_write(workdir / CSV_FILE, lambda f: f.write(_csv_text(table).encode()))
        title = f"{data.name} {data.size}px: {len(table)} images, {init_info['workdir']}"
        unlabelled = data.task == registry.UNLABELLED
        groups = [r["split"] if unlabelled else r["label"] for r in table]
        plots.embedding_map(embeddings, groups, workdir / MAP_FILE, title)
        print(
            f"wrote {len(table)} embeddings ({embeddings.shape[1]} features) of {data.name} "
            f"to {workdir / EMBEDDINGS_FILE}, rows named in {CSV_FILE}, map in {MAP_FILE}"
        )
    return out


def _check_size(config: ml_collections.ConfigDict, size: int) -> None:
    """ConfigError when `config.init.workdir`'s run pretrained at another size than `size`
    (its features at another size would come without a word)."""
    run_config = checkpoint.run_config_file(config.init.workdir)
    if run_config is None:
        return  # an encoder export without its run: the size is not known
    theirs = writers.read_config(run_config.parent)["data"]["size"]
    if theirs != size:
        raise ConfigError(
            f"--mode=embed: the encoder of {config.init.workdir} was pretrained at {theirs} px "
            f"and data.size={size}; embed at the size it learned: --config.data.size={theirs}"
        )


def rows(data: Dataset, files: dict | None) -> list[dict[str, Any]]:
    """One record per image, in the order of the embeddings' rows."""
    out = []
    for split in SPLITS:
        labels = data.splits[split].labels
        for i in range(len(data.splits[split])):
            out.append(
                {
                    "row": len(out),
                    "split": split,
                    "index": i,
                    "file": files[split][i] if files else "",
                    "label": _label_text(data, labels[i]),
                }
            )
    return out


def _label_text(data: Dataset, label: np.ndarray) -> str:
    if data.task == registry.UNLABELLED:
        return ""
    if data.task == registry.MULTI_LABEL:
        return "|".join(n for n, v in zip(data.label_names, label, strict=True) if v)
    return data.label_names[int(label)]


def _csv_text(table: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["row", "split", "index", "file", "label"])
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()
