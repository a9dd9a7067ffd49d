"""MedMNIST as a TFDS dataset: array_record shards built from the stored form (.npz).

Builder configs: every registry dataset x size (`medmnist/pathmnist_224`), and one per other
MedMNIST-layout .npz (a user's `data.path`, a converted folder), keyed by its path, size and
mtime. Features: `image` uint8 [H, W, C]; `label` a class index, or int64 [L] (multi-label).
Splits train / val / test keep the file's row order (the sampler shuffles), so a batch is the
same from either source. The .npz comes from `data.root` (offline) or TFDS's download manager,
refused unless its MD5 is the registry's; it is converted in row chunks (`npzstream`), so
memory is one chunk whatever the size. TensorFlow is never imported.
"""

import contextlib
import dataclasses
import hashlib
import itertools
import math
import os
import pathlib
import shutil
import zipfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import utils as tfds_utils

from ssljax import faults
from ssljax.data import download, load, npzstream, registry, tfds_build
from ssljax.data.tfds_build import is_built
from ssljax.errors import ConfigError, DataError

__all__ = ["MedMNIST", "MedMNISTConfig", "builder_for", "file_config", "is_built", "prepare"]

NAME = "medmnist"
# Conversion reads this many bytes of images per chunk, and writes shards of about this size.
CHUNK_BYTES = 64 << 20
SHARD_BYTES = 1 << 30
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


@dataclasses.dataclass(eq=False)
class MedMNISTConfig(tfds.core.BuilderConfig):
    """One dataset x size: what its features are and where its .npz is.

    Attributes:
      dataset: registry name ('' for a file config).
      image_shape: (H, W, C) of the stored images.
      task: one of `registry.TASKS`.
      label_names: class (multi-label: label) names by index.
      npz_path: a file config's .npz; registry configs find theirs in `data.root`.
    """

    dataset: str = ""
    image_shape: tuple[int, int, int] = (28, 28, 1)
    task: str = registry.MULTI_CLASS
    label_names: tuple[str, ...] = ()
    npz_path: str = ""


def config_name(name: str, size: int) -> str:
    """The builder config of a registry dataset at a size: 'pathmnist_224'."""
    return f"{name}_{size}"


def _registry_configs() -> list[MedMNISTConfig]:
    return [
        MedMNISTConfig(
            name=config_name(info.name, size),
            description=f"{info.python_class} at {size}x{size} px ({info.task}).",
            dataset=info.name,
            image_shape=(size, size, info.n_channels),
            task=info.task,
            label_names=tuple(info.labels.values()),
        )
        for info in registry.DATASETS.values()
        for size in registry.SIZES
    ]


def file_config(path: str | os.PathLike, task: str) -> MedMNISTConfig:
    """The config of a MedMNIST-layout .npz outside the registry, from its headers and labels.

    Named `file_<stem>_<digest12>`, the digest of the resolved path, byte size and mtime: a
    rewritten file gets a new config (and a new build), an unchanged one reuses its build.

    Raises:
      DataError: the file is not a MedMNIST-layout .npz (a missing member, images that are not
        uint8 [N, H, H(, C)], labels that are not integers).
    """
    path = pathlib.Path(path).expanduser().resolve()
    stat = path.stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{task}".encode()
    digest = hashlib.sha256(key).hexdigest()[:12]
    shape = _image_shape(path)
    labels = {s: _read_labels(path, s, task) for s in load.SPLITS}
    label_names = load._infer_label_names(labels, task)
    stem = "".join(c if c.isalnum() else "_" for c in path.stem.lower())
    return MedMNISTConfig(
        name=f"file_{stem}_{digest}",
        description=f"{path} ({task}).",
        image_shape=shape,
        task=task,
        label_names=label_names,
        npz_path=str(path),
    )


def _image_shape(path: pathlib.Path) -> tuple[int, int, int]:
    """(H, W, C) of the train images, from the member's header alone."""
    try:
        shape, dtype = npzstream.member_info(path, "train_images")
    except _READ_ERRORS as e:
        raise DataError(f"{path}: not a MedMNIST-layout .npz ({type(e).__name__}: {e})") from e
    probe = np.zeros((1, *shape[1:]), dtype)
    return load._check_images("train", probe, lambda p: DataError(f"{path}: {p}.")).shape[1:]


def _read_labels(path: pathlib.Path, split: str, task: str) -> np.ndarray:
    try:
        labels = np.concatenate(list(npzstream.iter_rows(path, f"{split}_labels", 1 << 20)))
    except _READ_ERRORS as e:
        raise DataError(f"{path}: cannot read {split}_labels ({type(e).__name__}: {e})") from e
    n = npzstream.member_info(path, f"{split}_images")[0][0]
    return load._check_labels(split, labels, n, task, lambda p: DataError(f"{path}: {p}."))


class MedMNIST(tfds_build.QuietBuilder, tfds.core.GeneratorBasedBuilder):
    """MedMNIST 2D (v2 and MedMNIST+ sizes) and MedMNIST-layout files, as array_record."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = _registry_configs()

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup breaks on an editable install without importlib_resources.
        return epath.Path(__file__)

    def __init__(
        self,
        *,
        data_root: str | os.PathLike = "",
        download: bool = True,
        url: str = "",
        **kwargs,
    ):
        """As a TFDS builder (`config=`, `data_dir=`), plus where the .npz comes from.

        Args:
          data_root: folder holding registry files (`config.data.root`); used if the file is
            there.
          download: fetch a registry file missing from `data_root` (`config.data.download`).
          url: fetch from here instead of the registry's URL (a mirror; tests).
        """
        self._data_root = data_root
        self._download = download
        self._url = url
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        if c.task == registry.MULTI_LABEL:
            label = tfds.features.Tensor(shape=(len(c.label_names),), dtype=np.int64)
        else:
            label = tfds.features.ClassLabel(names=list(c.label_names))
        features = {
            # Raw bytes: the default encoding stores each pixel as an int64 varint, ~100x slower
            # to write and read.
            "image": tfds.features.Tensor(
                shape=c.image_shape, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
            ),
            "label": label,
        }
        return tfds_build.LocalInfo(
            builder=self,
            description="MedMNIST 2D biomedical images (Yang et al., Scientific Data 2023).",
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label"),
            homepage="https://medmnist.com/",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        path = self._source_file(dl_manager)
        return {split: self._generate_examples(path, split) for split in load.SPLITS}

    def _generate_examples(self, path: pathlib.Path, split: str) -> Iterator[tuple[int, dict]]:
        """(row, {'image': uint8 [H, W, C], 'label': int or int64 [L]}) in file order."""
        c = self.builder_config
        height, width, channels = c.image_shape
        rows = max(1, CHUNK_BYTES // (height * width * channels))
        images = npzstream.iter_rows(path, f"{split}_images", rows)
        labels = npzstream.iter_rows(path, f"{split}_labels", rows)
        key = 0
        for x, y in zip(images, labels, strict=True):
            x, y = self._check_chunk(path, split, x, y)
            for i in range(len(x)):
                yield key, {"image": x[i], "label": y[i]}
                key += 1

    def _check_chunk(self, path, split, images, labels) -> tuple[np.ndarray, np.ndarray]:
        """One chunk through `load`'s checks: uint8 [n, H, W, C] and labels [n] / [n, L]."""
        c = self.builder_config

        def error(problem: str) -> DataError:
            return DataError(f"{path}: {problem}.")

        images = load._check_images(split, images, error)
        if images.shape[1:] != c.image_shape:
            raise error(f"{split}_images are {images.shape[1:]}, expected {c.image_shape}")
        labels = load._check_labels(split, labels, len(images), c.task, error)
        load._check_label_range({split: labels}, c.task, len(c.label_names), error)
        return images, labels.astype(np.int64)

    def _source_file(self, dl_manager) -> pathlib.Path:
        """The .npz to build from: the file config's, `data_root`'s, or a checked download."""
        c = self.builder_config
        if c.npz_path:
            return pathlib.Path(c.npz_path)
        info = registry.get_info(c.dataset)
        size = c.image_shape[0]
        local = download.data_root(self._data_root) / registry.file_name(info.name, size)
        if local.is_file():
            self._check_counts(local, info)
            return local
        url, md5 = self._url or info.urls[size], info.md5[size]
        if not self._download:
            raise download.DatasetDownloadError(
                f"{local} does not exist and config.data.download is false: set "
                "config.data.download=True to fetch it. " + download._by_hand(url, local, md5)
            )
        path = _checked_download(dl_manager, url, md5, local)
        self._check_counts(path, info)
        return path

    def _check_counts(self, path: pathlib.Path, info: registry.DatasetInfo) -> None:
        for split in load.SPLITS:
            try:
                n = npzstream.member_info(path, f"{split}_images")[0][0]
            except _READ_ERRORS as e:
                raise DataError(
                    f"{path}: not a readable MedMNIST archive ({type(e).__name__}: {e}). "
                    "Delete it so that it is downloaded again (config.data.download=True)."
                ) from e
            if n != info.n_samples[split]:
                raise DataError(
                    f"{path}: {split} has {n} examples, {info.name} has {info.n_samples[split]}"
                )

    def _generate_splits(self, dl_manager, download_config) -> list[tfds.core.SplitInfo]:
        """Writes each split's shards as its examples are generated, in file order. (TFDS's
        generic writer keeps up to 1 GB in memory and, unshuffled, reads every spilled example
        back from one bucket: a 16 GB split would need 16 GB.)"""
        del download_config
        serializer = example_serializer.ExampleSerializer(self.info.features.get_serialized_info())
        infos = []
        for split, examples in self._split_generators(dl_manager).items():
            n = self._split_rows(split)
            row_bytes = math.prod(self.builder_config.image_shape)
            per_shard = max(1, SHARD_BYTES // row_bytes)
            num_shards = max(1, math.ceil(n / per_shard))
            template = self._get_filename_template(split_name=split)
            lengths, size = [], 0
            for shard in range(num_shards):
                encoded = (
                    (key, serializer.serialize_example(self.info.features.encode_example(ex)))
                    for key, ex in itertools.islice(examples, per_shard)
                )
                counted = _Counted(encoded)
                path = template.sharded_filepath(shard_index=shard, num_shards=num_shards)
                self._example_writer().write(path, counted)
                faults.point("tfds_shard_written")
                lengths.append(counted.count)
                size += counted.bytes
            if sum(lengths) != n or next(examples, None) is not None:
                raise DataError(f"{split}: wrote {sum(lengths)} examples, the file has {n}")
            infos.append(
                tfds.core.SplitInfo(
                    name=split, shard_lengths=lengths, num_bytes=size, filename_template=template
                )
            )
        return infos

    def _split_rows(self, split: str) -> int:
        c = self.builder_config
        if c.npz_path:
            return npzstream.member_info(c.npz_path, f"{split}_images")[0][0]
        return registry.get_info(c.dataset).n_samples[split]


class _Counted:
    """Passes (key, serialized example) pairs through, counting them and their bytes."""

    def __init__(self, pairs: Iterator[tuple[int, bytes]]):
        self._pairs, self.count, self.bytes = pairs, 0, 0

    def __iter__(self):
        for key, data in self._pairs:
            self.count, self.bytes = self.count + 1, self.bytes + len(data)
            yield key, data


def _checked_download(dl_manager, url: str, md5: str, local: pathlib.Path) -> pathlib.Path:
    """`url` through TFDS's download manager, kept only if its MD5 is `md5`."""
    try:
        path = pathlib.Path(dl_manager.download(url))
    except Exception as e:  # noqa: BLE001 - requests/urllib3/OSError: every one means the same
        # TFDS leaves its temporary folder behind when a transfer fails.
        stem = pathlib.PurePosixPath(url.split("?")[0]).stem
        for partial in pathlib.Path(os.fspath(dl_manager.download_dir)).rglob(f"*{stem}*.tmp.*"):
            shutil.rmtree(partial, ignore_errors=True)
        raise download.DatasetDownloadError(
            f"could not download {url} ({type(e).__name__}: {e}); the machine may be offline "
            "or the server unreachable. " + download._by_hand(url, local, md5)
        ) from e
    digest = download.md5sum(path)
    if digest != md5:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".INFO").unlink(missing_ok=True)
        raise download.DatasetDownloadError(
            f"the file downloaded from {url} has MD5 {digest}, expected {md5} (truncated or "
            "corrupted); it was deleted. Try again later; if it persists, "
            + download._by_hand(url, local, md5)
        )
    return path


def builder_for(data_config, url: str = "") -> MedMNIST:
    """The builder of the dataset `config.data` names (registry name x size, or data.path);
    `url` replaces the registry's download URL (a mirror)."""
    tfds_dir = pathlib.Path(data_config.tfds_dir).expanduser()
    if data_config.path:
        path = pathlib.Path(data_config.path).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.path={str(path)!r} does not exist or is not a file")
        config = file_config(path, data_config.task)
    else:
        registry.get_info(data_config.name)
        config = config_name(data_config.name, data_config.size)
    return MedMNIST(
        config=config,
        data_dir=os.fspath(tfds_dir),
        data_root=data_config.root,
        download=data_config.download,
        url=url,
    )


def prepare(data_config, progress: bool = True, url: str = "") -> MedMNIST:
    """The dataset `config.data` names as array_record in `data.tfds_dir`, built if needed.

    A folder that is not a whole build (an interrupted copy, a shard missing or truncated) is
    removed and built again; TFDS builds in a temporary folder renamed into place at the end.
    Builds of one dataset wait for each other (`tfds_build.locked`), and the temporary
    folders of killed builds are removed first (`tfds_build.remove_killed_builds`).

    Raises:
      ConfigError: `data.tfds_dir` is not writable.
      DataError / DatasetDownloadError: the .npz is missing, damaged, or fails its MD5.
    """
    builder = builder_for(data_config, url)
    if is_built(builder):
        return builder
    data_path = pathlib.Path(os.fspath(builder.data_path))
    with contextlib.ExitStack() as stack:
        try:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(tfds_build.locked(data_path))
        except OSError as e:
            raise ConfigError(
                f"data.tfds_dir={str(data_config.tfds_dir)!r} is not writable ({e}); set it to "
                "a writable folder (TFDS datasets are built there)"
            ) from e
        builder = builder_for(data_config, url)  # another process may have built it
        if is_built(builder):
            return builder
        tfds_build.remove_killed_builds(data_path)
        if data_path.exists():
            shutil.rmtree(data_path)
        if not progress:
            tfds.disable_progress_bar()
        builder.download_and_prepare()
    # The builder re-reads its metadata from the finished folder.
    return builder_for(data_config)
