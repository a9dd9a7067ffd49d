"""Checkpoints: the only module that touches Orbax.

A run's checkpoints live in `WORKDIR/checkpoints/<step>/`. Orbax writes each into a
temporary folder and marks it with `commit_success.txt` when complete; a step folder without
that marker (a crash mid-write, a copy cut short) is not a checkpoint: it is moved aside as
`<step>.incomplete-<n>`. A marked step that still fails to restore (a data file deleted or
cut short) is moved aside as `<step>.damaged-<n>`, with one line naming it and the details
in WORKDIR/errors.log, and resume falls back to the step before it; the next restart finds
nothing wrong and says nothing. Nothing is deleted that a user made or a run could use; the one
exception is Orbax's temporary folder of a save cut short (`<name>.orbax-checkpoint-tmp-<t>`,
left by kill -9 or a full disk), removed with one line when the run restarts: the step it
held is replayed and saved again. The final encoder of a pretraining run is exported on its
own to `WORKDIR/encoder/`, the folder evaluation runs load.
"""

import logging
import pathlib
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from ssljax import errors, faults
from ssljax.files import CONFIG_FILE

COMMIT_MARKER = "commit_success.txt"
CHECKPOINT_DIR = "checkpoints"
ENCODER_DIR = "encoder"
# In the name of the folder Orbax writes a save into before renaming it to its final name.
ORBAX_TMP = ".orbax-checkpoint-tmp"


def _save_each_array_from_one_replica() -> None:
    """Turns off Orbax's replica-parallel saving, its default except on GPU.

    It splits every replicated array into one slice per device, each an op-by-op dispatch
    (and a compile per new shape): on 8 devices ~1,700 slices per save of a ResNet-18
    state, 5-18 s on 2 CPU cores, to share out writes that are a few MB. One replica
    writes each array instead, as Orbax does on GPU.
    """
    default = ocp.type_handlers.get_type_handler(jax.Array)
    handler = ocp.type_handlers.ArrayHandler(
        use_replica_parallel=False,
        # Keep the per-array metadata the default handler records (None where absent).
        array_metadata_store=getattr(default, "_array_metadata_store", None),
    )
    absl_logger = logging.getLogger("absl")  # Orbax warns of any override, on purpose or not
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
        absl_logger.setLevel(level)


_save_each_array_from_one_replica()


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


def _move_aside(step_dir: pathlib.Path, kind: str) -> pathlib.Path:
    """Renames `step_dir` to `<step>.<kind>-<n>` (the first n free); returns the new path."""
    n = 0
    while (target := step_dir.with_name(f"{step_dir.name}.{kind}-{n}")).exists():
        n += 1
    step_dir.rename(target)
    return target


def _quarantine_incomplete(directory: pathlib.Path) -> None:
    if jax.process_index() != 0 or not directory.is_dir():
        return
    for p in directory.iterdir():
        if p.is_dir() and p.name.isdigit() and not (p / COMMIT_MARKER).exists():
            target = _move_aside(p, "incomplete")
            logging.warning("checkpoint %s has no %s: moved aside to %s", p, COMMIT_MARKER, target)


def _remove_unfinished_saves(directory: pathlib.Path) -> None:
    """Deletes Orbax's temporary folders under `directory`: saves that never finished, by a
    run that held the workdir before this one (the lock makes sure none is still writing)."""
    if jax.process_index() != 0 or not directory.is_dir():
        return
    for p in directory.iterdir():
        if ORBAX_TMP in p.name and p.is_dir():
            shutil.rmtree(p)
            logging.warning("removed %s: the unfinished save of a run that stopped mid-write", p)


class Checkpointer:
    """Periodic checkpoints of a train state (any pytree of arrays), keeping the newest `keep`."""

    def __init__(self, workdir: str | pathlib.Path, keep: int, repair: bool = True):
        """Opens WORKDIR/checkpoints.

        Args:
          keep: how many of the newest checkpoints `save` keeps.
          repair: move incomplete and damaged steps aside (False: only read, for a run that
            may be live, as the report's figures do).
        """
        self.workdir = pathlib.Path(workdir).absolute()
        self.directory = self.workdir / CHECKPOINT_DIR
        self._repair = repair
        if repair:
            _remove_unfinished_saves(self.directory)
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
        faults.point("checkpoint_write")

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def latest_step(self) -> int | None:
        """The newest committed step, after pending saves finish; None when there is none."""
        self.wait()
        steps = committed_steps(self.directory)
        return steps[-1] if steps else None

    def restore(self, step: int, target: Any) -> Any:
        """The committed checkpoint of `step`, into `target`'s structure and shardings."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_latest(self, target: Any) -> tuple[Any, int] | None:
        """The newest checkpoint that restores, into `target`'s structure and shardings.

        A committed step that fails to restore is moved aside (`repair`) and the one before
        it is tried.

        Args:
          target: a state pytree (arrays or jax.ShapeDtypeStruct with shardings).
        Returns:
          (state, step), or None when no checkpoint restores.
        """
        for step in reversed(committed_steps(self.directory)):
            try:
                state = self.restore(step, target)
            except Exception as e:  # noqa: BLE001 - a damaged step must not stop resume
                self._damaged(step, e)
                # A failed restore can leave the manager's item handlers confused.
                self._manager.close()
                self._manager = self._open()
                continue
            return state, step
        return None

    def _damaged(self, step: int, exc: Exception) -> None:
        """One line naming the damaged step; its details to errors.log; the step set aside."""
        step_dir = self.directory / str(step)
        if not self._repair or jax.process_index() != 0:
            logging.warning("checkpoint %s cannot be restored; trying the one before", step_dir)
            return
        log = errors.append_log(self.workdir, f"checkpoint {step_dir} cannot be restored", exc)
        target = _move_aside(step_dir, "damaged")
        logging.warning(
            "checkpoint %s cannot be restored (%s%s): moved aside to %s; trying the one before",
            step_dir,
            type(exc).__name__,
            f"; details in {log}" if log else "",
            target.name,
        )

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def save_encoder(workdir: str | pathlib.Path, variables: dict[str, Any]) -> pathlib.Path:
    """Writes the encoder's variables ({'params': ..., 'batch_stats': ...}) atomically, after
    removing what an export cut short left."""
    path = pathlib.Path(workdir).absolute() / ENCODER_DIR
    _remove_unfinished_saves(path.parent)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, variables, force=True)
        faults.point("encoder_export")
    return path


def run_config_file(source: str | pathlib.Path) -> pathlib.Path | None:
    """The config.json of the pretraining run whose encoder `source` names (`init.workdir`:
    the run's workdir, or its `encoder/` folder), or None for an export standing alone: the
    one way evaluation, embed and `ssljax.load_encoder` find the run behind an encoder."""
    source = pathlib.Path(source).expanduser()
    folders = [source, source.parent] if source.name == ENCODER_DIR else [source]
    return next((f / CONFIG_FILE for f in folders if (f / CONFIG_FILE).is_file()), None)


def load_encoder(path: str | pathlib.Path) -> dict[str, Any]:
    """Reads encoder variables written by `save_encoder` (or from a workdir holding them).

    Raises:
      ConfigError: naming the folder, when it holds no complete encoder export.
    """
    path = pathlib.Path(path).expanduser().absolute()
    if (path / ENCODER_DIR).is_dir():
        path = path / ENCODER_DIR
    if not (path / COMMIT_MARKER).exists() and not (path / "_CHECKPOINT_METADATA").exists():
        raise errors.ConfigError(
            f"config.init.workdir: no pretrained encoder in {path}: expected the "
            f"'{ENCODER_DIR}/' folder that a finished pretraining run writes. Finish (or "
            "resume) that run first, or set config.init.workdir='' for random initialisation."
        )
    # Restore onto this host's devices, replicated, whatever topology saved it (a run
    # pretrained on 8 GPUs is evaluated on 1).
    from ssljax import parallel

    sharding = parallel.replicated(parallel.make_mesh())
    try:
        with ocp.StandardCheckpointer() as ckptr:
            meta = ckptr.metadata(path).item_metadata
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), meta
            )
            return ckptr.restore(path, target)
    except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
        raise errors.DataError(
            f"the encoder in {path} cannot be read ({type(e).__name__}): it is damaged. Move "
            "it aside and run its pretraining command again, which exports it anew from the "
            "last checkpoint"
        ) from e
