"""Decode image files once, in parallel, into a uint8 tensor cached on disk (see `medlit.data.decode`).

Full-resolution X-ray JPEGs (1-3k px) cost far more to decode than a small network costs to train on
them, so each file is decoded and resized once. The cache file is named by a hash of the file list,
sizes and modification times and of the output size: a changed data set gets a new cache, never a
stale one. It carries a digest of its content: a damaged cache is decoded again, never served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from medlit.data.decode import DECODE_ERRORS, MAX_PIXELS, decode
from medlit.data.integrity import save_atomically, unseal

log = logging.getLogger(__name__)

# bump when decoding changes, so caches written by older code are not served
FORMAT_VERSION = 2
_SERIAL_BELOW = 64  # fewer files than this decode in-process: starting workers would cost more


@dataclass
class DecodedImages:
    """Greyscale images (N, 1, size, size) of the readable files, and why the others were not read."""

    images: Tensor
    files: list[str]
    bad: list[tuple[str, str]]
    decoded: int  # files decoded by this call: 0 when served from the cache


def _decode_or_reason(args: tuple[str, int, int]) -> np.ndarray | str:
    path, size, max_pixels = args
    try:
        return decode(path, size, max_pixels)
    except DECODE_ERRORS as err:
        return f"{type(err).__name__}: {err}"


def cache_key(root: Path, files: Sequence[str], size: int, max_pixels: int = MAX_PIXELS) -> str:
    """Hash of what the decoded images depend on: relative paths, byte sizes, mtimes, output size, pixel budget."""
    entries = []
    for name in files:
        stat = (root / name).stat()
        entries.append((name, stat.st_size, stat.st_mtime_ns))
    payload = json.dumps({"version": FORMAT_VERSION, "size": size, "max_pixels": max_pixels, "files": entries})
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def cache_path(cache_dir: Path, root: Path, files: Sequence[str], size: int, max_pixels: int = MAX_PIXELS) -> Path:
    """`<cache_dir>/<folder>-<hash of its path>_<size>px_<content key>.pt`."""
    place = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{root.name}-{place}_{size}px_{cache_key(root, files, size, max_pixels)}.pt"


def decode_all(
    root: Path, files: Sequence[str], size: int, workers: int | None = None, max_pixels: int = MAX_PIXELS
) -> DecodedImages:
    """Decode `files` (relative to `root`) with `workers` processes (default: every core); files declaring
    more than `max_pixels` pixels are listed as unreadable, not decoded."""
    workers = workers or os.cpu_count() or 1
    jobs = [(str(root / name), size, max_pixels) for name in files]
    start = time.perf_counter()
    if workers == 1 or len(jobs) < _SERIAL_BELOW:
        results = [_decode_or_reason(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_decode_or_reason, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    good = [(name, r) for name, r in zip(files, results, strict=True) if isinstance(r, np.ndarray)]
    bad = [(name, r) for name, r in zip(files, results, strict=True) if isinstance(r, str)]
    images = torch.from_numpy(np.stack([a for _, a in good])) if good else torch.empty(0, size, size)
    log.info(
        "Decoded %d images to %d px in %.1f s with %d process(es)%s",
        len(files),
        size,
        time.perf_counter() - start,
        workers if len(jobs) >= _SERIAL_BELOW else 1,
        f"; {len(bad)} unreadable" if bad else "",
    )
    return DecodedImages(images.to(torch.uint8).unsqueeze(1), [n for n, _ in good], bad, len(files))


def load_or_decode(
    root: Path,
    files: Sequence[str],
    size: int,
    cache_dir: Path | None,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
) -> DecodedImages:
    """The decoded `files`, read from the cache when it matches them and is intact, else decoded (and cached)."""
    if cache_dir is None:
        return decode_all(root, files, size, workers, max_pixels)
    path = cache_path(cache_dir, root, files, size, max_pixels)
    if path.exists():
        try:
            return _read(path)
        except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
            log.warning("The cache %s is unreadable (%s): decoding the images again", path, err)
    result = decode_all(root, files, size, workers, max_pixels)
    _write(path, result)
    return result


def _read(path: Path) -> DecodedImages:
    stored, intact = unseal(torch.load(path, weights_only=True, mmap=True))
    if not intact:
        raise ValueError("its content does not match its digest" if intact is False else "it has no digest")
    bad = [(name, reason) for name, reason in stored["bad"]]
    log.info("Read %d cached images from %s", len(stored["files"]), path)
    return DecodedImages(stored["images"], stored["files"], bad, decoded=0)


def _write(path: Path, result: DecodedImages) -> None:
    """Write atomically, then remove caches of earlier versions of the same folder at the same size."""
    content = {"images": result.images, "files": result.files, "bad": [list(b) for b in result.bad]}
    save_atomically(content, path)
    prefix = path.name.rsplit("_", 1)[0] + "_"
    for stale in path.parent.glob(f"{prefix}*.pt"):
        if stale != path:
            stale.unlink(missing_ok=True)
            log.info("Removed the outdated cache %s", stale)
    log.info("Cached the decoded images in %s", path)
