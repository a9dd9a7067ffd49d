"""Fault injection for the kill -9 tests (tests/test_faults.py); inert in every real run.

`SSLJAX_FAULT_POINT=<point>:<n>` makes the process SIGKILL itself the n-th time (from 1) it
reaches `point`, so a test can kill a run at a moment a random delay rarely hits:

    checkpoint_write  a checkpoint's asynchronous write has started (checkpoint.Checkpointer)
    metrics_write     half of a metrics.jsonl line is on disk (writers.MetricWriter)
    encoder_export    the final encoder's write has started (checkpoint.save_encoder)
    tfds_shard_written  a TFDS build has written a shard (tfds_medmnist, its temporary folder)

Unset, `point` is one string comparison. Nothing else in the code reads the variable.
"""

import os
import signal
from collections.abc import Callable

ENV = "SSLJAX_FAULT_POINT"
_POINT, _, _NTH = os.environ.get(ENV, "").partition(":")
_reached = 0


def point(name: str, before: Callable[[], object] | None = None) -> None:
    """Kills this process (SIGKILL, as kill -9 does) the n-th time `name` is reached when
    SSLJAX_FAULT_POINT=name:n; `before()` runs just before (to leave a partial write)."""
    global _reached
    if name != _POINT:
        return
    _reached += 1
    if _reached == int(_NTH or 1):
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)
