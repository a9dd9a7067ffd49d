"""A folder of images -> the examples a conversion writes: each file's label and split.

Layouts (`config.data.folder=DIR`):

    DIR/train/<class>/*.png   DIR/val/<class>/...   DIR/test/<class>/...   (splits given)
    DIR/<class>/*.png                                    (splits drawn by seed, stratified)
    DIR/**/*.png  + config.data.labels=labels.csv        (labels from the CSV)
    DIR/**/*.png                                         (unlabelled: pretraining only)

Split folders are `train/`, `val/` (or `valid/`, `validation/`) and `test/`, any case; a
split that has no folder is drawn from train. A CSV's first column is the image's path
relative to DIR; a column named `split` gives splits; the label columns are
`config.data.label_columns`, or every other column: one column holds class names (or
numbers), several hold 0/1 per label (multi-label). Hidden files and folders (`.name`) and
the CSV itself are ignored; any other file that is not used is listed with the reason.
"""

import csv
import dataclasses
import hashlib
import io
import pathlib
from typing import NamedTuple

from ssljax.data import userfiles
from ssljax.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val"}
SPLIT_FOLDERS["test"] = "test"
# Where labels came from (manifest "labels_from").
FROM_FOLDERS, FROM_CSV, UNLABELLED = "class folders", "csv", "none"

Label = int | tuple[int, ...] | None


@dataclasses.dataclass
class Example:
    """One image to convert.

    Attributes:
      file: its path relative to the folder, '/'-separated.
      label: class index (single-label), 0/1 per label (multi-label), None (unlabelled).
      split: 'train' | 'val' | 'test', or None until `assign_splits` draws it.
    """

    file: str
    label: Label
    split: str | None


class Listing(NamedTuple):
    """A folder as `userfiles.list_files` lists it: files ('/'-separated, relative, sorted)
    and the entries refused ({'file', 'reason'}: links outside, FIFOs, loops, ...)."""

    files: list[str]
    refused: list[dict[str, str]]


@dataclasses.dataclass
class Layout:
    """The folder as read: examples, skipped files ({'file', 'reason'}), and label names
    (classes by index, or the multi-label columns; () when unlabelled)."""

    examples: list[Example]
    skipped: list[dict[str, str]]
    label_names: tuple[str, ...]
    multi_label: bool
    labels_from: str
    splits_from: str  # 'split folders', 'csv split column', or '' (none given)
    class_folders: dict[str, list[str]]  # split folder ('' without splits) -> class folders


def _sort_names(names) -> tuple[str, ...]:
    """Class names in order: numerically when all are integers, else as text."""
    names = set(names)
    if all(n.lstrip("-").isdigit() for n in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


def _split_of(parts: list[str], split_folders: bool) -> tuple[str | None, list[str]]:
    """(split from the first folder or None, the rest of the path)."""
    if not split_folders:
        return None, parts
    return SPLIT_FOLDERS.get(parts[0].lower()) if len(parts) > 1 else None, parts[1:]


def scan(
    root: pathlib.Path, files: list[str], labels_csv: pathlib.Path | None, columns: tuple
) -> Layout:
    """Reads the layout of `root` (resolved, holding `files`, from `userfiles.list_files`).

    Raises:
      DataError: the CSV has no header with a path and a label column, or names unknown
        label columns; a folder holds only one class.
    """
    split_folders = any(
        len(f.split("/")) > 1 and f.split("/")[0].lower() in SPLIT_FOLDERS for f in files
    )
    csv_rel = _relative(root, labels_csv) if labels_csv else None
    skipped: list[dict[str, str]] = []
    entries = []  # (file, split, rest of the path)
    for f in files:
        if f == csv_rel:
            continue
        split, rest = _split_of(f.split("/"), split_folders)
        if split_folders and split is None:
            skipped.append({"file": f, "reason": "outside the train/, val/ and test/ folders"})
        else:
            entries.append((f, split, rest))
    if labels_csv is not None:
        return _from_csv(root, labels_csv, columns, entries, skipped, split_folders)
    classes = _class_folders(root, split_folders)
    if not any(classes.values()):
        examples = [Example(f, None, split) for f, split, _ in entries]
        return Layout(examples, skipped, (), False, UNLABELLED, _given(split_folders), classes)
    names = _sort_names(c for cs in classes.values() for c in cs)
    if len(names) < 2:
        raise DataError(
            f"data.folder={root}: only one class folder ({names[0]!r}); classification needs "
            "two or more (for pretraining alone, put the images directly in the folder)"
        )
    index = {n: i for i, n in enumerate(names)}
    examples = []
    for f, split, rest in entries:
        if len(rest) < 2:
            skipped.append({"file": f, "reason": "not in a class folder"})
        else:
            examples.append(Example(f, index[rest[0]], split))
    return Layout(examples, skipped, names, False, FROM_FOLDERS, _given(split_folders), classes)


def _given(split_folders: bool, split_column: bool = False) -> str:
    return "csv split column" if split_column else "split folders" if split_folders else ""


def _class_folders(root: pathlib.Path, split_folders: bool) -> dict[str, list[str]]:
    """Split folder name ('' without split folders) -> its class folders (empty ones too)."""
    tops = [root]
    if split_folders:
        tops = [
            d
            for d in root.iterdir()
            if userfiles.is_folder(d, root) and d.name.lower() in SPLIT_FOLDERS
        ]
    return {
        ("" if top == root else top.name): sorted(
            d.name
            for d in top.iterdir()
            if userfiles.is_folder(d, root) and not d.name.startswith(".")
        )
        for top in tops
    }


def _relative(root: pathlib.Path, path: pathlib.Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _from_csv(root, labels_csv, columns, entries, skipped, split_folders) -> Layout:
    """Labels (and splits, from a `split` column) of the files the CSV lists."""
    header, rows = _read_csv(labels_csv)
    split_column = next((c for c in header[1:] if c.strip().lower() == "split"), None)
    label_columns = list(columns) or [c for c in header[1:] if c != split_column]
    unknown = [c for c in label_columns if c not in header[1:]]
    if unknown or not label_columns:
        raise DataError(
            f"data.labels={labels_csv}: label columns {unknown or label_columns} are not among "
            f"its columns {header[1:]} (the first, {header[0]!r}, is the image path); set "
            "config.data.label_columns to some of them"
        )
    multi = len(label_columns) > 1
    listed: dict[str, tuple[int, dict[str, str]]] = {}
    for line, row in rows:
        key = row[header[0]].strip().replace("\\", "/").removeprefix("./")
        if key in listed:
            first_line, first = listed[key]
            said = [{c: r[c].strip() for c in label_columns} for r in (first, row)]
            if said[0] != said[1]:
                raise DataError(
                    f"data.labels={labels_csv}: {key!r} has two different labels, "
                    f"{_shown(said[0])} on line {first_line} and {_shown(said[1])} on line "
                    f"{line}; keep one row per file"
                )
            skipped.append({"file": key, "reason": f"listed again on line {line} of the CSV"})
        else:
            listed[key] = (line, row)
    names = (
        label_columns
        if multi
        else _sort_names(v for _, row in listed.values() if (v := row[label_columns[0]].strip()))
    )
    examples = []
    for f, split, _ in entries:
        if f not in listed:
            skipped.append({"file": f, "reason": "not listed in data.labels"})
            continue
        line, row = listed.pop(f)
        label, problem = _csv_label(row, label_columns, names, multi)
        if split_column is not None:
            split = SPLIT_FOLDERS.get(row[split_column].strip().lower())
            if split is None:
                problem = problem or f"split {row[split_column]!r} is not train, val or test"
        if problem:
            skipped.append({"file": f, "reason": f"line {line} of the CSV: {problem}"})
        else:
            examples.append(Example(f, label, split))
    skipped += [{"file": f, "reason": "listed in data.labels, not found"} for f in listed]
    if not multi and len(names) == 1:
        raise DataError(
            f"data.labels={labels_csv}: column {label_columns[0]!r} holds one class "
            f"({names[0]!r}); classification needs two or more"
        )
    given = _given(split_folders, split_column is not None)
    return Layout(examples, skipped, tuple(names), multi, FROM_CSV, given, {})


def _shown(labels: dict[str, str]) -> str:
    """A CSV row's labels as the user wrote them: 'cat', or 'a=1, b=0' (multi-label)."""
    if len(labels) == 1:
        return repr(next(iter(labels.values())))
    return ", ".join(f"{c}={v}" for c, v in labels.items())


def _read_csv(path: pathlib.Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line number, row)]) of a CSV with a header row."""
    try:
        with io.TextIOWrapper(userfiles.open_file(path), encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [h for h in (reader.fieldnames or []) if h is not None]
            rows = [(reader.line_num, {k: v or "" for k, v in r.items()}) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error, userfiles.Refused) as e:
        raise DataError(f"data.labels={path}: cannot be read as CSV ({e})") from e
    if len(header) < 2:
        raise DataError(
            f"data.labels={path}: needs a header row naming a path column and at least one "
            f"label column; found {header}"
        )
    return header, rows


def _csv_label(row, columns, names, multi) -> tuple[Label, str]:
    """(label, '') or (None, the problem) for one CSV row."""
    if not multi:
        value = row[columns[0]].strip()
        return (names.index(value), "") if value else (None, f"no label in {columns[0]!r}")
    flags = []
    for c in columns:
        value = row[c].strip().lower()
        if value not in ("0", "1", "0.0", "1.0", "true", "false"):
            return None, f"column {c!r} is {row[c]!r}, expected 0 or 1"
        flags.append(int(value in ("1", "1.0", "true")))
    return tuple(flags), ""


def assign_splits(examples: list[Example], fractions: tuple, seed: int, given_by: str) -> str:
    """Gives every example without a split one, stratified by label; returns how the splits
    were made, for the manifest (`given_by` names where given splits came from).

    Examples with a split keep it; if none has one, all are drawn; otherwise the splits
    without any example are drawn from train. Within each label group (the class; for
    multi-label the first positive label), examples are ordered by SHA-256 of (seed, file),
    so the draw depends only on the files and the seed, never on the machine or on NumPy,
    and each drawn split gets round(n * fraction) of the group, at least one when the
    group has more examples than there are splits to draw.
    """
    given = {e.split for e in examples} - {None}
    drawn = [s for s in SPLITS[1:] if s not in given]
    for e in examples:
        e.split = e.split or "train"
    if not drawn:
        return given_by
    weights = dict(zip(SPLITS, fractions, strict=True))
    total = weights["train"] + sum(weights[s] for s in drawn)
    groups: dict[object, list[Example]] = {}
    for e in examples:
        if e.split == "train":
            groups.setdefault(_stratum(e.label), []).append(e)
    for group in groups.values():
        group.sort(key=lambda e: hashlib.sha256(f"{seed}/{e.file}".encode()).hexdigest())
        n, start = len(group), 0
        for s in drawn:
            count = round(n * weights[s] / total)
            if n > len(drawn) and weights[s] > 0:
                count = max(count, 1)
            count = max(0, min(count, n - start - 1))  # train keeps at least one
            for e in group[start : start + count]:
                e.split = s
            start += count
    by_seed = f"{'/'.join(drawn)} drawn by data.split_seed={seed}, stratified"
    return f"{given_by}; {by_seed}" if given_by else by_seed


def _stratum(label: Label) -> object:
    if isinstance(label, tuple):
        return next((i for i, v in enumerate(label) if v), len(label))
    return label
