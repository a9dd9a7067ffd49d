"""Small files that decode to huge images (decompression bombs), for tests/test_hostile.py.

Every one is a valid file: its pixels are zeros, deflated as repeated blocks (after a full
flush a deflate stream starts afresh, so an all-zero block always compresses to the same
bytes), so a 30000 x 30000 PNG takes ~1 MB and a second to write, never the 900 MB of pixels.
"""

import pathlib
import struct
import zlib
from collections.abc import Iterator

_BLOCK = 1 << 22


def deflated_zeros(prefix: bytes, zeros: int, wbits: int) -> Iterator[bytes]:
    """The deflate stream (zlib with wbits=15, raw with -15) of `prefix` then `zeros` zeros."""
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    first = min(zeros, _BLOCK)
    yield c.compress(prefix + bytes(first)) + c.flush(zlib.Z_FULL_FLUSH)
    left = zeros - first
    if left >= _BLOCK:
        block = c.compress(bytes(_BLOCK)) + c.flush(zlib.Z_FULL_FLUSH)
        yield block
        left -= _BLOCK
        again = c.compress(bytes(_BLOCK)) + c.flush(zlib.Z_FULL_FLUSH)
        assert again == block  # the repeat below is the stream itself
        yield again
        left -= _BLOCK
        for _ in range(left // _BLOCK):
            yield block
        left %= _BLOCK
    yield c.compress(bytes(left)) + c.flush()


def png(path: pathlib.Path, width: int, height: int, bit_depth: int = 8) -> pathlib.Path:
    """A grey PNG of `width` x `height` zeros at 8 or 16 bits."""
    raw = height * (1 + width * bit_depth // 8)  # each row: filter byte 0, then its samples
    data = b"".join(deflated_zeros(b"", raw, 15))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def deflated_dicom(path: pathlib.Path, rows: int, columns: int, pixel_bytes: int) -> pathlib.Path:
    """A deflate-compressed DICOM (Deflated Explicit VR Little Endian) declaring `rows` x
    `columns` 16-bit grey pixels and holding `pixel_bytes` bytes of zeros as its pixel data
    (2 * rows * columns for an honest file), written by pydicom's own encoders."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, "1.2.3.4"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_file_meta_info(head, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    # (7FE0,0010) OW, two reserved bytes, a 32-bit length: the pixel data element's header.
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes)
    stream = deflated_zeros(body.getvalue() + pixel_header, pixel_bytes, -15)
    path.write_bytes(bytes(128) + b"DICM" + head.getvalue() + b"".join(stream))
    return path


def dicom_with_blob(path: pathlib.Path, blob_bytes: int) -> pathlib.Path:
    """An uncompressed 32 x 32 DICOM carrying a private element of `blob_bytes` zeros
    before its pixel data (a file far larger than its image)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.5"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, "1.2.3.5"
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.add_new(0x00091010, "OB", bytes(blob_bytes))
    ds.PixelData = bytes(2 * 32 * 32)
    ds.save_as(path, enforce_file_format=True)
    return path
