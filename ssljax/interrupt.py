"""Ctrl-C as a request to stop at the next step boundary, never an exception in mid-air.

By default Python turns SIGINT into a KeyboardInterrupt raised at whatever bytecode runs
next: inside a garbage-collection or XLA callback it is printed as 'Exception ignored' and
lost (the run goes on and exits 0), and during interpreter teardown it can crash the process.
`install()`, called by the entry points, replaces that: the handler only sets a flag (it never
raises, so nothing can swallow it), the loops call `check()` at step boundaries, which raises
KeyboardInterrupt there, so every `finally` runs (the pending checkpoint commits, the logs
close) and the entry point says where the same command resumes (exit 130). A second Ctrl-C
ends the process at once, as kill -9 would (a run survives that), after printing the line
`install` was given. Without `install` (a notebook, a test) Ctrl-C behaves as Python's default.
"""

import os
import signal
from collections.abc import Callable

from ssljax.errors import EXIT_INTERRUPTED

_requested = False


def requested() -> bool:
    """Whether Ctrl-C was pressed since `install`."""
    return _requested


def check() -> None:
    """Raises KeyboardInterrupt once Ctrl-C was pressed; call where stopping is safe."""
    if _requested:
        raise KeyboardInterrupt


def install(last_words: Callable[[], str]) -> None:
    """Handles SIGINT as described above; call from the main thread.

    Args:
      last_words: the line printed on stderr when a second Ctrl-C ends the process at once.
    """

    def handle(signum: int, frame: object) -> None:
        global _requested
        if not _requested:
            _requested = True
            return
        try:
            os.write(2, (last_words() + "\n").encode())
        finally:
            os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, handle)
