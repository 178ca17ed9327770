"""Small generated data sets in the real formats, with a class signal a network can learn in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def blob_images(labels: np.ndarray, size: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Noisy grey images with a bright square whose position encodes the class."""
    images = rng.normal(60, 20, (len(labels), size, size)).clip(0, 255)
    side = max(2, size // 5)
    for image, label in zip(images, labels, strict=True):
        angle = np.pi / 2 + 2 * np.pi * label / num_classes  # binary: top vs bottom, unchanged by flips
        cy = int(size / 2 + size / 4 * np.sin(angle)) - side // 2
        cx = int(size / 2 + size / 4 * np.cos(angle)) - side // 2
        image[cy : cy + side, cx : cx + side] += 150
    return images.clip(0, 255).astype(np.uint8)


def write_medmnist_npz(
    path: Path,
    num_classes: int,
    size: int = 28,
    counts: tuple[int, int, int] = (96, 48, 48),
    rgb: bool = False,
    seed: int = 0,
) -> Path:
    """A file in MedMNIST's npz format: `{split}_images` uint8 (N, H, W[, 3]) and `{split}_labels` (N, 1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        labels = np.arange(n) % num_classes
        rng.shuffle(labels)
        images = blob_images(labels, size, num_classes, rng)
        if rgb:
            images = np.repeat(images[..., None], 3, axis=-1)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path
