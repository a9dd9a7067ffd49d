"""Loading and validating MedMNIST-layout .npz files into host memory.

A MedMNIST archive holds `{train,val,test}_images` (uint8 [N, H, W] or [N, H, W, C]) and
`{train,val,test}_labels` (integers [N, 1] or [N, L] for multi-label tasks). Everything is
checked before training starts, so a bad file fails in a second with a message naming it
rather than minutes later inside a jitted step.
"""

import dataclasses
import os
import pathlib
import zipfile
import zlib
from collections.abc import Callable

import ml_collections
import numpy as np

from ssljax.data import download, registry
from ssljax.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
# What a damaged archive raises from np.load or from reading a member.
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
# The first bytes of a zip archive (an .npz) and of a single .npy array.
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"
# Builds the DataError for a problem with the file being loaded.
_Error = Callable[[str], DataError]


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in host memory.

    Attributes:
      images: uint8 [N, H, W, C], C = 1 or 3.
      labels: int32 [N] (binary, multi-class, ordinal: the class index) or int32 [N, L]
        (multi-label: 0/1 per label).
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A validated dataset: its three splits and what a classifier head needs to know.

    Attributes:
      name: registry name (e.g. 'pathmnist') or the user's name for their own file.
      size: image height = width in pixels.
      task: one of `registry.TASKS`.
      label_names: class (or, for multi-label, label) names by index.
      n_channels: 1 (grey) or 3 (RGB).
      num_outputs: logits of the classifier head (`registry.num_outputs`).
      splits: 'train', 'val', 'test' -> Split.
      files: for an image folder (`data.folder`), each split's files (paths relative to the
        folder) in row order; None for .npz datasets.
    """

    name: str
    size: int
    task: str
    label_names: tuple[str, ...]
    n_channels: int
    num_outputs: int
    splits: dict[str, Split]
    files: dict[str, list[str]] | None = None

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def val(self) -> Split:
        return self.splits["val"]

    @property
    def test(self) -> Split:
        return self.splits["test"]


def load_npz(
    path: str | os.PathLike,
    *,
    task: str,
    expected: registry.DatasetInfo | None = None,
    size: int | None = None,
) -> Dataset:
    """Loads and validates a MedMNIST-layout .npz (never unpickles).

    Args:
      path: the .npz file.
      task: one of `registry.TASKS`; decides the label layout.
      expected: the registry entry when the file is a MedMNIST file: channels, label count
        and split sizes are then checked against it.
      size: the expected image size, if known.

    Returns:
      The Dataset, named `expected.name` or else the file's stem.

    Raises:
      DataError: the file is not a readable .npz archive, lacks a key, holds pickled Python
        objects, or arrays of the wrong dtype, shape or label range; the message names the
        file and the problem.
    """
    path = pathlib.Path(path)
    if task != registry.UNLABELLED:
        registry.check_task(task)
    hint = (
        f" Delete {path} so that it is downloaded again (config.data.download=True)."
        if expected is not None
        else ""
    )

    def error(problem: str) -> DataError:
        return DataError(f"{path}: {problem}.{hint}")

    raw = _read_arrays(path, error)
    images = {s: _check_images(s, raw[f"{s}_images"], error) for s in SPLITS}
    shapes = {s: images[s].shape[1:] for s in SPLITS}
    if len(set(shapes.values())) > 1:
        raise error(f"the splits' images differ in shape (H, W, C): {shapes}")
    height, _, channels = shapes["train"]
    if size is not None and height != size:
        raise error(f"images are {height}x{height} pixels, expected {size}x{size} (data.size)")
    if expected is not None and channels != expected.n_channels:
        raise error(f"images have {channels} channels, {expected.name} has {expected.n_channels}")

    labels = {s: _check_labels(s, raw[f"{s}_labels"], len(images[s]), task, error) for s in SPLITS}
    if expected is not None:
        for s in SPLITS:
            if len(images[s]) != expected.n_samples[s]:
                raise error(
                    f"{s} has {len(images[s])} examples, {expected.name} has "
                    f"{expected.n_samples[s]}"
                )
        label_names = tuple(expected.labels.values())
    else:
        label_names = _infer_label_names(labels, task)
    _check_label_range(labels, task, len(label_names), error)

    splits = {s: Split(images=images[s], labels=labels[s].astype(np.int32)) for s in SPLITS}
    return Dataset(
        name=expected.name if expected is not None else path.stem,
        size=height,
        task=task,
        label_names=label_names,
        n_channels=channels,
        num_outputs=registry.num_outputs(task, label_names),
        splits=splits,
    )


def _read_arrays(path: pathlib.Path, error: _Error) -> dict[str, np.ndarray]:
    """All six arrays of the archive, read into memory."""
    keys = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    with path.open("rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if magic.startswith(_NPY_MAGIC):
        raise error("holds a single array (.npy), not an .npz archive")
    if not magic.startswith(_ZIP_MAGIC):
        raise error(
            f"is not a .npz (zip) file (it starts with {magic[:4]!r}); save one with np.savez"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise error(
            f"cannot be read as an .npz archive: it is truncated or damaged "
            f"({type(e).__name__}: {e})"
        ) from e
    with archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise error(
                f"missing keys {missing} (found {archive.files}); a MedMNIST archive holds {keys}"
            )
        pickled = [k for k in keys if _holds_objects(archive, k)]
        if pickled:
            verb = "holds" if len(pickled) == 1 else "hold"
            raise error(
                f"{', '.join(pickled)} {verb} pickled Python objects, which ssljax does not "
                "load; save numeric arrays (uint8 images, integer labels)"
            )
        try:
            return {k: archive[k] for k in keys}
        except _READ_ERRORS as e:
            raise error(f"is truncated or damaged ({type(e).__name__}: {e})") from e


def _holds_objects(archive: np.lib.npyio.NpzFile, key: str) -> bool:
    """Whether member `key` is an object array (pickled), from its .npy header alone; False
    when the header cannot be read (reading the member then reports the damage)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0}
    readers[(2, 0)] = np.lib.format.read_array_header_2_0
    try:
        with archive.zip.open(f"{key}.npy") as f:
            read = readers.get(np.lib.format.read_magic(f))
            return read is not None and read(f)[2].hasobject
    except _READ_ERRORS:
        return False


def _check_images(split: str, images: np.ndarray, error: _Error) -> np.ndarray:
    """uint8 [N, H, H] or [N, H, H, C] -> uint8 [N, H, H, C] with C in (1, 3)."""
    if images.dtype != np.uint8:
        raise error(f"{split}_images has dtype {images.dtype}, expected uint8 (0..255)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] not in (1, 3):
        raise error(
            f"{split}_images has shape {images.shape}, expected (N, H, H) or (N, H, H, C) "
            "with C = 1 or 3"
        )
    if len(images) == 0:
        raise error(f"{split}_images is empty")
    return images


def _check_labels(split: str, labels: np.ndarray, n: int, task: str, error: _Error) -> np.ndarray:
    """Integer [N, 1] or [N] -> [N]; multi-label stays [N, L]; unlabelled is [N, 0]."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise error(f"{split}_labels has dtype {labels.dtype}, expected integers")
    if task == registry.UNLABELLED and labels.shape != (n, 0):
        raise error(f"{split}_labels has shape {labels.shape}, expected ({n}, 0) for {task}")
    if task in (registry.MULTI_LABEL, registry.UNLABELLED):
        if labels.ndim != 2 or labels.shape[0] != n:
            raise error(f"{split}_labels has shape {labels.shape}, expected ({n}, L) for {task}")
        return labels
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (n,):
        raise error(f"{split}_labels has shape {labels.shape}, expected ({n}, 1) for {task}")
    return labels


def _infer_label_names(labels: dict[str, np.ndarray], task: str) -> tuple[str, ...]:
    """Index names '0', '1', ... for a file outside the registry."""
    if task == registry.UNLABELLED:
        return ()
    if task == registry.MULTI_LABEL:
        n = labels["train"].shape[1]
    elif task == registry.BINARY:
        n = 2
    else:
        n = int(max(labels[s].max() for s in SPLITS)) + 1
    return tuple(str(i) for i in range(n))


def _check_label_range(
    labels: dict[str, np.ndarray], task: str, n_classes: int, error: _Error
) -> None:
    for s, y in labels.items():
        if task == registry.UNLABELLED:
            continue
        if task == registry.MULTI_LABEL:
            if y.shape[1] != n_classes:
                raise error(f"{s}_labels has {y.shape[1]} labels per example, expected {n_classes}")
            if not np.isin(y, (0, 1)).all():
                raise error(f"{s}_labels holds values other than 0 and 1 ({task})")
        elif y.min() < 0 or y.max() >= n_classes:
            raise error(
                f"{s}_labels range over [{y.min()}, {y.max()}], expected 0..{n_classes - 1} "
                f"for {n_classes} classes ({task})"
            )


def load_dataset(data_config: ml_collections.ConfigDict, progress: bool = True) -> Dataset:
    """The .npz that `config.data` names, in memory, downloaded if missing and allowed.

    With `data.path` set, that file (a user's own .npz in MedMNIST layout) is loaded with task
    `data.task`, and `data.size` is taken from the file. It is named `data.name`, unless that
    is still a registry name (the default 'pathmnist'), then after the file's stem. Otherwise
    `data.name` at `data.size` is found in (or downloaded to) `data.root`. An image folder
    (`data.folder`) and the TFDS source are `sources.open_dataset`'s, which calls this for
    the .npz they come down to: runs open their data there, never here.

    Args:
      data_config: `config.data` (keys name, size, root, download, path, task).
      progress: show a progress bar while downloading.
    """
    if data_config.path:
        path = pathlib.Path(data_config.path).expanduser()
        if data_config.task not in registry.TASKS:
            raise ConfigError(
                f"data.path={str(path)!r} needs data.task set to one of {registry.TASKS}; "
                f"got data.task={data_config.task!r}"
            )
        if not path.is_file():
            raise ConfigError(f"data.path={str(path)!r} does not exist or is not a file")
        dataset = load_npz(path, task=data_config.task)
        if data_config.name not in registry.DATASETS:
            dataset = dataclasses.replace(dataset, name=data_config.name)
        return dataset
    info = registry.get_info(data_config.name)
    if data_config.task and data_config.task != info.task:
        raise ConfigError(
            f"data.task={data_config.task!r} contradicts {info.name}'s task {info.task!r}; "
            "leave data.task empty for registry datasets"
        )
    path = download.ensure_file(
        info.name, data_config.size, data_config.root, data_config.download, progress=progress
    )
    return load_npz(path, task=info.task, expected=info, size=data_config.size)
