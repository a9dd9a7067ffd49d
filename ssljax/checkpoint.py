"""Checkpoints: the only module that touches Orbax.

A run's checkpoints live in `WORKDIR/checkpoints/<step>/`. Orbax writes each into a
temporary folder and marks it with `commit_success.txt` when complete; a step folder without
that marker (a crash mid-write, a copy cut short) is not a checkpoint: it is moved aside as
`<step>.incomplete-<n>` (never deleted: nothing a user made is lost) and resume falls back
to the newest committed step. The final encoder of a pretraining run is exported on its own
to `WORKDIR/encoder/`, the folder evaluation runs load.
"""

import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

COMMIT_MARKER = "commit_success.txt"
CHECKPOINT_DIR = "checkpoints"
ENCODER_DIR = "encoder"


def committed_steps(directory: str | pathlib.Path) -> list[int]:
    """Steps with a complete checkpoint under `directory`, oldest first."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    steps = [
        int(p.name)
        for p in directory.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / COMMIT_MARKER).exists()
    ]
    return sorted(steps)


def _quarantine_incomplete(directory: pathlib.Path) -> None:
    if jax.process_index() != 0 or not directory.is_dir():
        return
    for p in directory.iterdir():
        if p.is_dir() and p.name.isdigit() and not (p / COMMIT_MARKER).exists():
            n = 0
            while (target := p.with_name(f"{p.name}.incomplete-{n}")).exists():
                n += 1
            logging.warning("checkpoint %s has no %s: moved aside to %s", p, COMMIT_MARKER, target)
            p.rename(target)


class Checkpointer:
    """Periodic checkpoints of a train state (any pytree of arrays), keeping the newest `keep`."""

    def __init__(self, workdir: str | pathlib.Path, keep: int):
        self.directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
        _quarantine_incomplete(self.directory)
        self._keep = keep
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True),
        )

    def save(self, step: int, state: Any) -> None:
        """Starts an asynchronous save; `wait()` blocks until it is committed."""
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(state))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def restore_latest(self, target: Any) -> tuple[Any, int] | None:
        """The newest committed checkpoint restored into `target`'s structure and shardings.

        Args:
          target: a state pytree (arrays or jax.ShapeDtypeStruct with shardings).
        Returns:
          (state, step), or None when there is no committed checkpoint.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        for step in reversed(committed_steps(self.directory)):
            try:
                state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # noqa: BLE001 - a damaged step must not stop resume
                logging.warning("checkpoint step %d cannot be restored (%s); trying older", step, e)
                # A failed restore can leave the manager's item handlers confused.
                self._manager.close()
                self._manager = self._open()
                continue
            return state, step
        return None

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def save_encoder(workdir: str | pathlib.Path, variables: dict[str, Any]) -> pathlib.Path:
    """Writes the encoder's variables ({'params': ..., 'batch_stats': ...}) atomically."""
    path = pathlib.Path(workdir).absolute() / ENCODER_DIR
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, variables, force=True)
    return path


def load_encoder(path: str | pathlib.Path) -> dict[str, Any]:
    """Reads encoder variables written by `save_encoder` (or from a workdir holding them).

    Raises:
      FileNotFoundError: naming the folder, when it holds no complete encoder export.
    """
    path = pathlib.Path(path).expanduser().absolute()
    if (path / ENCODER_DIR).is_dir():
        path = path / ENCODER_DIR
    if not (path / COMMIT_MARKER).exists() and not (path / "_CHECKPOINT_METADATA").exists():
        raise FileNotFoundError(
            f"no pretrained encoder in {path}: expected the '{ENCODER_DIR}/' folder that a "
            "finished pretraining run writes. Finish (or resume) that run first, or set "
            "config.init.workdir='' for random initialisation."
        )
    # Restore onto this host's devices, replicated, whatever topology saved it (a run
    # pretrained on 8 GPUs is evaluated on 1).
    from ssljax import parallel

    sharding = parallel.replicated(parallel.make_mesh())
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(path).item_metadata
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), meta
        )
        return ckptr.restore(path, target)
