"""The one guarded way ssljax opens a file of a user's folder (`data.folder`, `data.labels`).

A folder from a hospital export or a shared drive may hold anything: a FIFO or a device that
blocks or never ends, a symlink to `/etc/passwd` or to a folder elsewhere, a dangling link,
a loop. Here only regular files inside the folder are listed and opened:

  - a symlink (to a file or a folder) is followed only when its target, fully resolved,
    stays inside the folder; otherwise the entry is refused with that reason, and its target
    is never opened (nor stat-ed beyond `realpath`);
  - FIFOs, devices, sockets, dangling links and symlink loops are refused with a reason;
  - `open_file` opens non-blocking, without following a last symlink, and checks the opened
    descriptor is a regular file (`fstat`), so a file swapped for a FIFO after listing
    cannot hang the run.

`list_files` (folder scanning), `imagefile` (Pillow) and `dicom` (pydicom) read through here.
"""

import hashlib
import os
import pathlib
import stat
from typing import BinaryIO

import tqdm

_HASH_BLOCK = 1 << 20
_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


class Refused(Exception):
    """An entry that is not read; the message is the reason a manifest lists."""


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def resolve(path: str | os.PathLike, root: str | os.PathLike) -> pathlib.Path:
    """`path`, every symlink resolved, when it is a regular file or folder inside `root`.

    Args:
      path: an entry of the folder `root` (absolute, or relative to the current folder).
      root: the folder the entry must stay in, already resolved (`Path.resolve()`).
    Raises:
      Refused: a dangling link, a loop, a target outside `root`, a FIFO, device or socket.
    """
    root = pathlib.Path(root)
    try:
        real = pathlib.Path(os.path.realpath(path, strict=True))
    except FileNotFoundError as e:
        linked = os.path.islink(path)
        raise Refused("a dangling symlink" if linked else "vanished while listing") from e
    except OSError as e:  # ELOOP, or strict mode's "Symlink loop" of Python 3.11
        raise Refused(f"a symlink loop, or unreadable ({e.strerror or e})") from e
    if real != root and not real.is_relative_to(root):
        raise Refused("a symlink to outside the folder (not followed)")
    try:
        mode = real.stat().st_mode
    except OSError as e:
        raise Refused(f"unreadable ({e.strerror or e})") from e
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise Refused(f"{_kind(mode)}, not a regular file")
    return real


def open_file(path: str | os.PathLike, root: str | os.PathLike | None = None) -> BinaryIO:
    """`path` opened for reading (binary), when it is a regular file inside `root`.

    Args:
      root: the folder the file must stay in (resolved); None: `path`'s own folder.
    Raises:
      Refused: as `resolve`, or a folder, or not a regular file once opened.
    """
    path = pathlib.Path(path)
    root = pathlib.Path(root) if root is not None else path.absolute().parent.resolve()
    real = resolve(path, root)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as e:
        raise Refused(f"cannot be opened ({e.strerror or e})") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise Refused(f"{_kind(mode)}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def list_files(root: pathlib.Path) -> tuple[list[str], list[dict[str, str]]]:
    """(files, refused) under `root` (resolved): every regular file, '/'-separated relative
    paths, sorted; and each entry that is not read, as {'file', 'reason'}. Hidden entries
    (`.name`) are left out; a symlinked folder inside `root` is walked unless it holds the
    link itself (a loop)."""
    files: list[str] = []
    refused: list[dict[str, str]] = []
    todo = [(root, pathlib.PurePosixPath(), frozenset([root]))]
    while todo:
        folder, rel, above = todo.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            refused.append({"file": rel.as_posix(), "reason": f"unreadable ({e.strerror})"})
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = (rel / entry.name).as_posix()
            try:
                real = resolve(entry.path, root)
            except Refused as e:
                refused.append({"file": name, "reason": str(e)})
                continue
            if not real.is_dir():
                files.append(name)
            elif real in above:
                refused.append({"file": name, "reason": "a symlink loop (to a folder above it)"})
            else:
                todo.append((pathlib.Path(entry.path), rel / entry.name, above | {real}))
    return sorted(files), sorted(refused, key=lambda r: r["file"])


def is_folder(path: pathlib.Path, root: pathlib.Path) -> bool:
    """Whether `path` is a folder `list_files` walks (a real one, or a link inside `root`)."""
    try:
        return resolve(path, root).is_dir()
    except Refused:
        return False


def sha256(path: pathlib.Path, root: pathlib.Path | None = None) -> str:
    """SHA-256 of the bytes of `path` (a regular file inside `root`, read by `open_file`)."""
    digest = hashlib.sha256()
    with open_file(path, root) as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def content_hashes(root: pathlib.Path, files: list[str], cache: dict, progress: bool):
    """({file: SHA-256 of its bytes}, the cache to keep): a file whose (size, mtime_ns) is
    unchanged takes its hash from `cache` ({file: [size, mtime_ns, sha256]}), unread.

    Raises:
      Refused: a file changed into something `open_file` refuses since it was listed.
    """
    out, fresh = {}, {}
    for f in tqdm.tqdm(
        files, desc="hashing files", unit="file", disable=not progress, leave=False, delay=1
    ):
        st = resolve(root / f, root).stat()
        entry = cache.get(f)
        if entry and entry[:2] == [st.st_size, st.st_mtime_ns]:
            out[f] = entry[2]
        else:
            out[f] = sha256(root / f, root)
            fresh[f] = [st.st_size, st.st_mtime_ns, out[f]]
    kept = {f: cache[f] for f in files if f in cache and f not in fresh}
    return out, {**kept, **fresh}
