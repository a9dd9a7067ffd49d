"""What a run writes: metrics.jsonl, TensorBoard events, a progress bar, JSON files, and the
config.json round trip (written, read back, compared on resume: the one place).

Only process 0 writes; on other processes every method is a no-op, so loops call them
unconditionally. JSON files are replaced atomically; metrics.jsonl is appended a line at a
time, so a run killed mid-write (kill -9, a full disk) can leave half a last line: reading
drops it with a warning, and a resumed run rewrites the file without it.
"""

import json
import math
import pathlib
import socket
import subprocess
import time
from typing import Any

import jax
import ml_collections
import tqdm

from ssljax import faults, files, version
from ssljax.errors import DataError, WorkdirError
from ssljax.files import (  # noqa: F401  (re-exported: writers is where runs write from)
    CONFIG_FILE,
    METRICS_FILE,
    atomic_write,
    read_config,
    read_json,
    read_metrics,
    remove_unfinished_writes,
)

# Keys that may change between a run and its resumption: they do not change the numbers.
RESUMABLE_CHANGES = ("log.", "data.root", "data.download", "distributed.", "eval.batch_size")


def write_json(path: str | pathlib.Path, obj: Any) -> None:
    """Writes JSON atomically (`atomic_write`), process 0 only."""
    if jax.process_index() != 0:
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = files.json_text(obj)
    atomic_write(path, lambda f: f.write(text.encode()))


def config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A config as config.json holds it: nested dicts, tuples as lists."""
    return json.loads(config.to_json_best_effort())


def write_config(workdir: str | pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Writes `workdir/config.json` (atomically, process 0 only)."""
    write_json(pathlib.Path(workdir) / CONFIG_FILE, config_json(config))


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """`workdir/config.json` back as a ConfigDict, JSON lists back to tuples.

    Raises:
      DataError: the file is missing or is not JSON.
    """
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: is {workdir} an ssljax run?")

    def tuples(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: tuples(v) for k, v in x.items()}
        return tuple(tuples(v) for v in x) if isinstance(x, list) else x

    return ml_collections.ConfigDict(tuples(read_config(workdir)))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_config_matches(
    workdir: str | pathlib.Path, config: ml_collections.ConfigDict | dict[str, Any]
) -> None:
    """A run resumed in `workdir` must use the config it started with.

    Args:
      config: the new run's config, or `config_json` of it.
    Raises:
      WorkdirError: naming the keys that differ from `workdir/config.json`.
      DataError: `workdir/config.json` is not JSON.
    """
    if not (pathlib.Path(workdir) / CONFIG_FILE).exists():
        return
    if isinstance(config, ml_collections.ConfigDict):
        config = config_json(config)
    old, new = _flatten(read_config(workdir)), _flatten(config)
    diffs = [
        k
        for k in sorted(old.keys() | new.keys())
        if not k.startswith(RESUMABLE_CHANGES) and old.get(k) != new.get(k)
    ]
    if diffs:
        raise WorkdirError(
            f"{workdir} holds a run with a different config ({', '.join(diffs)} differ). "
            "Use a new --workdir, or the original config to resume."
        )


class MetricWriter:
    """metrics.jsonl + TensorBoard + a tqdm bar over the run's steps.

    On resume from `initial_step`, records after that step (written by the interrupted run,
    which will be replayed) are dropped so the file reads as one uninterrupted run; starting
    at step 0 (no checkpoint to resume from), all of them are, the step-0 records included.
    """

    def __init__(
        self,
        workdir: str | pathlib.Path,
        total_steps: int,
        initial_step: int = 0,
        progress: bool = True,
        desc: str = "train",
    ):
        self.enabled = jax.process_index() == 0
        self.workdir = pathlib.Path(workdir)
        self._bar = None
        self._tb = None
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        old = read_metrics(self.workdir) if initial_step else []
        text = "".join(json.dumps(r) + "\n" for r in old if r.get("step", 0) <= initial_step)
        path = self.workdir / METRICS_FILE
        atomic_write(path, lambda f: f.write(text.encode()))
        self._file = path.open("a")
        self._tb = _Scalars(self.workdir / "tensorboard")
        self._bar = tqdm.tqdm(
            total=total_steps,
            initial=initial_step,
            desc=desc,
            disable=not progress,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Appends one record {'step': step, 'time': ..., **metrics} and logs scalars."""
        if not self.enabled:
            return
        record = {"step": int(step), "time": time.time()}
        record.update({k: _scalar(v) for k, v in metrics.items()})
        line = json.dumps(record) + "\n"
        faults.point("metrics_write", lambda: self._write_now(line[: len(line) // 2]))
        self._write_now(line)
        scalars = {
            k: v
            for k, v in record.items()
            if k not in ("step", "time") and isinstance(v, float | int) and math.isfinite(v)
        }
        self._tb.write(int(step), record["time"], scalars)

    def _write_now(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()

    def progress(self, steps: int, **postfix: Any) -> None:
        """Advances the bar by `steps`, showing `postfix` (loss, epoch, images/s, ...)."""
        if self._bar is None:
            return
        self._bar.update(steps)
        if postfix:
            self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)

    def close(self) -> None:
        """Closes metrics.jsonl, then TensorBoard's file; raises the first error (a full disk)."""
        if not self.enabled:
            return
        self._bar.close()
        try:
            self._file.close()
        finally:
            self._tb.close()


class _Scalars:
    """TensorBoard scalars in FOLDER/events.out.tfevents.<time>.<host>, written and flushed in
    the calling thread, as metrics.jsonl is.

    Not tensorboardX's SummaryWriter: it writes from a thread through a queue of 10 events,
    and when a full disk ends that thread, the 11th add_scalar waits forever (a run that
    hangs instead of saying the disk is full). Here a failed write raises in the loop.
    """

    def __init__(self, folder: pathlib.Path):
        from tensorboardX.proto import event_pb2
        from tensorboardX.record_writer import RecordWriter

        folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        # tensorboardX's own TFRecord framing, without its thread and queue.
        self._records = RecordWriter(str(folder / name))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def write(self, step: int, wall_time: float, scalars: dict[str, float]) -> None:
        from tensorboardX.proto import event_pb2, summary_pb2

        values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
        summary = summary_pb2.Summary(value=values)
        self._write(event_pb2.Event(wall_time=wall_time, step=step, summary=summary))

    def _write(self, event: Any) -> None:
        """One record, flushed (and fsynced) before the loop goes on."""
        self._records.write(event.SerializeToString())
        self._records.flush()

    def close(self) -> None:
        """Closes the file, also when its last flush fails (a full disk), then raises."""
        self._records.close()


def _scalar(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    return v


def _fmt(v: Any) -> str:
    v = _scalar(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def code_version() -> str:
    """The git commit of the ssljax code that runs (+'-dirty' with uncommitted changes), or
    its package version where it is not a git checkout: results name the code that made them."""
    root = pathlib.Path(version.__file__).resolve().parents[1]

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return run.stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return f"ssljax {version.__version__}"
    return head + ("-dirty" if dirty else "")
