"""The trainer: the set-up around `loop.Loop` that pretraining and fine-tuning share.

A job keeps only its model, its step and its actions; the trainer owns the rest, in the
order a run needs it:

    trainer = Trainer(config, workdir, plan, mesh, what="pretraining", fix="...")
    state = trainer.init(init_fn, key)              # jitted, replicated over the mesh
    state, start = trainer.restore(state)           # the newest checkpoint that restores
    train = jit_steps(step_fn, mesh, batch_args=1)  # `steps.scan_steps`, state donated
    trainer.open_writer(desc)                       # metrics.jsonl, TensorBoard, progress
    run = trainer.loop(train, batch_at, actions)    # checkpoint cadence, dispatch size
    with trainer.closing():                         # last save waited for, writer closed
        state = run.run(state, start, train_key)
"""

import contextlib
import dataclasses
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh

from ssljax import checkpoint, loop, optim, parallel, steps, writers


def jit_steps(step_fn: Callable, mesh: Mesh, batch_args: int) -> Callable:
    """`steps.scan_steps(step_fn)` jitted over `mesh`: (state, batches, live, key) -> (state,
    metrics); the state, live mask and key replicated, each of the `batch_args` batch arrays
    [S, B, ...] sharded on B, the state donated."""
    repl = parallel.replicated(mesh)
    batch = (parallel.batch_sharding(mesh, 1),) * batch_args
    return jax.jit(
        steps.scan_steps(step_fn),
        in_shardings=(repl, batch, repl, repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )


@dataclasses.dataclass
class Trainer:
    """init / restore / checkpoint / writer / loop of one run in a held workdir.

    Attributes:
      what: the run as the non-finite error names it ('pretraining', 'fine-tuning').
      fix: what that error advises.
    """

    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    plan: optim.StepPlan
    mesh: Mesh
    what: str
    fix: str
    ckpt: checkpoint.Checkpointer = dataclasses.field(init=False)
    start_step: int = dataclasses.field(init=False, default=0)
    writer: writers.MetricWriter | None = dataclasses.field(init=False, default=None)

    def __post_init__(self) -> None:
        self.ckpt = checkpoint.Checkpointer(self.workdir, keep=self.config.checkpoint.keep)

    def init(self, init_fn: Callable[..., Any], *args: Any) -> Any:
        """`init_fn(*args)` jitted, its output replicated over the mesh (a fresh state)."""
        return jax.jit(init_fn, out_shardings=parallel.replicated(self.mesh))(*args)

    def restore(self, target: Any) -> tuple[Any, int]:
        """(the newest checkpoint that restores into `target`'s structure, or `target`; the
        step to start from)."""
        restored, self.start_step = loop.restore(self.ckpt, target)
        return restored, self.start_step

    def open_writer(self, desc: str) -> writers.MetricWriter:
        """The run's metrics.jsonl, TensorBoard events and progress bar, from `start_step`."""
        self.writer = writers.MetricWriter(
            self.workdir,
            self.plan.total_steps,
            self.start_step,
            self.config.log.progress,
            desc=desc,
        )
        return self.writer

    def loop(
        self,
        train: Callable,
        batch_at: loop.BatchAt,
        actions: Sequence[loop.Action],
        saved: Callable[[Any], Any] | None = None,
    ) -> loop.Loop:
        """The run's `loop.Loop`: a checkpoint every `checkpoint.every_epochs` epochs and at
        the end, `train.steps_per_dispatch` steps per call."""
        return loop.Loop(
            train=train,
            batch_at=batch_at,
            plan=self.plan,
            mesh=self.mesh,
            writer=self.writer,
            ckpt=self.ckpt,
            checkpoint_every=self.config.checkpoint.every_epochs * self.plan.steps_per_epoch,
            what=self.what,
            fix=self.fix,
            steps_per_dispatch=self.config.train.steps_per_dispatch,
            actions=actions,
            **({} if saved is None else {"saved": saved}),
        )

    @contextlib.contextmanager
    def closing(self) -> Iterator[None]:
        """Closes the checkpointer (waiting for its last save), then the writer, also on an
        error (`loop.closing`)."""
        with loop.closing(self.ckpt, self.writer):
            yield
