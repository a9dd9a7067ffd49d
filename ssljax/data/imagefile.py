"""One image file -> uint8 [size, size, C]: PNG, JPEG, TIFF, BMP, GIF (Pillow) and DICOM.

A folder conversion (`folder.py`) calls `probe` on every file (the header only: format,
size, grey or colour) to decide the folder's channel count and which files to skip, then
`read` on the files it keeps. A file that cannot be used raises `Unusable` with the reason
the manifest lists; nothing here stops a conversion.

Files are opened by `userfiles.open_file` (regular files inside the folder only). Memory:
an image of more than `max_pixels` (`config.data.max_pixels`) is refused from its header,
before any pixel is decoded, in every format (16-bit and DICOM included); decodes running
in threads at once hold at most DECODE_BUDGET bytes between them (one larger image runs
alone), at an estimated BYTES_PER_PIXEL (wide and DICOM pixels pass through float64).

Pixel rules, in order:
  - palette images are expanded to RGB; an alpha channel is composited over black;
  - more than 8 bits (16-bit PNG/TIFF, 32-bit integer or float) is scaled linearly from the
    image's own min..max to 0..255 (a constant image becomes 0);
  - DICOM (`dicom.py`): rescale slope/intercept, then the VOI LUT or window, to 0..255;
  - the channel count is forced to the folder's (ITU-R 601 luma for colour -> grey, the grey
    plane repeated for grey -> RGB);
  - resized to size x size: `crop` scales the shorter side to `size` and cuts the centre,
    `pad` scales the longer side to `size` and centres it on black, `stretch` ignores the
    aspect ratio. An image already size x size is left exactly as it is.
"""

import contextlib
import dataclasses
import os
import pathlib
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ssljax.data import dicom, userfiles

RESIZES = ("crop", "pad", "stretch")
MAX_PIXELS = 1 << 24  # data.max_pixels' default: 4096 x 4096, <= ~0.5 GB to decode
DECODE_BUDGET = 1 << 30
# Peak bytes per pixel of decoding one image (+ margin); measured at 3000 x 3000 px
# (2026-12-06): 9 for 8-bit RGB PNG, 15 for 16-bit PNG, 27 for a deflated 16-bit DICOM.
BYTES_PER_PIXEL = {"narrow": 16, "wide": 32}
# Pillow modes that hold one grey plane (after alpha removal); every other mode is colour.
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# Modes with more than 8 bits per sample: scaled to 8 bits from the image's own range.
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# Notes a conversion counts in its manifest, by what `read` did to an image.
NOTE_SCALED = "scaled_to_8_bits"
NOTE_ALPHA = "alpha_removed"
NOTE_PALETTE = "palette_expanded"
NOTE_TO_GREY = "converted_to_grey"
NOTE_TO_RGB = "converted_to_rgb"
NOTE_RESIZED = "resized"


class Unusable(Exception):
    """A file a conversion skips; the message is the reason its manifest lists."""


@dataclasses.dataclass(frozen=True)
class Probe:
    """What a file's header says: width, height (pixels), channels 1 (grey) or 3 (colour)."""

    width: int
    height: int
    channels: int


def probe(path: str | os.PathLike, min_size: int, max_pixels: int = MAX_PIXELS, root=None) -> Probe:
    """The header of `path` (a file inside the folder `root`; None: its own folder), or
    `Unusable` (not a regular file inside `root`, not an image, unreadable, several frames,
    more than `max_pixels` pixels, or a shorter side below `min_size` pixels).

    Raises:
      DataError: a DICOM file while pydicom (the `dicom` extra) is not installed.
    """
    path = pathlib.Path(path)
    try:
        with userfiles.open_file(path, root) as f:
            if dicom.is_dicom(path, f):
                width, height, channels = dicom.probe(f, path)
            else:
                with warnings.catch_warnings():  # max_pixels decides, not Pillow's warning
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    image = _open(f)  # (one thread: catch_warnings is not thread-safe)
                with image:
                    frames = getattr(image, "n_frames", 1)
                    if frames > 1:
                        raise Unusable(f"has {frames} frames; only single 2D images are used")
                    width, height = image.size
                    channels = _channels(image)
    except (userfiles.Refused, dicom.Unusable) as e:
        raise Unusable(str(e)) from e
    _check_pixels(width, height, max_pixels)
    if min(width, height) < min_size:
        raise Unusable(f"too small: {width}x{height} px, below data.min_size={min_size}")
    return Probe(width, height, channels)


def read(
    path: str | os.PathLike,
    size: int,
    resize: str,
    channels: int,
    max_pixels: int = MAX_PIXELS,
    root=None,
) -> tuple[np.ndarray, set[str]]:
    """The image at `path` (inside the folder `root`; None: its own folder) as uint8
    [size, size, channels], and the notes of what was done.

    Raises:
      Unusable: not a regular file inside `root`, more than `max_pixels` pixels, or pixel
        data that cannot be decoded (a truncated or damaged file).
    """
    path = pathlib.Path(path)
    notes: set[str] = set()
    try:
        with userfiles.open_file(path, root) as f, _decoded(f, path, max_pixels, notes) as image:
            image = _to_channels(image, channels, notes)
            if image.size != (size, size):
                image = _resize(image, size, resize)
                notes.add(NOTE_RESIZED)
            pixels = np.asarray(image, dtype=np.uint8)
    except (userfiles.Refused, dicom.Unusable) as e:
        raise Unusable(str(e)) from e
    except (OSError, ValueError, SyntaxError) as e:
        raise Unusable(f"pixel data cannot be decoded ({type(e).__name__}: {e})") from e
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels, notes


@contextlib.contextmanager
def _decoded(f, path: pathlib.Path, max_pixels: int, notes: set[str]):
    """Yields the image open as `f`, decoded to mode L or RGB (8 bits), once its header is
    within `max_pixels` and the decoding budget has room for it."""
    if dicom.is_dicom(path, f):
        width, height, _ = dicom.probe(f, path)
        _check_pixels(width, height, max_pixels)
        with _BUDGET.hold(width * height * BYTES_PER_PIXEL["wide"]):
            notes.add(NOTE_SCALED)
            yield Image.fromarray(dicom.read_uint8(f, path, width, height))
        return
    with _open(f) as opened:
        _check_pixels(*opened.size, max_pixels)
        kind = "wide" if opened.mode in _WIDE_MODES else "narrow"
        with _BUDGET.hold(opened.size[0] * opened.size[1] * BYTES_PER_PIXEL[kind]):
            yield _to_8_bits(ImageOps.exif_transpose(opened), notes)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise Unusable(
            f"too large: {width}x{height} px, above data.max_pixels={max_pixels} (raise it to "
            "convert this file; decoding takes up to ~32 bytes per pixel)"
        )


class _Budget:
    """Bytes of decoding in flight across threads; one image larger than the budget runs
    alone."""

    def __init__(self, limit: int):
        self._limit, self._used, self._free = limit, 0, threading.Condition()

    @contextlib.contextmanager
    def hold(self, cost: int):
        with self._free:
            self._free.wait_for(lambda: self._used == 0 or self._used + cost <= self._limit)
            self._used += cost
        try:
            yield
        finally:
            with self._free:
                self._used -= cost
                self._free.notify_all()


_BUDGET = _Budget(DECODE_BUDGET)


def _open(f) -> Image.Image:
    """The image Pillow finds in the open file `f` (its header read, no pixel decoded)."""
    try:
        image = Image.open(f)
    except Image.DecompressionBombError as e:
        raise Unusable(f"too large: Pillow refuses it as a decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise Unusable("not an image (no format Pillow or pydicom reads)") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise Unusable(f"unreadable ({type(e).__name__}: {e})") from e
    return image


def _channels(image: Image.Image) -> int:
    """1 for a grey image (a palette of greys included), else 3."""
    if image.mode in _GREY_MODES:
        return 1
    if image.mode == "P":
        palette = np.asarray(image.getpalette() or [], np.uint8).reshape(-1, 3)
        return 1 if (palette == palette[:, :1]).all() else 3
    return 3


def _to_8_bits(image: Image.Image, notes: set[str]) -> Image.Image:
    """Mode 'L' (grey) or 'RGB', every sample 8 bits."""
    grey = _channels(image) == 1
    if image.mode == "P":
        notes.add(NOTE_PALETTE)
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "L" if grey else "RGB")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        notes.add(NOTE_ALPHA)
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba).convert("L" if grey else "RGB")
    if image.mode in _WIDE_MODES:
        notes.add(NOTE_SCALED)
        return Image.fromarray(scale_to_uint8(np.asarray(image)))
    if image.mode == "1":
        return image.convert("L")
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8 of the same shape, linear from its min..max to 0..255."""
    lo, hi = float(np.min(pixels)), float(np.max(pixels))
    if hi <= lo:
        return np.zeros(np.shape(pixels), np.uint8)
    x = np.array(pixels, np.float64)  # a copy, scaled in place: one float64 array at a time
    x -= lo
    x *= 255.0 / (hi - lo)
    return np.rint(x, out=x).astype(np.uint8)


def _to_channels(image: Image.Image, channels: int, notes: set[str]) -> Image.Image:
    if channels == 1 and image.mode != "L":
        notes.add(NOTE_TO_GREY)
        return image.convert("L")
    if channels == 3 and image.mode != "RGB":
        notes.add(NOTE_TO_RGB)
        return image.convert("RGB")
    return image


def _resize(image: Image.Image, size: int, how: str) -> Image.Image:
    """`image` (mode L or RGB) at size x size, as `how` (one of RESIZES) says."""
    width, height = image.size
    resample = Image.Resampling.LANCZOS
    if how == "stretch":
        return image.resize((size, size), resample)
    fit = min if how == "crop" else max
    scale = size / fit(width, height)
    scaled = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = image.resize(scaled, resample)
    if how == "crop":
        left, top = (scaled[0] - size) // 2, (scaled[1] - size) // 2
        return image.crop((left, top, left + size, top + size))
    canvas = Image.new(image.mode, (size, size))
    canvas.paste(image, ((size - scaled[0]) // 2, (size - scaled[1]) // 2))
    return canvas
