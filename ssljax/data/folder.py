"""`config.data.folder=DIR`: a folder of images, converted once into the stored form.

The first use converts DIR into `<data.root>/folders/<name>-<key>/<name>_<size>.npz` (the
MedMNIST layout every dataset of ssljax is stored in, written by `npzstream.NpzWriter` in
bounded memory) and `manifest.json` beside it: every file with its split and label, every
skipped file with its reason, the options, the task and label names. The key hashes the
folder's file list and contents with the options, so later runs reuse the conversion and a
changed folder (or option) gets a new one; content hashes are cached by (path, size,
mtime_ns) so a rerun does not read every image again. A conversion is built in a private
temporary folder and renamed into place under a lock file, so concurrent runs on the same
folder wait for one conversion and never see half of one. The dataset then loads like a
user's .npz (`load.load_npz`).

Every file is listed, hashed and opened through `userfiles.py` (regular files inside the
folder only); labels and splits: `folder_scan.py`; pixels: `imagefile.py` (DICOM: `dicom.py`).
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import ml_collections
import numpy as np
import tqdm

from ssljax.data import folder_scan, imagefile, load, registry, userfiles
from ssljax.data.npzstream import NpzWriter
from ssljax.errors import ConfigError, DataError

FORMAT = 1  # of the conversion; part of the key, so a new format converts again
FOLDERS_DIR = "folders"
MANIFEST = "manifest.json"
_CHUNK = 256  # images decoded (in threads) and appended per step
_NONE = registry.UNLABELLED


def source_folder(data_config: ml_collections.ConfigDict) -> pathlib.Path:
    """`data.folder`, '~' expanded and resolved; ConfigError when it is not a folder."""
    folder = pathlib.Path(data_config.folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"config.data.folder={data_config.folder!r}: no such folder")
    return folder.resolve()


def labels_file(data_config: ml_collections.ConfigDict) -> pathlib.Path | None:
    """`data.labels` (a CSV), as given or else relative to `data.folder`; None when unset.

    Raises:
      ConfigError: it names no file.
    """
    if not data_config.labels:
        return None
    given = pathlib.Path(data_config.labels).expanduser()
    for path in (given, pathlib.Path(data_config.folder).expanduser() / given):
        if path.is_file():
            return path.resolve()
    raise ConfigError(
        f"config.data.labels={data_config.labels!r}: no such file (looked in the current "
        f"folder and in data.folder={data_config.folder!r})"
    )


def load_folder(
    data_config: ml_collections.ConfigDict, progress: bool = True
) -> tuple[load.Dataset, dict]:
    """The folder's dataset (converted first if needed) and its manifest."""
    path, manifest = convert(data_config, progress)
    return converted_dataset(path, manifest), manifest


def manifest_files(manifest: dict) -> dict[str, list[str]]:
    """Each split's files (relative to the folder) in row order, as `manifest.json` lists them."""
    return {s: [r["file"] for r in manifest["splits"][s]] for s in load.SPLITS}


def converted_dataset(path: pathlib.Path, manifest: dict) -> load.Dataset:
    """The .npz `convert` wrote, in memory, under the folder's own name and class names.

    Prints one line: the images per split and how many files were skipped.
    """
    dataset = load.load_npz(path, task=manifest["task"])
    names = tuple(manifest["label_names"])
    dataset = dataclasses.replace(
        dataset,
        name=manifest["name"],
        label_names=names,
        num_outputs=registry.num_outputs(manifest["task"], names),
        files=manifest_files(manifest),
    )
    counts = ", ".join(f"{s} {len(manifest['splits'][s])}" for s in load.SPLITS)
    skipped = len(manifest["skipped"])
    print(
        f"data.folder {manifest['source']}: {sum(len(v) for v in manifest['splits'].values())} "
        f"images at {dataset.size} px ({counts}; {manifest['task']}); {skipped} file(s) "
        f"skipped{', reasons in ' + str(path.parent / MANIFEST) if skipped else ''}",
        flush=True,
    )
    return dataset


def convert(data_config: ml_collections.ConfigDict, progress: bool = True) -> tuple:
    """(path of the .npz, manifest) for `data.folder`, converting it unless already done."""
    source = source_folder(data_config)
    csv_path = labels_file(data_config)
    name = _name(data_config, source)
    files, refused = userfiles.list_files(source)
    root = pathlib.Path(data_config.root).expanduser() / FOLDERS_DIR
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"config.data.root: cannot create {root} for the converted folder ({e.strerror}); "
            "set config.data.root to a folder you can write in"
        ) from e
    hashes = _content_hashes(source, files, root, progress)
    options = _options(data_config, csv_path)
    key_text = json.dumps([FORMAT, sorted(hashes.items()), refused, options], sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:12]
    out = root / f"{name}-{key}"
    npz = out / f"{name}_{data_config.size}.npz"
    if not (out / MANIFEST).is_file():
        with _locked(root / f".{name}-{key}.lock"):
            if not (out / MANIFEST).is_file():
                listed = folder_scan.Listing(files, refused)
                _convert_into(out, source, listed, csv_path, data_config, name, key, progress)
    return npz, json.loads((out / MANIFEST).read_text())


def _name(data_config: ml_collections.ConfigDict, source: pathlib.Path) -> str:
    """`data.name` unless it is still a registry name, else the folder's name; file-safe."""
    return registry.own_name({**data_config, "folder": str(source)})


def _options(data_config: ml_collections.ConfigDict, csv_path: pathlib.Path | None) -> dict:
    """What decides the conversion besides the images: part of its key and its manifest."""
    d = data_config
    return {
        "size": d.size,
        "resize": d.resize,
        "channels": d.channels,
        "min_size": min_size(d),
        "max_pixels": d.max_pixels,
        "labels": str(csv_path) if csv_path else "",
        "labels_sha256": userfiles.sha256(csv_path) if csv_path else "",
        "label_columns": list(d.label_columns),
        "split_fractions": list(d.split_fractions),
        "split_seed": d.split_seed,
        "task": d.task,
    }


def min_size(data_config: ml_collections.ConfigDict) -> int:
    """The smallest shorter side (pixels) an image may have: data.min_size, 0: data.size // 4."""
    return data_config.min_size or data_config.size // 4


def _content_hashes(source, files, root, progress) -> dict[str, str]:
    """file -> SHA-256 of its bytes, from the cache when its (size, mtime_ns) is unchanged."""
    cache_path = root / f".hashes-{hashlib.sha1(str(source).encode()).hexdigest()[:12]}.json"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    try:
        out, kept = userfiles.content_hashes(source, files, cache, progress)
    except userfiles.Refused as e:
        raise DataError(f"data.folder={source}: a file changed while it was read ({e})") from e
    if kept != cache:
        _write_json(cache_path, kept)
    return out


def _write_json(path: pathlib.Path, obj) -> None:
    """JSON written to a private temporary file, then renamed over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """Holds an exclusive flock on `path` (created) for the block."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert_into(out, source, listed, csv_path, data_config, name, key, progress) -> None:
    """Converts into a temporary folder beside `out`, then renames it to `out`."""
    for stale in out.parent.glob(f".{out.name}.tmp*"):  # a conversion that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        with NpzWriter(tmp / f"{name}_{data_config.size}.npz") as writer:
            manifest = _convert(source, listed, csv_path, data_config, writer, progress)
        manifest.update(name=name, key=key, format=FORMAT)
        _write_json(tmp / MANIFEST, manifest)
        tmp.chmod(0o755)  # mkdtemp's 0o700 would hide a shared data root from other users
        for f in tmp.iterdir():
            f.chmod(0o644)
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / MANIFEST).is_file():  # a converter that held no lock won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert(source, listed, csv_path, data_config, writer: NpzWriter, progress) -> dict:
    """Reads every image into `writer`, a chunk at a time; returns the manifest."""
    d = data_config
    layout = folder_scan.scan(source, listed.files, csv_path, tuple(d.label_columns))
    task = _task(layout, d.task, source)
    skipped = list(layout.skipped) + listed.refused
    probes = {}
    for e in tqdm.tqdm(
        layout.examples, desc="reading headers", disable=not progress, leave=False, delay=1
    ):
        try:
            probes[e.file] = imagefile.probe(source / e.file, min_size(d), d.max_pixels, source)
        except imagefile.Unusable as err:
            skipped.append({"file": e.file, "reason": str(err)})
    kept = [e for e in layout.examples if e.file in probes]
    votes = collections.Counter(p.channels for p in probes.values())
    channels = d.channels or (1 if votes[1] > votes[3] else 3)
    splits_from = folder_scan.assign_splits(
        kept, tuple(d.split_fractions), d.split_seed, layout.splits_from
    )
    width = len(layout.label_names) if layout.multi_label else int(task != _NONE)
    notes: collections.Counter = collections.Counter()
    rows = {}
    bar = tqdm.tqdm(total=len(kept), desc=f"converting {source.name}", disable=not progress)
    with bar, concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for split in folder_scan.SPLITS:
            writer.ensure(f"{split}_images", (0, d.size, d.size, channels), np.uint8)
            writer.ensure(f"{split}_labels", (0, width), np.int64)
            todo = sorted((e for e in kept if e.split == split), key=lambda e: e.file)

            def read(e):
                return _read(source, e.file, d, channels)

            rows[split] = []
            for start in range(0, len(todo), _CHUNK):
                chunk = todo[start : start + _CHUNK]
                results = zip(chunk, pool.map(read, chunk), strict=True)
                rows[split] += _append(writer, split, results, layout, width, notes, skipped)
                bar.update(len(chunk))
    _check_not_empty(rows, layout, task, source, skipped)
    return {
        "source": str(source),
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "options": _options(d, csv_path),
        "task": task,
        "label_names": list(layout.label_names),
        "labels_from": layout.labels_from,
        "splits_from": splits_from,
        "n_channels": channels,
        "channels_found": {"grey": votes[1], "rgb": votes[3]},
        "converted": dict(sorted(notes.items())),
        "splits": {s: [_row(e, layout) for e in rows[s]] for s in rows},
        "skipped": sorted(skipped, key=lambda s: s["file"]),
    }


def _append(writer, split, results, layout, width, notes, skipped) -> list[folder_scan.Example]:
    """Appends the images read from one chunk (and their labels [n, width]) to `split`;
    lists the failures in `skipped`; returns the examples written, in order."""
    images, labels, written = [], [], []
    for e, result in results:
        if isinstance(result, str):
            skipped.append({"file": e.file, "reason": result})
            continue
        images.append(result[0])
        notes.update(result[1])
        labels.append(_label_row(e.label, layout))
        written.append(e)
    if images:
        writer.append(f"{split}_images", np.stack(images))
        writer.append(f"{split}_labels", np.asarray(labels, np.int64).reshape(len(labels), width))
    return written


def _read(source: pathlib.Path, file: str, d: ml_collections.ConfigDict, channels: int):
    """(pixels, notes), or the reason the file is skipped."""
    try:
        return imagefile.read(source / file, d.size, d.resize, channels, d.max_pixels, source)
    except imagefile.Unusable as e:
        return str(e)


def _label_row(label, layout: folder_scan.Layout) -> list[int]:
    if label is None:
        return []
    return list(label) if layout.multi_label else [label]


def _row(e: folder_scan.Example, layout: folder_scan.Layout) -> dict:
    """The manifest's entry of a converted image: its file and label name(s)."""
    names = layout.label_names
    if e.label is None:
        return {"file": e.file, "label": None}
    if layout.multi_label:
        return {"file": e.file, "label": [n for n, v in zip(names, e.label, strict=True) if v]}
    return {"file": e.file, "label": names[e.label]}


def _task(layout: folder_scan.Layout, requested: str, source: pathlib.Path) -> str:
    """The task the labels imply, or `data.task` when it fits them."""
    if layout.labels_from == folder_scan.UNLABELLED:
        implied = _NONE
    elif layout.multi_label:
        implied = registry.MULTI_LABEL
    else:
        implied = registry.BINARY if len(layout.label_names) == 2 else registry.MULTI_CLASS
    if not requested or requested == implied:
        return implied
    fits = implied in (registry.BINARY, registry.MULTI_CLASS) and requested == registry.ORDINAL
    if not fits:
        raise ConfigError(
            f"config.data.task={requested!r} does not fit the labels of data.folder={source} "
            f"({implied}, {len(layout.label_names)} labels); leave data.task empty"
        )
    return requested


def _check_not_empty(rows, layout, task, source, skipped) -> None:
    """DataError when a split, or a class in a split, has no image (nothing is written)."""
    why = collections.Counter(s["reason"] for s in skipped).most_common(1)
    hint = f"; {len(skipped)} file(s) skipped, most often: {why[0][0]}" if why else ""
    for split, examples in rows.items():
        if not examples:
            raise DataError(
                f"data.folder={source}: the {split} split has no readable image{hint}. Add "
                f"images to it, or change data.split_fractions"
            )
    if task in (_NONE, registry.MULTI_LABEL):
        return
    for split, examples in rows.items():
        present = {e.label for e in examples}
        for i, name in enumerate(layout.label_names):
            if i not in present:
                raise DataError(
                    f"data.folder={source}: class {name!r} has no readable image in the "
                    f"{split} split{hint}. Every class needs images in train, val and test: "
                    "add some, or remove the class folder"
                )
