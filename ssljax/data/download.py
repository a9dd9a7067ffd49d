"""Fetching MedMNIST files: stream to a temporary file, check its MD5, then rename into place.

The data root never holds a partial or corrupted file under a dataset's name: a download is
written to `<file>.<random>.part` in the same folder (so the final `os.replace` is atomic) and
that temporary file is deleted on any failure, including Ctrl-C.
"""

import hashlib
import http.client
import os
import pathlib
import secrets
import urllib.error
import urllib.request
from typing import BinaryIO

import tqdm

from ssljax import interrupt
from ssljax.data import registry
from ssljax.errors import DataError

_CHUNK = 1 << 20
# Dataset files shipped inside the package (package data; see its README for the license).
SAMPLE_DIR = pathlib.Path(__file__).resolve().parent / "sample"


class DatasetDownloadError(DataError):
    """A dataset file is missing and could not be downloaded or verified."""


def data_root(root: str | os.PathLike) -> pathlib.Path:
    """The data folder with '~' expanded (config.data.root, default $SSLJAX_DATA_DIR)."""
    return pathlib.Path(root).expanduser()


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _by_hand(url: str, dest: pathlib.Path, md5: str) -> str:
    return (
        f"Download it by hand from {url} (MD5 {md5}) and place it at {dest}, "
        f"e.g. `curl -L -o '{dest}' '{url}'`, or point SSLJAX_DATA_DIR or config.data.root "
        "at a folder that already holds it."
    )


def download_file(
    url: str,
    dest: str | os.PathLike,
    md5: str,
    progress: bool = True,
    timeout: float = 60.0,
) -> pathlib.Path:
    """Downloads `url` to `dest` if and only if the bytes have MD5 `md5`.

    Args:
      url: http(s) or file URL.
      dest: final path; its folder is created if needed.
      md5: expected hex MD5 of the whole file.
      progress: show a tqdm bar (bytes).
      timeout: seconds a connect or a single read may block.

    Returns:
      `dest` as a Path.

    Raises:
      DatasetDownloadError: the folder is not writable, the server cannot be reached, the
        transfer ends early, or the checksum differs. `dest` is untouched in every case.
    """
    dest = pathlib.Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.{secrets.token_hex(4)}.part")
        out = open(tmp, "xb")  # noqa: SIM115 -- the try below closes it
    except OSError as e:
        raise DatasetDownloadError(
            f"cannot write to the data root {dest.parent} ({e}). Set SSLJAX_DATA_DIR or "
            "config.data.root to a writable folder. " + _by_hand(url, dest, md5)
        ) from e
    try:
        with out:
            digest, size, expected_size = _stream(url, out, dest.name, progress, timeout)
        if expected_size is not None and size != expected_size:
            raise DatasetDownloadError(
                f"the download of {url} ended after {size} of {expected_size} bytes "
                "(connection dropped); nothing was saved. " + _by_hand(url, dest, md5)
            )
        if digest != md5:
            raise DatasetDownloadError(
                f"the file downloaded from {url} has MD5 {digest}, expected {md5}; it was "
                "deleted. Try again later; if it persists, " + _by_hand(url, dest, md5)
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DatasetDownloadError(
            f"could not download {url} to {dest} ({type(e).__name__}: {reason}); the machine "
            "may be offline, the server unreachable or the disk full. " + _by_hand(url, dest, md5)
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _stream(
    url: str, out: BinaryIO, desc: str, progress: bool, timeout: float
) -> tuple[str, int, int | None]:
    """Copies `url` into the open file `out`; returns (hex MD5, bytes read, Content-Length)."""
    digest = hashlib.md5()
    size = 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        expected_size = int(length) if length is not None else None
        with tqdm.tqdm(
            total=expected_size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not progress,
        ) as bar:
            # http.client returns b"" rather than raising when the connection closes before
            # Content-Length bytes arrived, so the caller compares the byte counts.
            while chunk := response.read(_CHUNK):
                interrupt.check()
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
    return digest.hexdigest(), size, expected_size


def packaged_file(name: str, size: int) -> pathlib.Path | None:
    """The copy of a dataset file that ships with ssljax (`SAMPLE_DIR`), or None.

    Raises:
      DataError: the shipped copy's MD5 differs from the registry's (a damaged install).
    """
    path = SAMPLE_DIR / registry.file_name(name, size)
    if not path.is_file():
        return None
    expected, digest = registry.get_info(name).md5[size], md5sum(path)
    if digest != expected:
        raise DataError(
            f"{path}, the copy of {path.name} shipped with ssljax, has MD5 {digest}, expected "
            f"{expected}: the installation is damaged. Reinstall ssljax, or place the file in "
            "the data root (SSLJAX_DATA_DIR or config.data.root)."
        )
    return path


def ensure_file(
    name: str,
    size: int,
    root: str | os.PathLike,
    download: bool,
    progress: bool = True,
    *,
    url: str | None = None,
    timeout: float = 60.0,
) -> pathlib.Path:
    """The path of a registry dataset's file in `root`; when `root` lacks it, the copy
    shipped with ssljax (`packaged_file`, MD5-checked), else a download into `root`.

    An existing file is returned as is (hashing a 224 px file on every run would cost
    seconds); `load_npz` catches a truncated or foreign file and says to delete it.

    Args:
      name: registry name, e.g. 'breastmnist'.
      size: image size, one of `registry.SIZES`.
      root: data folder (config.data.root); '~' is expanded.
      download: fetch a missing file (config.data.download); if false a missing file is an
        error.
      progress: show a download progress bar.
      url: where to fetch from; defaults to the registry's Zenodo URL.
      timeout: seconds a connect or a single read may block.

    Raises:
      ValueError: unknown name or size.
      DatasetDownloadError: the file is missing and could not be downloaded and verified.
      DataError: the copy shipped with ssljax is damaged.
    """
    info = registry.get_info(name)
    dest = data_root(root) / registry.file_name(name, size)
    if dest.is_file():
        return dest
    packaged = packaged_file(name, size)
    if packaged is not None:
        return packaged
    url = url or info.urls[size]
    md5 = info.md5[size]
    if not download:
        raise DatasetDownloadError(
            f"{dest} does not exist and config.data.download is false: set "
            "config.data.download=True to fetch it. " + _by_hand(url, dest, md5)
        )
    return download_file(url, dest, md5, progress=progress, timeout=timeout)
