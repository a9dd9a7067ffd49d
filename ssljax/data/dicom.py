"""DICOM pixel data -> uint8 (the optional `dicom` extra: `pip install -e ".[dicom]"`).

Only the pixel data and the tags that say how to display it are read: Rows, Columns,
SamplesPerPixel, NumberOfFrames, PhotometricInterpretation, the modality rescale
(RescaleSlope, RescaleIntercept or a Modality LUT) and the VOI transform (a VOI LUT, else
WindowCenter/WindowWidth with VOILUTFunction). No other tag, patient data above all, leaves
this module: a conversion stores pixels and the file's path only.

Files come open from `userfiles.open_file` (the caller's). Memory is bounded before anything
large is read: the header alone gives the image's size (`probe`; of a deflate-compressed
file, whose whole dataset pydicom would inflate to read a header, at most HEADER_BYTES are
inflated), and `read_uint8` refuses a file (or, deflated, an inflated stream) larger than
the pixels its header declares.
"""

import os
import pathlib
import zlib
from typing import BinaryIO

import numpy as np

from ssljax.errors import DataError

SUFFIXES = (".dcm", ".dicom")
# A DICOM Part 10 file: a 128-byte preamble, then these four bytes.
_MAGIC, _MAGIC_AT = b"DICM", 128
HEADER_BYTES = 4 << 20  # inflated bytes a deflated file's header may take
_SLACK = 16 << 20  # bytes a file may hold beyond its pixels (other tags, overlays)
_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian


class Unusable(ValueError):
    """A DICOM file without a usable single 2D image; `imagefile` lists it as skipped."""


def is_dicom(path: str | os.PathLike, f: BinaryIO) -> bool:
    """Whether `path` (open as `f`, left at its start) is a DICOM file, by its suffix or its
    Part 10 magic bytes."""
    if pathlib.Path(path).suffix.lower() in SUFFIXES:
        return True
    try:
        f.seek(_MAGIC_AT)
        return f.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False
    finally:
        f.seek(0)


def _pydicom(path: str | os.PathLike):
    try:
        import pydicom  # noqa: PLC0415 - optional extra
    except ImportError as e:
        raise DataError(
            f"{path} is a DICOM file and pydicom is not installed: install the extra with "
            '`pip install -e ".[dicom]"` (or `pip install pydicom`), then run again'
        ) from e
    return pydicom


def _header(f: BinaryIO, path):
    """The dataset without its pixel data, inflating at most HEADER_BYTES of a deflated one."""
    pydicom = _pydicom(path)
    from pydicom import filereader  # noqa: PLC0415 - optional extra
    from pydicom.filebase import DicomBytesIO  # noqa: PLC0415

    try:
        f.seek(0)
        filereader.read_preamble(f, force=True)
        meta = filereader._read_file_meta_info(f)
        if meta.get("TransferSyntaxUID", "") != _DEFLATED:
            f.seek(0)
            # Values over 64 KiB (a private blob before the pixels) are left unread.
            return pydicom.dcmread(f, stop_before_pixels=True, force=True, defer_size=1 << 16)
        inflated = _inflate(f, HEADER_BYTES, keep=True)
        ds = filereader.read_dataset(DicomBytesIO(inflated), False, True, stop_when=_at_pixels)
    except Unusable:
        raise
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
        raise Unusable(f"unreadable DICOM ({type(e).__name__}: {e})") from e
    ds.file_meta = meta
    return ds


def _at_pixels(tag, vr, length) -> bool:
    return tag >= 0x7FE00000


def _inflate(f: BinaryIO, limit: int, keep: bool) -> bytes:
    """The raw-deflate stream from `f`'s position: at most `limit` inflated bytes (`keep`:
    the prefix kept), or, not kept, Unusable when it inflates to more than `limit`."""
    inflater, out, total = zlib.decompressobj(-zlib.MAX_WBITS), bytearray(), 0
    while block := inflater.unconsumed_tail or f.read(1 << 20):
        chunk = inflater.decompress(block, 1 << 20)
        total += len(chunk)
        if keep:
            out += chunk[: limit - len(out)]
            if len(out) >= limit:
                break
        elif total > limit:
            raise Unusable(
                f"deflated DICOM that inflates to more than {limit} bytes, more than its "
                "header's image needs"
            )
    return bytes(out)


def _dataset(f: BinaryIO, path, limit: int):
    """The whole dataset, once its bytes (inflated, if deflated) are known to be <= `limit`."""
    pydicom = _pydicom(path)
    from pydicom import filereader  # noqa: PLC0415 - optional extra

    f.seek(0)
    filereader.read_preamble(f, force=True)
    if filereader._read_file_meta_info(f).get("TransferSyntaxUID", "") == _DEFLATED:
        _inflate(f, limit, keep=False)
    elif (size := os.fstat(f.fileno()).st_size) > limit:
        raise Unusable(
            f"DICOM file of {size} bytes, more than its header's image needs ({limit} at most)"
        )
    f.seek(0)
    try:
        return pydicom.dcmread(f, force=True)
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
        raise Unusable(f"unreadable DICOM ({type(e).__name__}: {e})") from e


def probe(f: BinaryIO, path: str | os.PathLike) -> tuple[int, int, int]:
    """(width, height, channels 1 or 3) of `path` (open as `f`), from the header; Unusable
    for a file without a single 2D image."""
    ds = _header(f, path)
    if "Rows" not in ds or "Columns" not in ds:
        raise Unusable("DICOM without an image (no Rows/Columns)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise Unusable(f"DICOM with {frames} frames; only single 2D images are used")
    channels = 1 if int(ds.get("SamplesPerPixel", 1)) == 1 else 3
    return int(ds.Columns), int(ds.Rows), channels


def read_uint8(f: BinaryIO, path: str | os.PathLike, width: int, height: int) -> np.ndarray:
    """The displayed image of `path` (open as `f`; `probe` gave `width` x `height`): uint8
    [H, W] (grey) or [H, W, 3] (colour).

    Grey: stored values -> modality rescale (slope/intercept or Modality LUT) -> the first
    VOI LUT, else the first window (LINEAR, LINEAR_EXACT or SIGMOID, DICOM PS3.3
    C.11.2.1.2) onto 0..255, else the image's own min..max; MONOCHROME1 is inverted so that
    higher is brighter. Colour: RGB as pydicom decodes it, scaled to 8 bits if wider.
    """
    ds = _dataset(f, path, width * height * 3 * 8 + _SLACK)  # 3 samples of 64 bits at most
    if (int(ds.get("Columns", 0)), int(ds.get("Rows", 0))) != (width, height):
        raise Unusable("DICOM whose size changed since its header was read")
    pydicom = _pydicom(path)
    try:
        stored = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - missing codecs, truncated data, bad tags
        raise Unusable(f"DICOM pixel data cannot be decoded ({type(e).__name__}: {e})") from e
    if stored.ndim == 3:
        return stored if stored.dtype == np.uint8 else _min_max(stored)
    values = np.asarray(pydicom.pixels.apply_rescale(stored, ds), np.float64)
    if "VOILUTSequence" in ds:
        lut = ds.VOILUTSequence[0]
        bits = int(lut.LUTDescriptor[2])
        shown = np.asarray(pydicom.pixels.apply_voi_lut(values, ds, index=0), np.float64)
        out = _linear(shown, 0.0, float(2**bits - 1))
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        out = window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), _function(ds))
    else:
        out = _min_max(values)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255 - out
    return out


def window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """The VOI window of DICOM PS3.3 C.11.2.1.2 onto 0..255: uint8, the shape of `values`."""
    c, w = float(center), float(width)
    if function == "SIGMOID":
        y = 255.0 / (1.0 + np.exp(-4.0 * (values - c) / max(w, 1e-12)))
    elif function == "LINEAR_EXACT":
        y = np.clip(((values - c) / max(w, 1e-12) + 0.5) * 255.0, 0, 255)
    else:  # LINEAR; the standard requires width >= 1. In place: one float64 copy at a time.
        w = max(w, 1.0)
        below, above = values <= c - 0.5 - (w - 1) / 2, values > c - 0.5 + (w - 1) / 2
        y = values - (c - 0.5)
        y /= max(w - 1, 1e-12)
        y += 0.5
        y *= 255.0
        y[below], y[above] = 0.0, 255.0
    np.clip(y, 0, 255, out=y)
    return np.rint(y, out=y).astype(np.uint8)


def _first(value) -> float:
    """The first of a multi-valued tag (several windows may be given), as a float."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _function(ds) -> str:
    return str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()


def _linear(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """lo..hi onto 0..255 (clipped): uint8, the shape of `values`; one float64 copy."""
    y = values - lo
    y *= 255.0 / max(hi - lo, 1e-12)
    np.clip(y, 0, 255, out=y)
    return np.rint(y, out=y).astype(np.uint8)


def _min_max(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    lo, hi = float(values.min()), float(values.max())
    return np.zeros(values.shape, np.uint8) if hi <= lo else _linear(values, lo, hi)
