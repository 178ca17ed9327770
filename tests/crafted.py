"""Files an attacker would craft: checkpoints with hostile configurations, decompression bombs, forged images.

Each bomb is a valid file of its format, built in milliseconds: the deflate stream of a run of zero bytes is one
compressed MiB repeated (each copy ends in a full flush, so none refers to the others).
"""

from __future__ import annotations

import copy
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from medlit.training.checkpoint import AtomicCheckpointIO
from medlit.training.run import build_classifier
from tests.conftest import compose_config

_MIB = 1 << 20


def deflated_zeros(size: int) -> bytes:
    """A raw deflate stream (no header) that inflates to `size` zero bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    mebibyte = packer.compress(bytes(_MIB)) + packer.flush(zlib.Z_FULL_FLUSH)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return mebibyte * (size // _MIB) + packer.compress(bytes(size % _MIB)) + packer.flush()


def _crc32_of_zeros(size: int) -> int:
    crc, block = 0, bytes(_MIB)
    for _ in range(size // _MIB):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(bytes(size % _MIB), crc)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, pixels: np.ndarray | None = None, shape: tuple[int, int] = (0, 0), sbit: int | None = None):
    """A 16-bit greyscale PNG of `pixels` (uint16), or of zeros of `shape` (height, width) however large, with an
    optional sBIT chunk (significant bits)."""
    if pixels is not None:
        height, width = pixels.shape
        rows = np.zeros((height, 1 + 2 * width), np.uint8)
        rows[:, 1:] = pixels.astype(">u2").view(np.uint8).reshape(height, -1)
        raw = rows.tobytes()
        data = zlib.compress(raw, 9)
    else:
        height, width = shape
        size = height * (1 + 2 * width)  # a filter byte (0) and two bytes a pixel, every row
        data = b"\x78\xda" + deflated_zeros(size) + struct.pack(">I", ((size % 65521) << 16) | 1)
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
    significant = _png_chunk(b"sBIT", bytes([sbit])) if sbit else b""
    body = header + significant + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def write_zip_bomb(path: Path, size: int) -> Path:
    """A zip archive of one member, `size` zero bytes deflated (300 MB in about 300 KB)."""
    name, data, crc = b"zeros.bin", deflated_zeros(size), _crc32_of_zeros(size)
    fields = struct.pack("<HHHHHIII", 20, 0, 8, 0, 0, crc, len(data), size)
    local = b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name
    central = (
        b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, 0) + name
    )
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)
    return path


def write_dicom_bomb(path: Path, rows: int = 8000, columns: int = 8000) -> Path:
    """A deflated DICOM file (Deflated Explicit VR Little Endian) of rows x columns 16-bit zero pixels: the data
    set's elements, then the pixel data's header and zeros, deflated as one stream."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "DX", rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    elements, head = DicomBytesIO(), DicomBytesIO()
    elements.is_little_endian, elements.is_implicit_VR = True, False
    write_dataset(elements, ds)
    write_file_meta_info(head, meta, enforce_standard=True)
    size = rows * columns * 2
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = packer.compress(elements.getvalue() + pixel_header) + packer.flush(zlib.Z_FULL_FLUSH)
    path.write_bytes(bytes(128) + b"DICM" + head.getvalue() + stream + deflated_zeros(size))
    return path


def write_checkpoint(
    path: Path,
    change: Callable[[dict], object] | None = None,
    *overrides: str,
    extra: dict | None = None,
    class_names: tuple[str, str] = ("normal", "pneumonia"),
) -> Path:
    """A checkpoint as a PneumoniaMNIST run with a small baseline CNN writes it (untrained weights, its resolved
    run configuration stored), or the run `overrides` describe, with `extra` entries (a data module's state);
    `change` edits the stored configuration first, as an attacker would."""
    cfg = compose_config(list(overrides or ("model=baseline_cnn", "model.filters=4")), path.parent / "run")
    model = build_classifier(cfg, 2, list(class_names))
    hparams = copy.deepcopy(dict(model.hparams))
    if change is not None:
        change(hparams["run_config"])
    content = {
        "epoch": 0, "global_step": 3, "pytorch-lightning_version": pl.__version__, "state_dict": model.state_dict(),
        "hyper_parameters": hparams, **(extra or {}),
    }  # fmt: skip
    AtomicCheckpointIO().save_checkpoint(content, path)
    return path
