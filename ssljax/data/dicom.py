"""DICOM pixel data -> uint8 (the optional `dicom` extra: `pip install -e ".[dicom]"`).

Only the pixel data and the tags that say how to display it are read: Rows, Columns,
SamplesPerPixel, NumberOfFrames, PhotometricInterpretation, the modality rescale
(RescaleSlope, RescaleIntercept or a Modality LUT) and the VOI transform (a VOI LUT, else
WindowCenter/WindowWidth with VOILUTFunction). No other tag, patient data above all, leaves
this module: a conversion stores pixels and the file's path only.
"""

import os
import pathlib

import numpy as np

from ssljax.errors import DataError

SUFFIXES = (".dcm", ".dicom")
# A DICOM Part 10 file: a 128-byte preamble, then these four bytes.
_MAGIC, _MAGIC_AT = b"DICM", 128


class Unusable(ValueError):
    """A DICOM file without a usable single 2D image; `imagefile` lists it as skipped."""


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether `path` is a DICOM file, by its suffix or its Part 10 magic bytes."""
    path = pathlib.Path(path)
    if path.suffix.lower() in SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            f.seek(_MAGIC_AT)
            return f.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False


def _pydicom(path: pathlib.Path):
    try:
        import pydicom  # noqa: PLC0415 - optional extra
    except ImportError as e:
        raise DataError(
            f"{path} is a DICOM file and pydicom is not installed: install the extra with "
            '`pip install -e ".[dicom]"` (or `pip install pydicom`), then run again'
        ) from e
    return pydicom


def _dataset(path: pathlib.Path, pixels: bool):
    pydicom = _pydicom(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
        raise Unusable(f"unreadable DICOM ({type(e).__name__}: {e})") from e


def probe(path: str | os.PathLike) -> tuple[int, int, int]:
    """(width, height, channels 1 or 3) from the header; `imagefile.Unusable` for a file
    without a single 2D image."""
    ds = _dataset(pathlib.Path(path), pixels=False)
    if "Rows" not in ds or "Columns" not in ds:
        raise Unusable("DICOM without an image (no Rows/Columns)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise Unusable(f"DICOM with {frames} frames; only single 2D images are used")
    channels = 1 if int(ds.get("SamplesPerPixel", 1)) == 1 else 3
    return int(ds.Columns), int(ds.Rows), channels


def read_uint8(path: str | os.PathLike) -> np.ndarray:
    """The displayed image: uint8 [H, W] (grey) or [H, W, 3] (colour).

    Grey: stored values -> modality rescale (slope/intercept or Modality LUT) -> the first
    VOI LUT, else the first window (LINEAR, LINEAR_EXACT or SIGMOID, DICOM PS3.3
    C.11.2.1.2) onto 0..255, else the image's own min..max; MONOCHROME1 is inverted so that
    higher is brighter. Colour: RGB as pydicom decodes it, scaled to 8 bits if wider.
    """
    path = pathlib.Path(path)
    ds = _dataset(path, pixels=True)
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
    else:  # LINEAR; the standard requires width >= 1
        w = max(w, 1.0)
        low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
        y = ((values - (c - 0.5)) / max(w - 1, 1e-12) + 0.5) * 255.0
        y = np.where(values <= low, 0.0, np.where(values > high, 255.0, y))
    return np.rint(np.clip(y, 0, 255)).astype(np.uint8)


def _first(value) -> float:
    """The first of a multi-valued tag (several windows may be given), as a float."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _function(ds) -> str:
    return str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()


def _linear(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.rint(np.clip((values - lo) * (255.0 / max(hi - lo, 1e-12)), 0, 255)).astype(np.uint8)


def _min_max(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    lo, hi = float(values.min()), float(values.max())
    return np.zeros(values.shape, np.uint8) if hi <= lo else _linear(values, lo, hi)
