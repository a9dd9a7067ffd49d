"""A run's workdir: checked before anything is loaded, then held alone for the run's life.

`check` refuses, in one line naming the folder and before data is loaded or anything
compiles: an empty name (it would write into the current folder), a path that is a file, a
folder this user cannot write in, and a disk with less than `MIN_FREE_BYTES` free. It writes
nothing. `lock` then holds WORKDIR/.lock with an OS lock (`fcntl.flock`) until the run ends:
a second run on the same workdir stops at once, naming the process that holds it. The kernel
drops the lock when its holder dies, kill -9 included, so there is never a stale lock to
delete by hand; the file itself stays, holding the last holder's PID and host. Once locked,
the temporary files of atomic writes a dead holder left are removed (`writers`).
"""

import contextlib
import errno
import fcntl
import logging
import os
import pathlib
import shutil
import socket
import time
from collections.abc import Iterator

from ssljax.errors import ResourceError, WorkdirError, WorkdirInUseError

LOCK_FILE = ".lock"
# A checkpoint of a ResNet-50 train state with LARS momentum is ~300 MB; a width-64
# ResNet-18's ~130 MB; the small ones of a CPU study a few MB. 50 MB is the floor below
# which no run can hope to write its checkpoints, logs and results.
MIN_FREE_BYTES = 50 * 2**20
# Filesystems without flock (some FUSE mounts) answer with one of these.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
# realpaths of the workdirs this process holds.
_HELD: set[str] = set()


def resolve(name: str | os.PathLike, what: str = "--workdir") -> pathlib.Path:
    """The folder `name` names, '~' expanded; WorkdirError when it is empty.

    Args:
      what: how the user gave the name (the flag), for the message.
    """
    text = os.fspath(name)
    if not text.strip():
        raise WorkdirError(
            f"{what} is empty: name a folder for the run's outputs, e.g. {what}=runs/my_run"
        )
    return pathlib.Path(os.path.expanduser(text))


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    """`path` or its closest ancestor that exists (as a file or a folder)."""
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check(workdir: str | os.PathLike, what: str = "--workdir") -> pathlib.Path:
    """Refuses a workdir that cannot hold a run; returns it with '~' expanded. Writes nothing.

    Raises:
      WorkdirError: the name is empty, names a file (or a folder inside one), or a folder
        this user cannot create or write in.
      ResourceError: its disk has less than MIN_FREE_BYTES free.
    """
    path = resolve(workdir, what)
    base = _nearest_existing(path)
    if not base.is_dir():
        inside = "" if base == path else f" (inside {base}, which is a file)"
        raise WorkdirError(
            f"{what} {path} is a file, not a folder{inside}: choose another {what}, or move "
            "the file away"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        action = "write in" if base == path else f"create {path} in"
        raise WorkdirError(
            f"{what} {path}: this user cannot {action} {base}: choose a folder you can write "
            "to, or change its permissions"
        )
    free = shutil.disk_usage(base).free
    if free < MIN_FREE_BYTES:
        raise ResourceError(
            f"{what} {path}: its disk has {free / 2**20:.1f} MB free, and a run needs at least "
            f"{MIN_FREE_BYTES // 2**20} MB for its checkpoints and logs: free some space, or "
            f"choose a {what} on another disk"
        )
    return path


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it ('PID 123 on host')."""
    for _ in range(20):  # the holder writes its PID right after taking the lock
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "an unknown process"


def _acquire(fd: int, path: pathlib.Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise WorkdirInUseError(
            f"{path} is in use by another ssljax run ({_holder(fd)}): wait for it to end, "
            "or use another folder"
        ) from None
    except OSError as e:
        if e.errno not in _NO_LOCKS:
            raise
        logging.warning(
            "cannot lock %s (%s: this filesystem has no locks); make sure no other run uses it",
            path,
            e.strerror,
        )
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)


def _remove_if_unused(path: pathlib.Path, created: list[pathlib.Path]) -> None:
    """Removes the lock file and the folders `lock` made, if the run wrote nothing else."""
    with contextlib.suppress(OSError):
        if [p.name for p in path.iterdir()] == [LOCK_FILE]:
            (path / LOCK_FILE).unlink()
        for folder in created:  # deepest first; a folder that is not empty stays
            folder.rmdir()


@contextlib.contextmanager
def lock(workdir: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Holds WORKDIR/.lock for the block, creating the folder if needed; yields its path.

    A job takes it once (`ssljax.entry`). Only process 0 of a multi-process run locks: all
    processes share one workdir. Leftover temporary files of a killed run's atomic writes
    are removed. When the block fails and the run wrote nothing, the folders it created are
    removed again.

    Raises:
      WorkdirInUseError: another process holds the lock, naming its PID and host.
      WorkdirError: this process holds it already (a job that would lock twice).
    """
    import jax

    from ssljax import writers

    path = pathlib.Path(workdir)
    key = os.path.realpath(path)
    if key in _HELD:
        raise WorkdirError(f"{path} is held by this process already: a job locks its workdir once")
    if jax.process_index() != 0:
        yield path
        return
    created = []
    p = path.absolute()
    while not os.path.lexists(p):
        created.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path)
    except BaseException:
        os.close(fd)
        raise
    _HELD.add(key)
    ok = False
    try:
        writers.remove_unfinished_writes(path)
        yield path
        ok = True
    finally:
        _HELD.discard(key)
        if not ok:  # while still holding the lock, so no other run sees it vanish
            _remove_if_unused(path, created)
        os.close(fd)  # releases the flock
