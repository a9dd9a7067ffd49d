"""The stored form, streamed: read and write the arrays of an .npz in row chunks.

Every dataset ssljax trains on is stored as a MedMNIST-layout `.npz` (`{split}_images` uint8
[N, H, W] or [N, H, W, C], `{split}_labels` integer [N, L]): the registry's files as
downloaded, a user's own file, and a converted image folder. Loading a whole archive needs
memory for all of it; these helpers never hold more than one chunk of rows, so a 16 GB
archive can be converted (to TFDS array_record) or written (from a folder of images) on a
machine with a few GB.

Members may be stored or deflated (np.savez / np.savez_compressed): reading is sequential,
which both allow. Writing stores members uncompressed (ZIP64), so that a stored member can
also be memory-mapped later.
"""

import contextlib
import os
import pathlib
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from typing import IO

import numpy as np

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _read_header(f: IO[bytes], key: str) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    if version not in _HEADER_READERS:
        raise ValueError(f"member {key}: unsupported .npy format version {version}")
    shape, fortran_order, dtype = _HEADER_READERS[version](f)
    if dtype.hasobject:
        raise ValueError(f"member {key} holds pickled Python objects")
    if fortran_order and len(shape) > 1:
        raise ValueError(f"member {key} is stored in Fortran order; save it C-contiguous")
    return tuple(shape), dtype


def member_info(path: str | os.PathLike, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of member `key` (without `.npy`) from its header alone.

    Raises:
      KeyError: no such member. ValueError: a header ssljax does not read (pickled objects,
        Fortran order, an unknown version). zipfile.BadZipFile: not a zip archive.
    """
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as f:
        return _read_header(f, key)


def iter_rows(path: str | os.PathLike, key: str, chunk_rows: int) -> Iterator[np.ndarray]:
    """Yields member `key` in consecutive chunks of at most `chunk_rows` rows (along axis 0).

    Memory: one chunk. Each chunk is a fresh array of the member's dtype, shape
    [<= chunk_rows, *shape[1:]]; their concatenation equals `np.load(path)[key]`.

    Raises:
      ValueError: the member ends before its header's shape says (truncated), or as
        `member_info`.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} must be positive")
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as f:
        shape, dtype = _read_header(f, key)
        if not shape:
            raise ValueError(f"member {key} is a scalar, not rows")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        for start in range(0, shape[0], chunk_rows):
            rows = min(chunk_rows, shape[0] - start)
            buf = f.read(rows * row_bytes)
            if len(buf) != rows * row_bytes:
                raise ValueError(
                    f"member {key} is truncated at row {start + len(buf) // row_bytes}"
                )
            yield np.frombuffer(buf, dtype=dtype).reshape(rows, *shape[1:]).copy()


class NpzWriter:
    """Writes an .npz whose members grow by appended rows, in bounded memory.

    Rows go to one temporary raw file per member next to the destination; `close` writes
    each member (.npy header with the final row count, then the rows) into a zip, uncompressed
    with ZIP64, and renames it into place, so a reader never sees a half-written archive and
    an interrupted writer leaves only its temporary folder (removed by `abort`, or on the next
    write to the same destination).

        with NpzWriter(path) as w:
            for images, labels in chunks:
                w.append("train_images", images)
                w.append("train_labels", labels)
            w.ensure("val_labels", (0, 1), np.int64)   # a member that may get no rows
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.parts*"):
            shutil.rmtree(stale, ignore_errors=True)
        self._tmp = pathlib.Path(
            tempfile.mkdtemp(prefix=f".{self.path.name}.parts", dir=self.path.parent)
        )
        self._members: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
        self._files: dict[str, IO[bytes]] = {}

    def ensure(self, key: str, shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        """Declares member `key` with row shape `shape[1:]` and `dtype` (rows may follow)."""
        if key not in self._members:
            self._members[key] = (tuple(shape[1:]), np.dtype(dtype), 0)
            self._files[key] = (self._tmp / f"{key}.raw").open("wb")

    def append(self, key: str, rows: np.ndarray) -> None:
        """Appends `rows` [n, *row_shape] to member `key` (row shape and dtype fixed by the
        first call or `ensure`)."""
        rows = np.asarray(rows)
        self.ensure(key, rows.shape, rows.dtype)
        row_shape, dtype, n = self._members[key]
        if rows.shape[1:] != row_shape or rows.dtype != dtype:
            raise ValueError(
                f"member {key}: rows {rows.shape[1:]} {rows.dtype} do not match {row_shape} {dtype}"
            )
        self._files[key].write(np.ascontiguousarray(rows).tobytes())
        self._members[key] = (row_shape, dtype, n + len(rows))

    def rows(self, key: str) -> int:
        """Rows appended to `key` so far (0 for an unknown member)."""
        return self._members.get(key, ((), None, 0))[2]

    def close(self) -> pathlib.Path:
        """Writes the archive and renames it to `path`; returns `path`."""
        for f in self._files.values():
            f.close()
        partial = self._tmp / "archive.npz"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for key, (row_shape, dtype, n) in self._members.items():
                header = {"descr": np.lib.format.dtype_to_descr(dtype)}
                header.update(fortran_order=False, shape=(n, *row_shape))
                with archive.open(f"{key}.npy", "w", force_zip64=True) as out:
                    np.lib.format.write_array_header_2_0(out, header)
                    with (self._tmp / f"{key}.raw").open("rb") as raw:
                        shutil.copyfileobj(raw, out, length=1 << 24)
        os.replace(partial, self.path)
        shutil.rmtree(self._tmp, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Removes the temporary rows; `path` is left as it was."""
        for f in self._files.values():
            with contextlib.suppress(OSError):
                f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "NpzWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
