"""The failures a user can cause, and how the entry points report them: one line, no traceback.

A check that finds a problem the user can fix raises an `SsljaxError` subclass whose message
names the file, key or value and says what to do. The entry points (`launch.py`, the sweep,
`python -m ssljax.report`) turn it, and the OS errors of a full disk or a folder that cannot
be written, into one line `error: ...` on stderr and exit status 1 (`report_failure`); the
traceback goes to WORKDIR/errors.log, or to the terminal with --verbose. Ctrl-C says where the
run will resume and exits 130. Anything else is a bug, and its traceback is shown.
"""

import contextlib
import datetime
import errno
import logging
import os
import pathlib
import sys
import traceback
from collections.abc import Iterator

ERRORS_LOG = "errors.log"
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
# Libraries whose log records (tracebacks from Orbax's background threads, TensorStore specs
# of 60 lines, TFDS's "Using custom data configuration: MedMNISTConfig(...)") go to
# errors.log rather than the terminal while a run holds its workdir.
QUIET_LIBRARIES = ("orbax", "tensorstore", "tensorflow_datasets")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# How TensorStore (under Orbax) reports ENOSPC: a ValueError, not an OSError.
_DISK_FULL_TEXT = ("No space left on device", "os_error_code='28'")


class SsljaxError(Exception):
    """A problem the user can fix; the message is one line naming what and saying how."""


class ConfigError(SsljaxError, ValueError):
    """A config value that cannot work; the message names the key."""


class DataError(SsljaxError, ValueError):
    """A data file (dataset, metrics.jsonl, results.json) that cannot be used; names the file."""


class WorkdirError(SsljaxError):
    """A workdir that cannot be used: empty, a file, not writable, or another run's."""


class WorkdirInUseError(WorkdirError):
    """Another live process holds the workdir's lock."""


class ResourceError(SsljaxError):
    """Not enough of something the machine must provide (free disk space)."""


class NonFiniteLossError(SsljaxError, FloatingPointError):
    """The loss became NaN or infinite; training stopped."""

    @classmethod
    def at(
        cls, what: str, step: int, checkpoint_step: int | None, fix: str
    ) -> "NonFiniteLossError":
        """The error for a loss first non-finite at `step` (counted from 1, as metrics.jsonl
        counts), with the newest committed checkpoint `checkpoint_step` (None: none yet)."""
        kept = (
            f"the last good checkpoint (step {checkpoint_step}) is kept"
            if checkpoint_step is not None
            else "no checkpoint was written yet"
        )
        return cls(
            f"the {what} loss became non-finite at step {step}; that update was skipped and "
            f"training stopped; {kept}. {fix}"
        )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) is a full disk or quota."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return True
        if any(text in str(e) for text in _DISK_FULL_TEXT):
            return True
    return False


def user_message(exc: BaseException) -> str | None:
    """The one line for a failure a user can cause; None for anything else (a bug)."""
    if isinstance(exc, SsljaxError):
        return str(exc)
    if disk_full(exc):
        where = next((e.filename for e in _chain(exc) if getattr(e, "filename", None)), None)
        return f"no space left on device{f' writing {where}' if where else ''}: free some space"
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        return f"{what}: {exc.filename}" if exc.filename else what
    return None


def append_log(workdir: str | os.PathLike, title: str, exc: BaseException) -> pathlib.Path | None:
    """Appends `title` and the traceback of `exc` to WORKDIR/errors.log; its path, or None
    when `workdir` is not a folder (nothing is created for a log)."""
    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        return None
    path = workdir / ERRORS_LOG
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    text = "".join(traceback.format_exception(exc))
    try:
        with path.open("a") as f:
            f.write(f"--- {stamp} pid {os.getpid()}: {title}\n{' '.join(sys.argv)}\n{text}\n")
    except OSError:  # a full disk: the one line on stderr must still come out
        return None
    return path


def interrupted_line(resume: str) -> str:
    """What Ctrl-C prints: `resume` says where, e.g. 'W from step 8 (its last checkpoint)'."""
    return f"interrupted: run the same command to resume {resume}"


def report_failure(
    exc: BaseException, workdir: pathlib.Path | None, resume: str, verbose: bool = False
) -> int:
    """Prints the one line for `exc` on stderr and returns the exit status; re-raises a bug.

    Args:
      workdir: the run's folder once it passed its checks (its errors.log gets the
        traceback); None before that, or when the failure is the workdir itself.
      resume: where the same command would resume, e.g. 'from step 8 (its last checkpoint)'.
      verbose: also print the traceback.
    """
    if isinstance(exc, KeyboardInterrupt):
        print(interrupted_line(resume), file=sys.stderr)
        return EXIT_INTERRUPTED
    message = user_message(exc)
    use_log = workdir is not None and not isinstance(exc, WorkdirError)
    log = append_log(workdir, message or "unexpected error", exc) if use_log else None
    if message is None:
        raise exc
    if verbose:
        traceback.print_exception(exc)
    if disk_full(exc):
        message += f", then run the same command to resume {resume}"
    elif isinstance(exc, OSError) and log is not None:
        message += f" (traceback in {log})"
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAILED


class _LogFile(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Drops the record when errors.log cannot be written (a full disk): the failure's
        one line on stderr says what matters, and logging's own traceback would bury it."""


def _from_quiet_library(record: logging.LogRecord) -> bool:
    parts = pathlib.PurePath(record.pathname).parts
    return any(name in parts for name in QUIET_LIBRARIES)


@contextlib.contextmanager
def library_logs_to_workdir(workdir: str | os.PathLike) -> Iterator[None]:
    """For the block, log records of `QUIET_LIBRARIES` go to WORKDIR/errors.log (created on
    the first one) instead of the terminal; every other record goes where it went before.

    `workdir` must exist for the whole block.
    """
    root = logging.getLogger()
    hide = logging.Filter()
    hide.filter = lambda record: not _from_quiet_library(record)  # type: ignore[method-assign]
    shown = list(root.handlers)
    for handler in shown:
        handler.addFilter(hide)
    file_handler = _LogFile(pathlib.Path(workdir) / ERRORS_LOG, delay=True)
    file_handler.setLevel(logging.WARNING)
    file_handler.addFilter(_from_quiet_library)
    file_handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(pathname)s:%(lineno)d] %(message)s")
    )
    root.addHandler(file_handler)
    try:
        yield
    finally:
        root.removeHandler(file_handler)
        file_handler.close()
        for handler in shown:
            handler.removeFilter(hide)
