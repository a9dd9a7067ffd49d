"""The 2D MedMNIST v2 datasets (MedMNIST+ sizes included): files, checksums, tasks, labels.

The facts are copied from `medmnist.info.INFO` (medmnist 3.0.2) as literal data, because the
`medmnist` package pulls in PyTorch and is therefore not a runtime dependency of ssljax;
tests/test_data_registry.py checks that the two agree.
"""

import dataclasses
from collections.abc import Mapping, Sequence

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


_ALL = (
    _info(
        name="pathmnist",
        python_class="PathMNIST",
        task=MULTI_CLASS,
        labels=(
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
        n_channels=3,
        n_samples={"train": 89996, "val": 10004, "test": 7180},
        license="CC BY 4.0",
        md5={
            28: "a8b06965200029087d5bd730944a56c1",
            64: "55aa9c1e0525abe5a6b9d8343a507616",
            128: "ac42d08fb904d92c244187169d1fd1d9",
            224: "2c51a510bcdc9cf8ddb2af93af1eadec",
        },
    ),
    _info(
        name="chestmnist",
        python_class="ChestMNIST",
        task=MULTI_LABEL,
        labels=(
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ),
        n_channels=1,
        n_samples={"train": 78468, "val": 11219, "test": 22433},
        license="CC BY 4.0",
        md5={
            28: "02c8a6516a18b556561a56cbdd36c4a8",
            64: "9de6cd0b934ebb5b7426cfba5efbae16",
            128: "db107e5590b27930b62dbaf558aebee3",
            224: "45bd33e6f06c3e8cdb481c74a89152aa",
        },
    ),
    _info(
        name="dermamnist",
        python_class="DermaMNIST",
        task=MULTI_CLASS,
        labels=(
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
        n_channels=3,
        n_samples={"train": 7007, "val": 1003, "test": 2005},
        license="CC BY-NC 4.0",
        md5={
            28: "0744692d530f8e62ec473284d019b0c7",
            64: "b70a2f5635c6199aeaa28c31d7202e1f",
            128: "2defd784463fa5243564e855ed717de1",
            224: "8974907d8e169bef5f5b96bc506ae45d",
        },
    ),
    _info(
        name="octmnist",
        python_class="OCTMNIST",
        task=MULTI_CLASS,
        labels=("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        n_channels=1,
        n_samples={"train": 97477, "val": 10832, "test": 1000},
        license="CC BY 4.0",
        md5={
            28: "c68d92d5b585d8d81f7112f81e2d0842",
            64: "e229e9440236b774d9f0dfef9d07bdaf",
            128: "0a97e76651ace45c5d943ee3f65b63ae",
            224: "abc493b6d529d5de7569faaef2773ba3",
        },
    ),
    _info(
        name="pneumoniamnist",
        python_class="PneumoniaMNIST",
        task=BINARY,
        labels=("normal", "pneumonia"),
        n_channels=1,
        n_samples={"train": 4708, "val": 524, "test": 624},
        license="CC BY 4.0",
        md5={
            28: "28209eda62fecd6e6a2d98b1501bb15f",
            64: "8f4eceb4ccffa70c672198ea285246c6",
            128: "05b46931834c231683c68f40c47b2971",
            224: "d6a3c71de1b945ea11211b03746c1fe1",
        },
    ),
    _info(
        name="retinamnist",
        python_class="RetinaMNIST",
        task=ORDINAL,
        labels=("0", "1", "2", "3", "4"),
        n_channels=3,
        n_samples={"train": 1080, "val": 120, "test": 400},
        license="CC BY 4.0",
        md5={
            28: "bd4c0672f1bba3e3a89f0e4e876791e4",
            64: "afda852cc34dcda56f86ad2b2457dbcc",
            128: "e48e916a24454daf90583d4e6efb1a18",
            224: "eae7e3b6f3fcbda4ae613ebdcbe35348",
        },
    ),
    _info(
        name="breastmnist",
        python_class="BreastMNIST",
        task=BINARY,
        labels=("malignant", "normal, benign"),
        n_channels=1,
        n_samples={"train": 546, "val": 78, "test": 156},
        license="CC BY 4.0",
        md5={
            28: "750601b1f35ba3300ea97c75c52ff8f6",
            64: "742edef2a1fd1524b2efff4bd7ba9364",
            128: "363e4b3f8d712e9b5de15470a2aaadf1",
            224: "b56378a6eefa9fed602bb16d192d4c8b",
        },
    ),
    _info(
        name="bloodmnist",
        python_class="BloodMNIST",
        task=MULTI_CLASS,
        labels=(
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
        n_channels=3,
        n_samples={"train": 11959, "val": 1712, "test": 3421},
        license="CC BY 4.0",
        md5={
            28: "7053d0359d879ad8a5505303e11de1dc",
            64: "2b94928a2ae4916078ca51e05b6b800b",
            128: "adace1e0ed228fccda1f39692059dd4c",
            224: "b718ff6835fcbdb22ba9eacccd7b2601",
        },
    ),
    _info(
        name="tissuemnist",
        python_class="TissueMNIST",
        task=MULTI_CLASS,
        labels=(
            "Collecting Duct, Connecting Tubule",
            "Distal Convoluted Tubule",
            "Glomerular endothelial cells",
            "Interstitial endothelial cells",
            "Leukocytes",
            "Podocytes",
            "Proximal Tubule Segments",
            "Thick Ascending Limb",
        ),
        n_channels=1,
        n_samples={"train": 165466, "val": 23640, "test": 47280},
        license="CC BY 4.0",
        md5={
            28: "ebe78ee8b05294063de985d821c1c34b",
            64: "123ece2eba09d0aa5d698fda57103344",
            128: "61b955355d7425a89687b06cca3ce0c2",
            224: "b077128c4a949f0a4eb01517f9037b9c",
        },
    ),
    _info(
        name="organamnist",
        python_class="OrganAMNIST",
        task=MULTI_CLASS,
        labels=(
            "bladder",
            "femur-left",
            "femur-right",
            "heart",
            "kidney-left",
            "kidney-right",
            "liver",
            "lung-left",
            "lung-right",
            "pancreas",
            "spleen",
        ),
        n_channels=1,
        n_samples={"train": 34561, "val": 6491, "test": 17778},
        license="CC BY 4.0",
        md5={
            28: "68e3f8846a6bd62f0c9bf841c0d9eacc",
            64: "2dcccc29b88e6da5a01161ef20cda288",
            128: "eeae80d0a227a8d099027e1b3cfd3b60",
            224: "50747347e05c87dd3aaf92c49f9f3170",
        },
    ),
    _info(
        name="organcmnist",
        python_class="OrganCMNIST",
        task=MULTI_CLASS,
        labels=(
            "bladder",
            "femur-left",
            "femur-right",
            "heart",
            "kidney-left",
            "kidney-right",
            "liver",
            "lung-left",
            "lung-right",
            "pancreas",
            "spleen",
        ),
        n_channels=1,
        n_samples={"train": 12975, "val": 2392, "test": 8216},
        license="CC BY 4.0",
        md5={
            28: "b9ceb9546e10131b32923c5bbeaea2b1",
            64: "3ce34a8724ea6f548e6db4744d03b6a9",
            128: "773c1f009daa3fe5d9a2a201b2a7ed94",
            224: "050f5e875dc056f6768abf94ec9995d1",
        },
    ),
    _info(
        name="organsmnist",
        python_class="OrganSMNIST",
        task=MULTI_CLASS,
        labels=(
            "bladder",
            "femur-left",
            "femur-right",
            "heart",
            "kidney-left",
            "kidney-right",
            "liver",
            "lung-left",
            "lung-right",
            "pancreas",
            "spleen",
        ),
        n_channels=1,
        n_samples={"train": 13932, "val": 2452, "test": 8827},
        license="CC BY 4.0",
        md5={
            28: "9ab87b696fb54e2a387ebe992d6ed5f1",
            64: "53a6d115339d874c25e309a994ff46d3",
            128: "ded0c5fa01a95dc4978b956f613e9b8e",
            224: "b354719e553fbbb2513d5533f52a4cb1",
        },
    ),
)
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in _ALL}


def get_info(name: str) -> DatasetInfo:
    """The registry entry of dataset `name` (e.g. 'pathmnist'); ValueError if unknown."""
    if name not in DATASETS:
        raise ConfigError(
            f"unknown MedMNIST dataset data.name={name!r}; valid names: {', '.join(DATASETS)}. "
            "For your own .npz in MedMNIST layout set data.path and data.task instead."
        )
    return DATASETS[name]
