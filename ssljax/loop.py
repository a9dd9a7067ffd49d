"""The training loop that pretraining and fine-tuning both run.

The callers build (model, optimizer, jitted step) and restore; `Loop.run` then drives the
steps in chunks of `train.steps_per_dispatch` (one `steps.scan_steps` dispatch each) and, after
a chunk, runs the periodic actions that are due, in order:

    non-finite guard   whenever anything below is due (one scalar read, no sync per step)
    actions            log, monitor, keep-best, ... (`Action`: a due test and a function)
    checkpoint         every `checkpoint_every` steps and at the end

Cadences are all `itstime`: an action every k steps is due after the chunk that crossed a
multiple of k, and at the end of the run. A chunk never crosses an epoch's end, so actions
every whole number of epochs see the state at exactly that epoch's end.

Every dispatch has the same shape, [steps_per_dispatch, ...]: the last chunk of an epoch,
when shorter, is padded with steps marked not live (they leave the state as it is), so the
train step is traced and compiled once per run. The host batch of steps [s, s + n) comes
from the caller's `batch_at(s, n)`, a pure function of the step (resume replays exactly),
which a streaming input pipeline can replace without touching the loop. Dispatch runs
under `jax.transfer_guard("disallow")`: its only transfers are the explicit host -> device
copies of the batch and the live mask.
"""

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from ssljax import checkpoint, interrupt, optim, parallel, writers
from ssljax.errors import NonFiniteLossError

# batch_at(first_step, n) -> host arrays [n, rows of this process, ...] of steps
# [first_step, first_step + n): the train step's batch arguments (images, labels, ...).
BatchAt = Callable[[int, int], tuple[np.ndarray, ...]]


def itstime(step: int, every: int, total: int, chunk: int = 1) -> bool:
    """Whether an action every `every` steps is due after the chunk of `chunk` steps that
    ended at `step` (steps done): a multiple of `every` lies in (step - chunk, step], or the
    run is over (step >= total). `every` <= 0: never."""
    if every <= 0:
        return False
    return step >= total or step // every > (step - chunk) // every


@dataclasses.dataclass(frozen=True)
class Chunk:
    """What a periodic action sees after a dispatch."""

    step: int  # steps done, counting the chunk's live steps (metrics.jsonl's step)
    size: int  # live steps in the chunk, >= 1
    state: Any  # the train state after them
    metrics: dict[str, jax.Array]  # float32 [steps_per_dispatch] each, on the device

    def last_metrics(self) -> dict[str, float]:
        """The metrics of the chunk's last live step, on the host."""
        host = jax.device_get(self.metrics)
        return {k: float(v[self.size - 1]) for k, v in host.items()}


@dataclasses.dataclass(frozen=True)
class Action:
    """A periodic action: `run(chunk)` after each chunk for which `due(step, size)` holds."""

    due: Callable[[int, int], bool]
    run: Callable[[Chunk], None]


def every(steps: int, plan: optim.StepPlan) -> Callable[[int, int], bool]:
    """The due test of an action every `steps` steps (<= 0: never) and at the run's end."""
    return lambda step, size: itstime(step, steps, plan.total_steps, size)


def restore(ckpt: checkpoint.Checkpointer, target: Any) -> tuple[Any, int]:
    """(the newest checkpoint that restores into `target`'s structure, its step), or
    (`target`, 0) when there is none."""
    restored = ckpt.restore_latest(target)
    return restored if restored is not None else (target, 0)


@contextlib.contextmanager
def closing(ckpt: checkpoint.Checkpointer, writer: writers.MetricWriter) -> Iterator[None]:
    """Closes `ckpt` (waiting for its last save) and then `writer`, also on an error."""
    try:
        yield
    finally:
        try:
            ckpt.close()
        finally:  # also when the last save failed (a full disk)
            writer.close()


@dataclasses.dataclass(frozen=True)
class Loop:
    """A run's loop; `run` drives it from a restored state."""

    # (state, batches tuple of [S, B, ...], live bool [S], train_key) -> (state, metrics [S]);
    # jitted `steps.scan_steps(step)` with the state donated.
    train: Callable[..., tuple[Any, dict[str, jax.Array]]]
    batch_at: BatchAt
    plan: optim.StepPlan
    mesh: Mesh
    writer: writers.MetricWriter
    ckpt: checkpoint.Checkpointer
    checkpoint_every: int  # steps; also at the end
    what: str  # "pretraining", "fine-tuning": named by the non-finite error
    fix: str  # what the non-finite error advises
    steps_per_dispatch: int = 1
    actions: Sequence[Action] = ()
    # The state -> the pytree saved (fine-tuning adds its best epochs' variables).
    saved: Callable[[Any], Any] = lambda state: state

    @property
    def chunk(self) -> int:
        """Steps per dispatch: a chunk never crosses an epoch's end, so at most an epoch."""
        return min(self.steps_per_dispatch, self.plan.steps_per_epoch)

    def run(self, state: Any, start_step: int, train_key: jax.Array) -> Any:
        """Trains from `state` at `start_step` to `plan.total_steps`; the final state."""
        key = jax.device_put(train_key, parallel.replicated(self.mesh))
        step, spe = start_step, self.plan.steps_per_epoch
        while step < self.plan.total_steps:
            interrupt.check()  # Ctrl-C stops here, between steps (`ssljax.interrupt`)
            size = min(self.chunk, (step // spe + 1) * spe - step)
            state, metrics = self._dispatch(state, step, size, key)
            step += size
            self.writer.progress(size)
            chunk = Chunk(step, size, state, metrics)
            due = [a for a in self.actions if a.due(step, size)]
            save = itstime(step, self.checkpoint_every, self.plan.total_steps, size)
            if due or save:
                check_finite(state, self.what, self.fix, self.ckpt)
            for action in due:
                action.run(chunk)
            if save:
                self.ckpt.save(step, self.saved(state))
        return state

    def _dispatch(self, state: Any, step: int, size: int, key: jax.Array):
        """Steps [step, step + size), padded to `chunk` steps, in one call of `train`."""
        host = self.batch_at(step, size)
        pad = self.chunk - size
        if pad:  # any batch will do: the padding steps are not live
            host = tuple(np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for a in host)
        live = np.arange(self.chunk) < size
        with jax.transfer_guard("disallow"):
            arrays = tuple(parallel.host_to_global(a, self.mesh, batch_axis=1) for a in host)
            live = jax.make_array_from_process_local_data(parallel.replicated(self.mesh), live)
            return self.train(state, arrays, live, key)


def check_finite(state: Any, what: str, fix: str, ckpt: checkpoint.Checkpointer) -> None:
    """Raises NonFiniteLossError when a step's loss was non-finite (`state.nonfinite_step`
    >= 0, 0-based), naming the step as metrics.jsonl counts it (from 1) and the newest
    checkpoint, which is kept."""
    bad = int(jax.device_get(state.nonfinite_step))
    if bad >= 0:
        raise NonFiniteLossError.at(what, bad + 1, ckpt.latest_step(), fix)
