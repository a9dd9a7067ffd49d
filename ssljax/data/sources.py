"""Where a run's images come from: `config.data.source` = memory | tfds | auto.

`memory` loads the whole .npz (`load.load_dataset`); `tfds` builds (once) and opens the
array_record form (`tfds_medmnist.prepare`) and leaves the train split on disk, read batch by
batch (`pipeline.RecordImages`); val and test, small, are read into memory. `auto` is memory
when the train images fit `data.memory_budget_gb`, tfds otherwise.
"""

import pathlib
import zipfile

import ml_collections
import numpy as np

from ssljax.data import load, npzstream, pipeline, registry
from ssljax.errors import ConfigError

SOURCES = ("memory", "tfds", "auto")


def train_bytes(data_config: ml_collections.ConfigDict) -> int:
    """Bytes of the train images `config.data` names (from the registry, or the file's header;
    0 when the header cannot be read).

    Raises:
      ConfigError: `data.path` is not a file.
    """
    if data_config.get("folder"):
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

    With tfds, `dataset.train.images` is a `pipeline.RecordImages` (uint8 [N, H, W, C] read
    on demand) and the other splits are arrays; labels are always arrays (int32).
    """
    manifest = None
    if data_config.get("folder"):  # converted (or its conversion checked) once, here
        data_config, manifest = folder_as_file(data_config, progress)
    if resolve_source(data_config) == "memory":
        if manifest is None:
            return load.load_dataset(data_config, progress=progress)
        from ssljax.data import folder

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
    label_names = c.label_names
    if manifest is not None:  # the folder's own names, not the file's inferred ones
        name, label_names = manifest["name"], tuple(manifest["label_names"])
    return load.Dataset(
        name=name,
        size=c.image_shape[0],
        task=c.task,
        label_names=label_names,
        n_channels=c.image_shape[2],
        num_outputs=registry.num_outputs(c.task, label_names),
        splits=splits,
    )


def folder_as_file(
    data_config: ml_collections.ConfigDict, progress: bool = True
) -> tuple[ml_collections.ConfigDict, dict]:
    """`data.folder`, converted once (`folder.convert`), as the config of a user's .npz
    (data.path, data.task, data.name set from the conversion), and the folder's manifest."""
    from ssljax.data import folder

    path, manifest = folder.convert(data_config, progress)
    config = ml_collections.ConfigDict(data_config.to_dict())
    config.folder, config.path = "", str(path)
    config.task, config.name = manifest["task"], manifest["name"]
    return config, manifest
