"""Image files (JPEG, PNG, TIFF, BMP, DICOM) decoded to greyscale uint8 squares: every image medlit reads goes
through here.

Training data, predictions on new files and uploads to the web app are decoded by the same functions, so a
model sees new images exactly as it saw its training images, and every one of them is held to the same limits:
only the formats in `IMAGE_FORMATS` (and DICOM) are decoded, and an image whose header declares more than
`max_pixels` pixels (every frame counted) is refused before its pixels are read or inflated.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from medlit.errors import UnreadableInput

Source = str | Path | bytes

# PIL decodes these and nothing else (no EPS through Ghostscript, no exotic plugins); DICOM goes to pydicom
IMAGE_FORMATS = ("JPEG", "PNG", "TIFF", "BMP")
# pixels an image may declare, every frame counted: 36 M is a 6000 x 6000 image (the largest digital
# radiographs are about 4300 x 3500); the decoded 16-bit image and its float copy then take about 220 MB
MAX_PIXELS = 36_000_000
# bytes of a deflated DICOM data set inflated before its image size is known
_DICOM_HEADER_BYTES = 4 << 20


class TooManyPixels(ValueError):
    """An image whose header declares more pixels than the budget allows; nothing of it was decoded."""


# what PIL may raise when a file is not what it should be, and pydicom for a damaged or unsupported DICOM
# file (e.g. a compression it cannot decode)
DECODE_ERRORS = (
    OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError, RuntimeError, NotImplementedError,
    AttributeError, KeyError, zlib.error, struct.error,
)  # fmt: skip


def decode_file(source: Source, size: int, name: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A file (or its bytes) as greyscale uint8 (size, size); `UnreadableInput` naming it if it cannot be read
    or declares more than `max_pixels` pixels."""
    name = name or str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise UnreadableInput(f"{name} not found")
    try:
        return decode(source, size, max_pixels)
    except TooManyPixels as err:
        raise UnreadableInput(f"{name} is too large to decode: {err}") from None
    except DECODE_ERRORS as err:
        kind = "DICOM image" if is_dicom(source) else "image"
        reason = str(err).split(" <_io.BytesIO")[0]  # bytes have no file name for PIL to show
        raise UnreadableInput(f"{name} is not a readable {kind} ({type(err).__name__}: {reason})") from None


def decode(source: Source, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A file (or its bytes) as greyscale uint8 (size, size): DICOM by pydicom, the `IMAGE_FORMATS` by PIL.

    Raises one of `DECODE_ERRORS` when the file is not a readable image (`TooManyPixels`, a ValueError, when
    its header declares more than `max_pixels` pixels).
    """
    if is_dicom(source):
        return grey_square(dicom_image(source, max_pixels), size)
    return decode_image(io.BytesIO(source) if isinstance(source, bytes) else str(source), size, max_pixels)


def decode_image(path: str | io.BytesIO, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image file as a greyscale uint8 (size, size) array; odd modes are converted, not refused.

    The size in the header is checked against `max_pixels` before any pixel is decoded. JPEGs are decoded
    at the smallest DCT scale that still covers `size` (PIL's draft mode), which makes large X-rays several
    times faster to read. 16-bit greyscale is scaled to 8 bits by its significant bits (a PNG's sBIT chunk),
    else by its range; RGB(A), CMYK and palette images are converted to luminance (alpha is dropped).
    """
    with warnings.catch_warnings():  # PIL's own warning above 89 M pixels: the budget here is checked instead
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path, formats=IMAGE_FORMATS)
        except Image.DecompressionBombError as err:  # above 179 M pixels PIL refuses at once
            raise TooManyPixels(str(err)) from None
    with image:
        check_pixels(image.width, image.height, getattr(image, "n_frames", 1), max_pixels)
        bits = _png_significant_bits(image.fp) if image.format == "PNG" and image.mode.startswith("I") else None
        image.draft("L", (size, size))
        return grey_square(image, size, bits)


def check_pixels(width: int, height: int, frames: int, max_pixels: int) -> None:
    """Refuse (`TooManyPixels`) an image declaring more than `max_pixels` pixels in all its frames."""
    total = int(width) * int(height) * max(1, int(frames))
    if total > max_pixels:
        shape = f"{frames} frames of {width} x {height}" if frames > 1 else f"{width} x {height}"
        raise TooManyPixels(
            f"it declares {shape} pixels ({total / 1e6:.1f} M), more than the limit of {max_pixels / 1e6:.1f} M "
            "(max_pixels)"
        )


def grey_square(image: Image.Image, size: int, bits: int | None = None) -> np.ndarray:
    """An opened image as greyscale uint8 (size, size); wide integer images are scaled by `bits` significant
    bits when given, else by their own range."""
    if image.mode.startswith("I") or image.mode == "F":  # 16- or 32-bit greyscale
        image = Image.fromarray(to_uint8(np.asarray(image), bits))
    elif image.mode != "L":
        image = image.convert("L")
    image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def to_uint8(values: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Wide greyscale values as uint8: divided by 2**bits - 1 when the significant bits are known (values
    above are clipped), else stretched from their minimum to their maximum, as DICOM images are. A constant
    image keeps its level in the 16-bit range."""
    values = values.astype(np.float32)
    if bits:
        scaled = values * (255.0 / (2**bits - 1))
    else:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * (255.0 / 65535.0)
    return scaled.clip(0, 255).round().astype(np.uint8)


def _png_significant_bits(handle: BinaryIO | None) -> int | None:
    """The greyscale significant bits a PNG declares in its sBIT chunk (e.g. 12 for 12-bit X-rays stored
    in 16 bits), or None; the chunks before the image data are read, and the position is restored."""
    if handle is None:
        return None
    position = handle.tell()
    try:
        handle.seek(8)
        while True:
            head = handle.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND"):
                return None
            if kind == b"sBIT":
                bits = handle.read(1)
                return bits[0] if bits and 1 <= bits[0] <= 16 else None
            handle.seek(length + 4, io.SEEK_CUR)
    finally:
        handle.seek(position)


def is_dicom(source: Source) -> bool:
    """Whether a file (or bytes) holds DICOM: the `DICM` marker after the 128-byte preamble."""
    if isinstance(source, bytes):
        return source[128:132] == b"DICM"
    try:
        with open(source, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_image(source: Source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A DICOM image as 8-bit greyscale, displayed as its file says it should be.

    The header is read first and its rows x columns x frames checked against `max_pixels`, before pixel
    data is read, inflated (deflated transfer syntax) or decompressed (JPEG, JPEG 2000, RLE: the size in
    the compressed frame is checked too). pydicom applies the modality LUT (rescale slope and intercept) and
    the VOI LUT or window (centre and width) stored in the file; the result is stretched to 0-255 and
    inverted for MONOCHROME1, where low values are bright, so bone is white as in the JPEGs the models are
    trained on. One greyscale frame per file.
    """
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ValueError("reading DICOM needs pydicom: pip install 'medlit[dicom]'") from None
    with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as handle:
        dataset = _read_dicom(handle, max_pixels)
    if "PixelData" not in dataset:
        raise ValueError("the DICOM file holds no image (no PixelData)")
    pixels = dataset.pixel_array
    if pixels.ndim != 2:
        raise ValueError(f"expected one greyscale frame, got pixel data of shape {pixels.shape}")
    values = np.asarray(apply_voi_lut(apply_modality_lut(pixels, dataset), dataset), dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if high > low:
        values -= low
        values *= 255.0 / (high - low)
    else:
        values[:] = 0
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        np.subtract(255.0, values, out=values)
    return Image.fromarray(values.round().astype(np.uint8))


def _read_dicom(handle: BinaryIO, max_pixels: int):
    """The DICOM data set in `handle`, its image size checked from the header before the pixels are read."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        read_preamble(handle, False)
        meta = _read_file_meta_info(handle)
        if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            return _inflated_dicom(handle, meta, max_pixels)
        handle.seek(0)
        header = pydicom.dcmread(handle, stop_before_pixels=True, defer_size=1 << 20)
        _check_dicom_size(header, max_pixels)
        handle.seek(0)
        dataset = pydicom.dcmread(handle)
    except InvalidDicomError as err:
        raise ValueError(str(err)) from None
    if dataset.file_meta.get("TransferSyntaxUID") and dataset.file_meta.TransferSyntaxUID.is_compressed:
        _check_compressed_frame(dataset, max_pixels)
    return dataset


def _check_dicom_size(header, max_pixels: int) -> None:
    rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    check_pixels(columns, rows, frames, max_pixels)
    if int(header.get("BitsAllocated", 16) or 16) > 64:
        raise ValueError(f"BitsAllocated={header.BitsAllocated} is not a pixel size")
    if frames > 1:
        raise ValueError(f"the DICOM file holds {frames} frames; medlit reads files of one image")


def _inflated_dicom(handle: BinaryIO, meta, max_pixels: int):
    """A deflated data set (PS3.5 A.5) inflated in two bounded steps: first its header, whose image size is
    checked, then no more than that image needs. pydicom alone would inflate it whole, however large."""
    from pydicom.dataset import FileDataset
    from pydicom.filereader import read_dataset
    from pydicom.uid import ExplicitVRLittleEndian

    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    compressed = handle.read()
    head = inflater.decompress(compressed, _DICOM_HEADER_BYTES)
    passed = []

    def past_image_header(tag, vr, length) -> bool:  # group 0028 (image pixel module) is complete
        passed.append(tag > 0x0028FFFF)
        return passed[-1]

    header = read_dataset(io.BytesIO(head), False, True, stop_when=past_image_header)
    if not (passed and passed[-1]) and not inflater.eof:
        raise ValueError(f"the deflated DICOM header is larger than {_DICOM_HEADER_BYTES >> 20} MB")
    _check_dicom_size(header, max_pixels)
    bytes_per_pixel = (int(header.get("BitsAllocated", 16) or 16) + 7) // 8
    pixels = int(header.get("Rows", 0) or 0) * int(header.get("Columns", 0) or 0)
    needed = pixels * int(header.get("SamplesPerPixel", 1) or 1) * bytes_per_pixel
    rest = inflater.decompress(inflater.unconsumed_tail, needed + _DICOM_HEADER_BYTES)
    if inflater.unconsumed_tail:
        raise TooManyPixels(f"its deflated data inflates to more than its {needed / 1e6:.1f} MB image needs")
    dataset = read_dataset(io.BytesIO(head + rest), False, True)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what is left is the inflated data set
    return FileDataset(None, dataset, file_meta=meta, is_implicit_VR=False, is_little_endian=True)


def _check_compressed_frame(dataset, max_pixels: int) -> None:
    """The size a JPEG or JPEG 2000 frame declares in its own header, checked as the DICOM header was: a
    decoder allocates what the frame says, whatever Rows and Columns say."""
    from pydicom.encaps import get_frame

    frame = get_frame(dataset.PixelData, 0, number_of_frames=1)
    try:
        with Image.open(io.BytesIO(frame), formats=("JPEG", "JPEG2000")) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError):
        return  # not a codestream PIL reads (RLE, JPEG-LS): its decoder allocates by Rows and Columns
    check_pixels(width, height, 1, max_pixels)
    if (height, width) != (int(dataset.Rows), int(dataset.Columns)):
        raise ValueError(
            f"the compressed frame is {width} x {height} pixels, the header says {dataset.Columns} x {dataset.Rows}"
        )
