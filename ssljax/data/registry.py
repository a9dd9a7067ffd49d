"""The 2D MedMNIST v2 datasets (MedMNIST+ sizes included): files, checksums, tasks, labels.

The facts themselves (names, labels, sample counts, checksums) are literal data in
`medmnist_info.py`; this module names what they mean: tasks, sizes, file names, the
'name_64' key, and the one lookup `get_info`.
"""

import dataclasses
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ssljax.data import medmnist_info
from ssljax.errors import ConfigError

BINARY = "binary-class"
MULTI_CLASS = "multi-class"
MULTI_LABEL = "multi-label, binary-class"
ORDINAL = "ordinal-regression"
TASKS = (BINARY, MULTI_CLASS, MULTI_LABEL, ORDINAL)
# An image folder without labels (`data.folder`): labels [N, 0]; pretraining only.
UNLABELLED = "unlabelled"

SIZES = (28, 64, 128, 224)
ZENODO_URL = "https://zenodo.org/records/10519652/files/{file}?download=1"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """One MedMNIST dataset as `medmnist.info.INFO` describes it.

    `labels` maps the class index as a string ("0", "1", ...) to its name; `n_samples`,
    `urls` and `md5` are keyed by split ("train", "val", "test") and image size (28, ...).
    """

    name: str
    python_class: str
    task: str
    labels: dict[str, str]
    n_channels: int
    n_samples: dict[str, int]
    license: str
    urls: dict[int, str]
    md5: dict[int, str]


def dataset_key(name: str, size: int) -> str:
    """'breastmnist' at 28 px, 'breastmnist_64' otherwise: the medmnist package's file stem,
    and the dataset's name in sweep grids, workdir names and report tables (any size: a
    user's own file may have another)."""
    return name if size == 28 else f"{name}_{size}"


def own_name(data: Mapping[str, Any]) -> str:
    """The name a run's dataset goes by, from its config's `data` (a ConfigDict, or the dict
    config.json holds): `data.name`, unless that is still a registry name (the default
    'pathmnist') while `data.folder` is set (the folder's own name) or `data.path` (the
    file's stem). A folder's name is made file-safe, as its conversion is named."""
    name, folder, path = data["name"], data.get("folder", ""), data.get("path", "")
    if folder:
        if name in DATASETS:
            name = pathlib.Path(folder).expanduser().resolve().name
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "folder"
    return pathlib.Path(path).stem if path and name in DATASETS else name


def parse_dataset_key(key: str, where: str = "dataset") -> tuple[str, int]:
    """'breastmnist' -> ('breastmnist', 28), 'breastmnist_64' -> ('breastmnist', 64); an
    unknown name or size raises ConfigError naming `where` (e.g. 'grid.datasets')."""
    name, sep, size = key.rpartition("_")
    if not (sep and size.isdigit()):
        name, size = key, "28"
    if name not in DATASETS:
        raise ConfigError(
            f"{where}: unknown dataset {key!r}; use a MedMNIST flag, optionally with _SIZE: "
            f"{sorted(DATASETS)}"
        )
    if int(size) not in SIZES:
        raise ConfigError(f"{where}: {key!r} has size {size}; sizes are {SIZES}")
    return name, int(size)


def file_name(name: str, size: int) -> str:
    """The file name the medmnist package uses: 'breastmnist.npz' (28 px), 'breastmnist_64.npz'."""
    check_size(size)
    return f"{dataset_key(name, size)}.npz"


def check_size(size: int) -> None:
    """Raises ValueError unless `size` is one of `SIZES`."""
    if size not in SIZES:
        raise ConfigError(f"data.size={size!r} is not a MedMNIST image size; use one of {SIZES}")


def check_task(task: str) -> None:
    """Raises ValueError unless `task` is one of the MedMNIST task strings `TASKS`."""
    if task not in TASKS:
        raise ConfigError(f"data.task={task!r} is not a MedMNIST task; use one of {TASKS}")


def num_outputs(task: str, labels: Mapping[str, str] | Sequence[str]) -> int:
    """Logits of a classifier head for `task` with class names `labels` (dict or sequence).

    Binary tasks get 2 logits with a softmax, as MedMNIST's reference models do; multi-label
    tasks one sigmoid logit per label; multi-class and ordinal tasks one logit per class.
    """
    if task == UNLABELLED:
        return 0
    check_task(task)
    return 2 if task == BINARY else len(labels)


def _info(
    *,
    name: str,
    python_class: str,
    task: str,
    labels: tuple[str, ...],
    n_channels: int,
    n_samples: dict[str, int],
    license: str,
    md5: dict[int, str],
) -> DatasetInfo:
    urls = {size: ZENODO_URL.format(file=file_name(name, size)) for size in SIZES}
    return DatasetInfo(
        name=name,
        python_class=python_class,
        task=task,
        labels={str(i): label for i, label in enumerate(labels)},
        n_channels=n_channels,
        n_samples=n_samples,
        license=license,
        urls=urls,
        md5=md5,
    )


_ALL = tuple(_info(**facts) for facts in medmnist_info.FACTS)
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in _ALL}


def get_info(name: str) -> DatasetInfo:
    """The registry entry of dataset `name` (e.g. 'pathmnist'); ValueError if unknown."""
    if name not in DATASETS:
        raise ConfigError(
            f"unknown MedMNIST dataset data.name={name!r}; valid names: {', '.join(DATASETS)}. "
            "For your own .npz in MedMNIST layout set data.path and data.task instead."
        )
    return DATASETS[name]
