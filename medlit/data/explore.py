"""Exploratory figures of the data sets, for `notebooks/01_eda.ipynb`: what the models are given to learn from.

Class balance per split, image sizes, pixel intensities per class, sample and augmentation grids, and the
length of IMDb reviews. Each function takes a set-up data module, a dataset or files and returns a figure.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from medlit.data.sampling import derive_seed

SPLITS = ("train", "val", "test")
_REVIEW = re.compile(r"(?:^|/)(train|test)/(neg|pos)/[^/]+\.txt$")
_WORD = re.compile(r"\w+(?:'\w+)*")


def split_labels(datamodule) -> dict[str, np.ndarray]:
    """The labels of every split a set-up data module has (its datasets' `labels`)."""
    labels = {}
    for split in SPLITS:
        dataset = getattr(datamodule, f"{split}_set", None)
        if dataset is not None:
            labels[split] = np.asarray(dataset.labels)
    return labels


def class_distribution(labels: dict[str, np.ndarray], class_names: Sequence[str]) -> Figure:
    """Examples per class in each split, as counts with each class's share on top."""
    fig = Figure(figsize=(2.2 + 1.6 * len(labels) * max(1, len(class_names) / 3), 4))
    ax = fig.subplots()
    width = 0.8 / len(class_names)
    for c, name in enumerate(class_names):
        counts = [int((split == c).sum()) for split in labels.values()]
        bars = ax.bar(np.arange(len(labels)) + c * width, counts, width, label=str(name))
        for bar, split in zip(bars, labels.values(), strict=True):
            share = bar.get_height() / max(len(split), 1)
            ax.annotate(f"{share:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, [f"{s} ({len(v)})" for s, v in labels.items()])
    ax.set_ylabel("examples")
    ax.set_title("Class distribution per split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def image_sizes(paths: Iterable[Path]) -> np.ndarray:
    """(width, height) of each image file, read from its header only."""
    sizes = []
    for path in paths:
        with Image.open(path) as image:
            sizes.append(image.size)
    return np.asarray(sizes, dtype=int).reshape(-1, 2)


def image_size_figure(sizes: np.ndarray, title: str) -> Figure:
    """Widths against heights, with the aspect ratios' spread: what resizing to a square does to them."""
    fig = Figure(figsize=(9, 3.8))
    left, right = fig.subplots(1, 2)
    left.scatter(sizes[:, 0], sizes[:, 1], s=8, alpha=0.6)
    left.set_xlabel("width (px)")
    left.set_ylabel("height (px)")
    left.set_title(f"{title}: {len(sizes)} images")
    right.hist(sizes[:, 0] / sizes[:, 1], bins=30)
    right.set_xlabel("aspect ratio (width / height)")
    right.set_ylabel("images")
    fig.tight_layout()
    return fig


def intensity_histograms(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> Figure:
    """Pixel-intensity distribution (0-255) of each class of uint8 images (N, C, H, W)."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    images, labels = images.numpy(), np.asarray(labels)
    for c, name in enumerate(class_names):
        pixels = images[labels == c].ravel()
        if len(pixels):
            ax.hist(pixels, bins=64, range=(0, 255), density=True, histtype="step", lw=1.5,
                    label=f"{name} (mean {pixels.mean():.0f})")  # fmt: skip
    ax.set_xlabel("pixel intensity")
    ax.set_ylabel("density")
    ax.set_title("Pixel intensities per class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sample_grid(
    images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], per_class: int = 6, seed: int = 0
) -> Figure:
    """`per_class` random images (uint8, N x C x H x W) of each class, one row per class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(1.5 * per_class + 1.2, 1.55 * len(class_names)))
    axes = np.atleast_2d(fig.subplots(len(class_names), per_class, squeeze=False))
    for c, name in enumerate(class_names):
        found = np.flatnonzero(labels == c)
        chosen = rng.choice(found, size=min(per_class, len(found)), replace=False)
        for col, ax in enumerate(axes[c]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(chosen):
                _show(ax, images[int(chosen[col])])
            else:
                ax.axis("off")
        axes[c, 0].set_ylabel(str(name), rotation=0, ha="right", va="center")
    fig.suptitle("Sample images per class")
    fig.tight_layout()
    return fig


def augmentation_grid(
    image: torch.Tensor, transform=None, batch_transform=None, count: int = 8, seed: int = 0
) -> Figure:
    """One image and `count` draws of the training augmentation applied to it: the per-image `transform`, then the
    `batch_transform` (e.g. `RandomAffineBatch`) as the training device applies it; either may be None."""
    fig = Figure(figsize=(1.5 * (count + 1), 1.9))
    axes = fig.subplots(1, count + 1)
    _show(axes[0], image)
    axes[0].set_title("original", fontsize=8)
    for i, ax in enumerate(axes[1:]):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, i))
            drawn = image if transform is None else transform(image)
            if batch_transform is not None:
                params = batch_transform.sample(torch.Generator().manual_seed(derive_seed(seed, i)))
                drawn = batch_transform(drawn[None], params[None])[0]
            _show(ax, drawn)
        ax.set_title(f"draw {i + 1}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Training augmentation", fontsize=10)
    fig.tight_layout()
    return fig


def _show(ax, image: torch.Tensor) -> None:
    array = image.numpy()
    if array.shape[0] == 1:
        ax.imshow(array[0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(np.moveaxis(array, 0, -1))


def review_lengths(source: Path) -> dict[str, np.ndarray]:
    """Words per review by "<split>/<neg|pos>", from an `aclImdb/` folder or its .tar.gz archive."""
    lengths: dict[str, list[int]] = {}

    def add(name: str, text: str) -> None:
        match = _REVIEW.search(name)
        if match:
            words = len(_WORD.findall(text.replace("<br />", " ")))
            lengths.setdefault(f"{match.group(1)}/{match.group(2)}", []).append(words)

    if source.is_dir():
        for path in sorted(source.glob("*/*/*.txt")):
            add(path.relative_to(source).as_posix(), path.read_text(encoding="utf-8"))
    else:
        with tarfile.open(source) as archive:
            for member in archive:
                if member.isfile() and member.name.endswith(".txt"):
                    add(member.name, archive.extractfile(member).read().decode("utf-8"))
    return {key: np.asarray(values) for key, values in sorted(lengths.items())}


def review_length_figure(lengths: dict[str, np.ndarray], cut: int | None = None) -> Figure:
    """Histograms of review lengths in words per split and sentiment; `cut` marks a truncation length."""
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    longest = max(int(np.percentile(v, 99)) for v in lengths.values())
    for key, values in lengths.items():
        ax.hist(values, bins=60, range=(0, longest), histtype="step", lw=1.4, density=True,
                label=f"{key}: {len(values)} reviews, median {int(np.median(values))} words")  # fmt: skip
    if cut is not None:
        share = np.mean(np.concatenate(list(lengths.values())) > cut)
        ax.axvline(cut, c="black", ls="--", lw=1, label=f"max_len {cut} ({share:.0%} of reviews are longer)")
    ax.set_xlabel("words per review")
    ax.set_ylabel("density")
    ax.set_title("Review lengths")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
