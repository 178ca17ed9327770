"""Image files (JPEG, PNG, DICOM, ...) decoded to greyscale uint8 squares: every image medlit reads goes through here.

Training data, predictions on new files and uploads to the web app are decoded by the same functions, so a
model sees new images exactly as it saw its training images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from medlit.errors import UnreadableInput

Source = str | Path | bytes

# what PIL may raise when a file is not what it should be, and pydicom for a damaged or unsupported DICOM
# file (e.g. a compression it cannot decode)
DECODE_ERRORS = (
    OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError, RuntimeError, NotImplementedError,
    AttributeError, KeyError,
)  # fmt: skip


def decode_file(source: Source, size: int, name: str | None = None) -> np.ndarray:
    """A file (or its bytes) as greyscale uint8 (size, size); `UnreadableInput` naming it if it cannot be read."""
    name = name or str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise UnreadableInput(f"{name} not found")
    try:
        return decode(source, size)
    except DECODE_ERRORS as err:
        kind = "DICOM image" if is_dicom(source) else "image"
        reason = str(err).split(" <_io.BytesIO")[0]  # bytes have no file name for PIL to show
        raise UnreadableInput(f"{name} is not a readable {kind} ({type(err).__name__}: {reason})") from None


def decode(source: Source, size: int) -> np.ndarray:
    """A file (or its bytes) as greyscale uint8 (size, size): DICOM by pydicom, every other format by PIL.

    Raises one of `DECODE_ERRORS` when the file is not a readable image.
    """
    if is_dicom(source):
        return grey_square(dicom_image(source), size)
    return decode_image(io.BytesIO(source) if isinstance(source, bytes) else str(source), size)


def decode_image(path: str | io.BytesIO, size: int) -> np.ndarray:
    """One image file as a greyscale uint8 (size, size) array; odd formats are converted, not refused.

    JPEGs are decoded at the smallest DCT scale that still covers `size` (PIL's draft mode), which
    makes large X-rays several times faster to read. 16-bit greyscale is scaled to 8 bits, RGB(A),
    CMYK and palette images are converted to luminance (alpha is dropped).
    """
    with Image.open(path) as image:
        image.draft("L", (size, size))
        return grey_square(image, size)


def grey_square(image: Image.Image, size: int) -> np.ndarray:
    """An opened image as greyscale uint8 (size, size)."""
    if image.mode.startswith("I"):  # 16-bit (or 32-bit integer) greyscale
        wide = np.asarray(image, dtype=np.float32) / 257.0
        image = Image.fromarray(wide.clip(0, 255).round().astype(np.uint8))
    elif image.mode != "L":
        image = image.convert("L")
    image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def is_dicom(source: Source) -> bool:
    """Whether a file (or bytes) holds DICOM: the `DICM` marker after the 128-byte preamble."""
    if isinstance(source, bytes):
        return source[128:132] == b"DICM"
    try:
        with open(source, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_image(source: Source) -> Image.Image:
    """A DICOM image as 8-bit greyscale, displayed as its file says it should be.

    pydicom applies the modality LUT (rescale slope and intercept) and the VOI LUT or window (centre and
    width) stored in the file; the result is stretched to 0-255 and inverted for MONOCHROME1, where low
    values are bright, so bone is white as in the JPEGs the models are trained on.
    """
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ValueError("reading DICOM needs pydicom: pip install 'medlit[dicom]'") from None
    try:
        dataset = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except InvalidDicomError as err:
        raise ValueError(str(err)) from None
    if "PixelData" not in dataset:
        raise ValueError("the DICOM file holds no image (no PixelData)")
    pixels = dataset.pixel_array
    if pixels.ndim != 2:
        raise ValueError(f"expected one greyscale frame, got pixel data of shape {pixels.shape}")
    values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float64)
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 255 - scaled
    return Image.fromarray(scaled.round().astype(np.uint8))
