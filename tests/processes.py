"""Subprocesses of the tests: `launch.py` as a user runs it, and two local processes of one
`jax.distributed` job for the multi-host tests.

Kept out of conftest.py: the workers import test modules, and conftest's import sets
XLA_FLAGS (8 host devices) for the test session, which a worker must not inherit.
"""

import os
import pathlib
import socket
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def launch(*args: str, devices: int | None = None, timeout: float = 600):
    """Runs `python launch.py *args` from the repository root; its output captured as text.

    Args:
      devices: host devices of the run (None: the session's 8). One device compiles and
        steps a run fastest on 2 cores, where the test is not about the mesh.
    Returns:
      the subprocess.CompletedProcess.
    """
    env = dict(os.environ)
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_two_processes(script: str, args_of) -> None:
    """Runs tests/`script` as processes 0 and 1 of a `jax.distributed` job on 127.0.0.1
    (one host device each), argv: coordinator address, process id, *args_of(pid); fails
    the test with a process's output when it does not exit 0 within 240 s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "tests" / script), f"127.0.0.1:{port}", str(pid)]
            + [str(a) for a in args_of(pid)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for pid in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=240)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
