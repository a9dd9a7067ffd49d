"""Reading and writing a run's files without JAX: atomic writes, JSON, config.json, metrics.jsonl.

The study wing (the report, the health verdict) reads runs through this module, so that it
never imports the training stack; `writers` writes through it (process 0 only) and re-exports
its names.
"""

import json
import logging
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any, BinaryIO

from ssljax.errors import DataError

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
# atomic_write's temporary file beside NAME: .NAME.<pid>.tmp
_TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"\..+\.\d+\.tmp")


def atomic_write(path: str | pathlib.Path, write: Callable[[BinaryIO], None]) -> None:
    """Calls write(file) on a temporary file beside `path`, syncs it, then renames it over
    `path`: a crash leaves the old file or the new one, never half of one."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_unfinished_writes(folder: str | pathlib.Path) -> None:
    """Deletes the temporary files `atomic_write` left in `folder` when its process was killed
    mid-write; call only while holding the folder (`workdirs.lock`): a live writer's would go."""
    for p in pathlib.Path(folder).glob(f".*{_TMP_SUFFIX}"):
        if _TMP_NAME.fullmatch(p.name) and p.is_file():
            p.unlink(missing_ok=True)


def json_text(obj: Any) -> str:
    """`obj` as the JSON text ssljax writes: indented, keys sorted, numpy arrays as lists."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n"


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_json(path: str | pathlib.Path) -> Any:
    """The JSON in `path`; DataError naming the file when it is not JSON."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_bytes())
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}): it is damaged or was edited") from e


def read_config(workdir: str | pathlib.Path) -> dict[str, Any]:
    """`workdir/config.json` as written by `write_config`; DataError when it is not JSON."""
    return read_json(pathlib.Path(workdir) / CONFIG_FILE)


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
    """All records of a run's metrics.jsonl (empty when it has none).

    A last line that is not JSON was cut short by a run that died while writing it: it is
    dropped, with a warning naming the file.

    Raises:
      DataError: naming the file and line, when a line before the last is not JSON.
    """
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    lines = [(i, line) for i, line in enumerate(path.read_bytes().splitlines(), 1) if line.strip()]
    records = []
    for i, line in lines:
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
            records.append(record)
        except ValueError as e:
            if i != lines[-1][0]:
                raise DataError(
                    f"{path}, line {i}, is not JSON ({e}): the file was edited or damaged. "
                    "Fix or delete that line"
                ) from e
            logging.warning(
                "%s: dropped its last line, cut short when the run writing it stopped", path
            )
    return records
