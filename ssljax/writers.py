"""What a run writes for people: metrics.jsonl, TensorBoard events, a progress bar, JSON files.

Only process 0 writes; on other processes every method is a no-op, so loops call them
unconditionally.
"""

import json
import math
import os
import pathlib
import time
from typing import Any

import jax
import tqdm

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
# Keys that may change between a run and its resumption: they do not change the numbers.
RESUMABLE_CHANGES = ("log.", "data.root", "data.download", "distributed.", "eval.batch_size")


def write_json(path: str | pathlib.Path, obj: Any) -> None:
    """Writes JSON atomically (temporary file, then rename), process 0 only."""
    if jax.process_index() != 0:
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_config_matches(workdir: str | pathlib.Path, config: dict[str, Any]) -> None:
    """A run resumed in `workdir` must use the config it started with.

    Args:
      config: the new run's config as JSON-compatible dicts (tuples as lists).
    Raises:
      ValueError naming the keys that differ from `workdir/config.json`.
    """
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.exists():
        return
    old, new = _flatten(json.loads(path.read_text())), _flatten(config)
    diffs = [
        k
        for k in sorted(old.keys() | new.keys())
        if not k.startswith(RESUMABLE_CHANGES) and old.get(k) != new.get(k)
    ]
    if diffs:
        raise ValueError(
            f"{workdir} holds a run with a different config ({', '.join(diffs)} differ). "
            "Use a new --workdir, or the original config to resume."
        )


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
    """All records of a run's metrics.jsonl (empty when it has none)."""
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricWriter:
    """metrics.jsonl + TensorBoard + a tqdm bar over the run's steps.

    On resume from `initial_step`, records after that step (written by the interrupted run,
    which will be replayed) are dropped so the file reads as one uninterrupted run.
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
        kept = [r for r in read_metrics(self.workdir) if r.get("step", 0) <= initial_step]
        path = self.workdir / METRICS_FILE
        tmp = path.with_name(METRICS_FILE + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)
        self._file = path.open("a")
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(self.workdir / "tensorboard"))
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
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for k, v in record.items():
            if k not in ("step", "time") and isinstance(v, float | int) and math.isfinite(v):
                self._tb.add_scalar(k, v, int(step))

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
        if not self.enabled:
            return
        self._bar.close()
        self._tb.close()
        self._file.close()


def _scalar(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    return v


def _fmt(v: Any) -> str:
    v = _scalar(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)
