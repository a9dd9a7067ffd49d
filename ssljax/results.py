"""results.json: the record an evaluation writes last, its versioned schema and its one reader.

An evaluation (`ssljax.evaluate`) writes `Results` to `workdir/results.json` as its last act,
so the file marks the run finished for the sweep and the report. Version 1 is every record
written before 2026-12-06: it has no `schema_version` field and is read as version 1.
Version 2 adds the field (its other fields are version 1's). A record of a version this code
does not know is refused with one line naming the file and what to do.
"""

import pathlib
from typing import Any, TypedDict

from ssljax import files
from ssljax.errors import DataError

RESULTS_FILE = "results.json"
# The chosen model's per-image test scores beside it: scores float32 [N, C], labels.
TEST_SCORES_FILE = "test_scores.npz"
SCHEMA_VERSION = 2  # what evaluation writes now
READABLE = (1, 2)  # what `read` accepts


class Scores(TypedDict):
    """MedMNIST's two metrics of one split (`metrics.evaluate`), floats in [0, 1]."""

    acc: float
    auc: float


class Results(TypedDict, total=False):
    """One evaluation's record. Every version holds the fields above `selection`."""

    schema_version: int  # absent in version 1
    dataset: str  # the dataset's name: a registry name or the user's own
    size: int  # image side in pixels
    task: str  # one of `data.registry.TASKS`
    protocol: str  # one of `facts.PROTOCOLS`
    init: dict[str, Any]  # {'kind': 'random' | 'pretrained' | ..., 'workdir', 'method', ...}
    label_fraction: float
    labels_per_class: int
    n_labelled: int
    n_train: int
    n_test: int
    seed: int
    model: dict[str, Any]  # {'name', 'width'}
    val: Scores  # of the model chosen on the full val split
    test: Scores
    selection: dict[str, Any]  # 'full_val', 'low_label_val': each choice's val and test
    bn_reestimated_on: int  # train images BatchNorm statistics were re-estimated on
    code: str  # git commit of the code (+'-dirty'), or 'ssljax <version>'
    ssljax_version: str
    wall_time_s: float
    train: dict[str, Any]  # fine-tuning only: {'base_lr', 'epochs'}


REQUIRED = ("dataset", "size", "protocol", "init", "label_fraction", "n_labelled", "seed")
REQUIRED += ("model", "val", "test")


def record(fields: dict[str, Any]) -> Results:
    """`fields` as the record evaluation writes now: the current `schema_version` first."""
    return Results(schema_version=SCHEMA_VERSION, **fields)


def version(rec: dict[str, Any], path: str | pathlib.Path) -> int:
    """The schema version of a results.json record: 1 when it has no `schema_version`.

    Raises:
      DataError: a version this code does not read, naming the file and what to do.
    """
    v = rec.get("schema_version", 1)
    if v in READABLE:
        return v
    known = f"versions {READABLE[0]}-{READABLE[-1]}"
    if isinstance(v, int) and v > READABLE[-1]:
        fix = "a newer ssljax wrote it: update ssljax to read it"
    else:
        fix = "an older ssljax wrote it: rerun its evaluation with this version"
    raise DataError(f"{path}: results.json schema_version {v!r}, this ssljax reads {known}; {fix}")


def read(path: str | pathlib.Path) -> Results:
    """The record in `path` (a results.json), `schema_version` filled in (1 when absent).

    Raises:
      DataError: naming the file, when it is not JSON, not an object, of a version this code
        does not read, or lacks a field every version has.
    """
    rec = files.read_json(path)
    if not isinstance(rec, dict):
        raise DataError(f"{path} is not an ssljax results.json (a JSON {type(rec).__name__})")
    rec = {**rec, "schema_version": version(rec, path)}
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise DataError(f"{path} is not an ssljax results.json (field {missing[0]!r})")
    return Results(**rec)
