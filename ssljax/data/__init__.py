"""MedMNIST data: registry, download + MD5, validated loading, label budgets, batch indices."""

from ssljax.data.batches import eval_batches, steps_per_epoch, train_batch_indices
from ssljax.data.download import DatasetDownloadError, download_file, ensure_file
from ssljax.data.load import SPLITS, Dataset, Split, load_dataset, load_npz
from ssljax.data.registry import (
    BINARY,
    DATASETS,
    MULTI_CLASS,
    MULTI_LABEL,
    ORDINAL,
    SIZES,
    TASKS,
    DatasetInfo,
    file_name,
    get_info,
    num_outputs,
)
from ssljax.data.subsets import label_subset, stratification_key, subset_from_config

__all__ = [
    "BINARY",
    "DATASETS",
    "MULTI_CLASS",
    "MULTI_LABEL",
    "ORDINAL",
    "SIZES",
    "SPLITS",
    "TASKS",
    "Dataset",
    "DatasetDownloadError",
    "DatasetInfo",
    "Split",
    "download_file",
    "ensure_file",
    "eval_batches",
    "file_name",
    "get_info",
    "label_subset",
    "load_dataset",
    "load_npz",
    "num_outputs",
    "steps_per_epoch",
    "stratification_key",
    "subset_from_config",
    "train_batch_indices",
]
