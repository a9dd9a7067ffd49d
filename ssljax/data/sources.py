"""The one way into the data: `open_dataset(config.data)`, whatever `config.data` names.

What a config names is one of three kinds (`kind`): a registry dataset (`data.name` at
`data.size`), a user's .npz (`data.path`), or a folder of images (`data.folder`, converted
here, once, into such an .npz: `folder_as_file`). This module is the only one that branches
on the kind; `check_config` is the kind's part of `validation.validate`.

Where its images come from is `config.data.source` = memory | tfds | auto. `memory` loads the
whole .npz (`load.load_dataset`); `tfds` builds (once) and opens the array_record form
(`tfds_medmnist.prepare`) and leaves the train split on disk, read batch by batch
(`pipeline.RecordImages`); val and test, small, are read into memory. `auto` is memory when
the train images fit `data.memory_budget_gb`, tfds otherwise.
"""

import math
import pathlib
import zipfile

import ml_collections
import numpy as np

from ssljax.data import folder, imagefile, load, npzstream, pipeline, registry
from ssljax.errors import ConfigError

SOURCES = ("memory", "tfds", "auto")
# What `config.data` names: a registry dataset, a user's .npz, a folder of images.
REGISTRY, PATH, FOLDER = "registry", "path", "folder"


def kind(data_config: ml_collections.ConfigDict) -> str:
    """`FOLDER` (data.folder set), `PATH` (data.path set) or `REGISTRY`."""
    if data_config.get("folder"):
        return FOLDER
    return PATH if data_config.path else REGISTRY


def declared_size(data_config: ml_collections.ConfigDict) -> int | None:
    """The image size known before anything is opened: `data.size` for a registry dataset or
    a folder (converted at that size), None for a user's .npz (its size is the file's)."""
    return None if kind(data_config) == PATH else data_config.size


def _require(ok: bool, key: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"config.{key}={value!r}: {why}")


def check_config(d: ml_collections.ConfigDict) -> None:
    """ConfigError naming the key for an impossible `config.data` of its kind, and for
    `data.source`; reads nothing but the folder's and labels file's existence."""
    what = kind(d)
    if what == FOLDER:
        _check_folder(d)
    elif what == REGISTRY:
        _require(d.name in registry.DATASETS, "data.name", d.name, _one_of(registry.DATASETS))
        _require(d.size in registry.SIZES, "data.size", d.size, _one_of(registry.SIZES))
    else:
        _require(d.task in registry.TASKS, "data.task", d.task, _one_of(registry.TASKS))
    _require(d.source in SOURCES, "data.source", d.source, _one_of(SOURCES))


def _one_of(valid) -> str:
    return f"must be one of {list(valid)}"


def _check_folder(d: ml_collections.ConfigDict) -> None:
    """The `data.folder` keys (a folder of images, `ssljax/data/folder.py`)."""
    _require(not d.path, "data.path", d.path, "set data.path or data.folder, not both")
    folder.source_folder(d)
    folder.labels_file(d)
    _require(8 <= d.size <= 1024, "data.size", d.size, "must be in [8, 1024] pixels")
    _require(d.resize in imagefile.RESIZES, "data.resize", d.resize, f"one of {imagefile.RESIZES}")
    _require(d.channels in (0, 1, 3), "data.channels", d.channels, "must be 0 (auto), 1 or 3")
    _require(d.min_size >= 0, "data.min_size", d.min_size, "must be >= 0")
    _require(d.max_pixels >= d.size**2, "data.max_pixels", d.max_pixels, "must be >= data.size**2")
    _require(d.task in ("", *registry.TASKS), "data.task", d.task, "'' (inferred) or a task")
    f = tuple(d.split_fractions)
    _require(
        len(f) == 3 and min(f) >= 0 and f[0] > 0 and math.isclose(sum(f), 1.0),
        "data.split_fractions",
        f,
        "three fractions (train, val, test), train > 0, summing to 1",
    )


def train_bytes(data_config: ml_collections.ConfigDict) -> int:
    """Bytes of the train images `config.data` names (from the registry, or the file's header;
    0 when the header cannot be read).

    Raises:
      ConfigError: `data.path` is not a file.
    """
    if kind(data_config) == FOLDER:
        data_config = folder_as_file(data_config, progress=False)[0]
    if data_config.path:
        path = pathlib.Path(data_config.path).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.path={str(path)!r} does not exist or is not a file")
        try:
            shape, dtype = npzstream.member_info(path, "train_images")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            # Unreadable: 0 sends `auto` to memory, whose loader (`load.load_npz`) names
            # exactly what is wrong with the file.
            return 0
        return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    info = registry.get_info(data_config.name)
    registry.check_size(data_config.size)
    return info.n_samples["train"] * data_config.size**2 * info.n_channels


def resolve_source(data_config: ml_collections.ConfigDict) -> str:
    """'memory' or 'tfds': `data.source`, with 'auto' decided by `data.memory_budget_gb`."""
    if data_config.source != "auto":
        return data_config.source
    fits = train_bytes(data_config) <= data_config.memory_budget_gb * (1 << 30)
    return "memory" if fits else "tfds"


def open_dataset(data_config: ml_collections.ConfigDict, progress: bool = True) -> load.Dataset:
    """The dataset `config.data` names, from the source `resolve_source` picks.

    Images are uint8 [N, H, W, C], labels int32 [N] or [N, L]. With tfds,
    `dataset.train.images` is a `pipeline.RecordImages` (read on demand) and the other splits
    are arrays. An image folder's dataset goes by the folder's own name and class names, and
    lists each split's files in row order (`Dataset.files`).
    """
    manifest = None
    if kind(data_config) == FOLDER:  # converted (or its conversion checked) once, here
        data_config, manifest = folder_as_file(data_config, progress)
    if resolve_source(data_config) == "memory":
        if manifest is None:
            return load.load_dataset(data_config, progress=progress)
        return folder.converted_dataset(pathlib.Path(data_config.path), manifest)
    from ssljax.data import tfds_medmnist  # TFDS is imported only when used

    builder = tfds_medmnist.prepare(data_config, progress=progress)
    c = builder.builder_config
    splits = {}
    for split in load.SPLITS:
        images = pipeline.RecordImages(builder.as_data_source(split=split))
        labels = images.labels()
        splits[split] = load.Split(images=images if split == "train" else images[:], labels=labels)
    if c.dataset:
        name = c.dataset
    elif data_config.name in registry.DATASETS:
        name = pathlib.Path(data_config.path).stem
    else:
        name = data_config.name
    label_names, files = c.label_names, None
    if manifest is not None:  # the folder's own names, not the file's inferred ones
        name, label_names = manifest["name"], tuple(manifest["label_names"])
        files = folder.manifest_files(manifest)
    return load.Dataset(
        name=name,
        size=c.image_shape[0],
        task=c.task,
        label_names=label_names,
        n_channels=c.image_shape[2],
        num_outputs=registry.num_outputs(c.task, label_names),
        splits=splits,
        files=files,
    )


def folder_as_file(
    data_config: ml_collections.ConfigDict, progress: bool = True
) -> tuple[ml_collections.ConfigDict, dict]:
    """`data.folder`, converted once (`folder.convert`), as the config of a user's .npz
    (data.path, data.task, data.name set from the conversion), and the folder's manifest."""
    path, manifest = folder.convert(data_config, progress)
    config = ml_collections.ConfigDict(data_config.to_dict())
    config.folder, config.path = "", str(path)
    config.task, config.name = manifest["task"], manifest["name"]
    return config, manifest
