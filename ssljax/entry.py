"""A job's life around its work, in one order and exactly once: the entry of every run.

    validate the config -> check the workdir -> distributed set-up -> lock the workdir ->
    library logs to its errors.log -> the job

`run(config, workdir, job)` is what `pretrain.run`, `evaluate.run` and `embed.run` call, and
through them `ssljax.jobs.run` (`launch.py`), the sweep's cells and the screen: nothing else
validates a run's config or takes its workdir's lock, so a job does each once (scenic's
`app.run` and big_vision's `main` are the models). The job itself receives a valid config and
a checked, held workdir; it builds its mesh, matches the workdir's config, opens its data and
derives its keys.
"""

import contextlib
import os
import pathlib
from collections.abc import Callable
from typing import TypeVar

import ml_collections

from ssljax import errors, parallel, validation, workdirs

T = TypeVar("T")
# (config, checked and held workdir) -> what the job returns.
Job = Callable[[ml_collections.ConfigDict, pathlib.Path], T]


def run(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    job: Job,
    *,
    what: str = "workdir",
    lock: bool = True,
    held: Callable[[pathlib.Path], None] | None = None,
) -> T:
    """Runs `job(config, workdir)` after the checks, in order; returns what it returns.

    Args:
      what: how the user named the workdir (`--workdir` on the command line), for messages.
      lock: hold the workdir for the job (every job but the preview, which writes one PNG).
      held: called with the workdir once it is held (launch.py: errors.log goes there).
    Raises:
      ConfigError: the config is impossible (`validation.validate`), before anything else.
      WorkdirError, ResourceError: the workdir cannot hold a run (`workdirs.check`).
      WorkdirInUseError: another run holds it.
    """
    validation.validate(config)
    path = workdirs.check(workdir, what=what)
    parallel.initialize_distributed(config.distributed)
    if not lock:
        return job(config, path)
    with contextlib.ExitStack() as stack:
        stack.enter_context(workdirs.lock(path))
        stack.enter_context(errors.library_logs_to_workdir(path))
        if held is not None:
            held(path)
        return job(config, path)
