"""One image file -> uint8 [size, size, C]: PNG, JPEG, TIFF, BMP, GIF (Pillow) and DICOM.

A folder conversion (`folder.py`) calls `probe` on every file (the header only: format,
size, grey or colour) to decide the folder's channel count and which files to skip, then
`read` on the files it keeps. A file that cannot be used raises `Unusable` with the reason
the manifest lists; nothing here stops a conversion.

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

import dataclasses
import os
import pathlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ssljax.data import dicom

RESIZES = ("crop", "pad", "stretch")
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


def probe(path: str | os.PathLike, min_size: int) -> Probe:
    """The header of `path`, or `Unusable` (not an image, unreadable, several frames, or a
    shorter side below `min_size` pixels).

    Raises:
      DataError: a DICOM file while pydicom (the `dicom` extra) is not installed.
    """
    path = pathlib.Path(path)
    if dicom.is_dicom(path):
        try:
            width, height, channels = dicom.probe(path)
        except dicom.Unusable as e:
            raise Unusable(str(e)) from e
    else:
        with _open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise Unusable(f"has {frames} frames; only single 2D images are used")
            width, height = image.size
            channels = _channels(image)
    if min(width, height) < min_size:
        raise Unusable(f"too small: {width}x{height} px, below data.min_size={min_size}")
    return Probe(width, height, channels)


def read(
    path: str | os.PathLike, size: int, resize: str, channels: int
) -> tuple[np.ndarray, set[str]]:
    """The image at `path` as uint8 [size, size, channels], and the notes of what was done.

    Raises:
      Unusable: the pixel data cannot be decoded (a truncated or damaged file).
    """
    path = pathlib.Path(path)
    notes: set[str] = set()
    try:
        if dicom.is_dicom(path):
            image = Image.fromarray(dicom.read_uint8(path))
            notes.add(NOTE_SCALED)
        else:
            with _open(path) as opened:
                image = _to_8_bits(ImageOps.exif_transpose(opened), notes)
        image = _to_channels(image, channels, notes)
        if image.size != (size, size):
            image = _resize(image, size, resize)
            notes.add(NOTE_RESIZED)
        pixels = np.asarray(image, dtype=np.uint8)
    except dicom.Unusable as e:
        raise Unusable(str(e)) from e
    except (OSError, ValueError, SyntaxError) as e:
        raise Unusable(f"pixel data cannot be decoded ({type(e).__name__}: {e})") from e
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels, notes


def _open(path: pathlib.Path) -> Image.Image:
    try:
        image = Image.open(path)
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
    pixels = np.asarray(pixels, np.float64)
    lo, hi = float(pixels.min()), float(pixels.max())
    if hi <= lo:
        return np.zeros(pixels.shape, np.uint8)
    return np.rint((pixels - lo) * (255.0 / (hi - lo))).astype(np.uint8)


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
