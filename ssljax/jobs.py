"""The job table: what a run does, named once, from `--mode` and `config.method`.

    python launch.py --config=F --workdir=W [--mode=run|preview|embed]

`job_name(mode, method)` names the job once: `--mode=run` (the default) runs the method's job,
pretraining for a method of `facts.METHODS` and evaluation for a protocol of
`facts.PROTOCOLS`; `--mode=preview` and `--mode=embed` name their own. `run` then runs it
under `ssljax.entry` (validate, check, lock, logs: once). `launch.py` and the sweep's cells
call `run`; the job functions themselves (`pretrain.job`, `evaluate.job`, `embed.job`,
`preview.job`) only ever see a valid config and a checked, held workdir.
"""

import os
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import ml_collections

from ssljax import embed, entry, evaluate, facts, pretrain, preview
from ssljax.errors import ConfigError

MODES = ("run", "preview", "embed")


class JobSpec(NamedTuple):
    """One job: its work under `entry.run`, and whether it holds the workdir's lock."""

    work: entry.Job
    locks: bool


JOBS: dict[str, JobSpec] = {
    "pretrain": JobSpec(pretrain.job, locks=True),
    **{protocol: JobSpec(evaluate.job, locks=True) for protocol in facts.PROTOCOLS},
    "embed": JobSpec(embed.job, locks=True),
    "preview": JobSpec(preview.job, locks=False),
}


def job_name(mode: str, method: str) -> str:
    """The job `--mode` and `config.method` name: 'pretrain', a protocol, 'embed', 'preview'.

    Raises:
      ConfigError: an unknown mode, or `--mode=run` with a method that is neither a
        pretraining method nor a protocol.
    """
    if mode not in MODES:
        raise ConfigError(f"--mode={mode!r}: modes are {list(MODES)}")
    if mode != "run":
        return mode
    if method in facts.METHODS:
        return "pretrain"
    if method in facts.PROTOCOLS:
        return method
    raise ConfigError(
        f"config.method={method!r}: must be one of {[*facts.METHODS, *facts.PROTOCOLS]}"
    )


def run(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    mode: str = "run",
    *,
    what: str = "workdir",
    held: Callable[[pathlib.Path], None] | None = None,
) -> Any:
    """Runs the job `mode` and `config.method` name in `workdir`; returns what it returns.

    Args:
      what, held: as `entry.run` takes them (launch.py: '--workdir', and where errors.log goes).
    """
    spec = JOBS[job_name(mode, config.method)]
    return entry.run(config, workdir, spec.work, what=what, lock=spec.locks, held=held)
