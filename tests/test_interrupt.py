"""Ctrl-C as a flag polled at safe points: never swallowed, and a second one stops at once."""

import signal
import subprocess
import sys

from ssljax import errors

# Polls `check()` until the first Ctrl-C stops it there, then runs on without a check (a
# long compilation, say) until the second Ctrl-C ends the process.
CHILD = """
import time
from ssljax import interrupt
interrupt.install(lambda: "interrupted: bye")
print("ready", flush=True)
try:
    while True:
        interrupt.check()
        time.sleep(0.01)
except KeyboardInterrupt:
    print("stopped at a check", interrupt.requested(), flush=True)
while True:
    time.sleep(0.01)
"""


def test_first_ctrl_c_stops_at_a_check_second_ends_the_process_at_once():
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline() == "stopped at a check True\n"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, stderr) == (errors.EXIT_INTERRUPTED, "interrupted: bye\n")


def test_without_install_nothing_is_requested():
    from ssljax import interrupt

    assert not interrupt.requested()
    interrupt.check()  # no Ctrl-C: returns
