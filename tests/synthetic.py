"""Small generated data sets in the real formats, with a class signal a network can learn in seconds."""

from __future__ import annotations

from collections.abc import Callable
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


POSITIVE_WORDS = ("great", "wonderful", "superb", "loved", "brilliant", "moving")
NEGATIVE_WORDS = ("awful", "boring", "terrible", "hated", "waste", "dull")
FILLER_WORDS = ("the", "film", "movie", "plot", "actor", "scene", "story", "and", "a", "was", "it", "this")


def synthetic_review(label: int, rng: np.random.Generator, words: int = 24) -> str:
    """Filler words with a few sentiment words of the label's side, and an HTML line break, as in aclImdb."""
    tokens = list(rng.choice(FILLER_WORDS, words))
    mood = POSITIVE_WORDS if label else NEGATIVE_WORDS
    for i in rng.choice(words, 4, replace=False):
        tokens[i] = rng.choice(mood)
    half = words // 2
    return " ".join(tokens[:half]) + ".<br /><br />" + " ".join(tokens[half:]) + "."


def imdb_review_words(rng: np.random.Generator) -> int:
    """A review length drawn like IMDb's: log-normal words, median about 175, mean about 230, a long tail
    cut at 2,500 and no review under 10 words."""
    return int(np.clip(rng.lognormal(np.log(175), 0.75), 10, 2500))


def write_aclimdb(
    data_dir: Path,
    per_class: dict[str, int] | None = None,
    seed: int = 0,
    words: int | Callable[[np.random.Generator], int] = 24,
    films: int | None = None,
    unlabelled: int = 0,
) -> Path:
    """`data_dir/aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`: the layout of the IMDb archive.

    `words` is every review's length, or draws each one's (e.g. `imdb_review_words`, for realistic costs).
    With `films`, each split's reviews belong to that many films (of 1 to about 20 reviews, most with both
    positive and negative ones, none shared between splits), named in `<split>/urls_{neg,pos}.txt` as the
    archive does: line i is the IMDb URL of the film of review `i_<rating>.txt`. `unlabelled` reviews of
    either sentiment go to `train/unsup/<id>_0.txt` (with `train/urls_unsup.txt` when `films` is given).
    """
    rng = np.random.default_rng(seed)
    root = data_dir / "aclImdb"
    first_film = 0
    for split, count in (per_class or {"train": 40, "test": 16}).items():
        for label, folder in enumerate(("neg", "pos")):
            target = root / split / folder
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rating = rng.integers(7, 11) if label else rng.integers(1, 5)
                review = synthetic_review(label, rng, words if isinstance(words, int) else words(rng))
                (target / f"{i}_{rating}.txt").write_text(review, encoding="utf-8")
        if films:
            for folder, film_ids in zip(("neg", "pos"), _film_ids(2, count, films, first_film, rng), strict=True):
                _write_urls(root / split / f"urls_{folder}.txt", film_ids)
            first_film += films
    if unlabelled:
        target = root / "train" / "unsup"
        target.mkdir(parents=True, exist_ok=True)
        for i in range(unlabelled):
            review = synthetic_review(int(rng.integers(2)), rng, words if isinstance(words, int) else words(rng))
            (target / f"{i}_0.txt").write_text(review, encoding="utf-8")
        if films:
            (film_ids,) = _film_ids(1, unlabelled, films, first_film, rng)
            _write_urls(root / "train" / "urls_unsup.txt", film_ids)
    return data_dir


def _film_ids(classes: int, count: int, films: int, first: int, rng: np.random.Generator) -> list[np.ndarray]:
    """For each class, the film of each of its `count` reviews: films of uneven size (Zipf-like), with
    reviews of both classes."""
    popularity = 1.0 / np.arange(1, films + 1) ** 0.5
    popularity /= popularity.sum()
    return [first + rng.choice(films, size=count, p=popularity) for _ in range(classes)]


def _write_urls(path: Path, film_ids: np.ndarray) -> None:
    path.write_text("".join(f"http://www.imdb.com/title/tt{9_000_000 + f}/usercomments\n" for f in film_ids))


def _xray_names(label: int, patients: int, offset: int) -> list[str]:
    """Kermany-style file names, one to three images per patient."""
    names = []
    for p in range(offset, offset + patients):
        for k in range(1 + p % 3):
            if label == 1:
                names.append(f"person{p}_{'virus' if p % 2 else 'bacteria'}_{k}.jpeg")
            elif p % 2:
                names.append(f"NORMAL2-IM-{p:04d}-{k + 1:04d}.jpeg")
            else:
                names.append(f"IM-{p:04d}-{k + 1:04d}.jpeg")
    return names


def write_xray_folder(
    root: Path,
    patients: dict[str, tuple[int, int]] | None = None,
    size: tuple[int, int] = (56, 48),
    bad_files: bool = True,
    seed: int = 0,
) -> Path:
    """`root/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg` with (normal, pneumonia) patients per split.

    With `bad_files`, train/NORMAL also holds a truncated JPEG and train/PNEUMONIA an RGBA PNG.
    """
    from PIL import Image

    patients = patients or {"train": (12, 24), "val": (2, 2), "test": (3, 3)}
    rng = np.random.default_rng(seed)
    offset = 1
    for split, per_class in patients.items():
        for label, (name, count) in enumerate(zip(("NORMAL", "PNEUMONIA"), per_class, strict=True)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            files = _xray_names(label, count, offset)
            offset += count
            images = blob_images(np.full(len(files), label), max(size), 2, rng)
            for file, image in zip(files, images, strict=True):
                Image.fromarray(image).resize(size).save(folder / file, quality=90)
    if bad_files:
        whole = next((root / "train" / "NORMAL").glob("*.jpeg")).read_bytes()
        (root / "train" / "NORMAL" / "IM-0999-0001.jpeg").write_bytes(whole[: len(whole) // 2])
        rgba = np.zeros((*size[::-1], 4), np.uint8)
        rgba[..., 0], rgba[..., 3] = 200, 255
        Image.fromarray(rgba, "RGBA").save(root / "train" / "PNEUMONIA" / "person999_virus_1.png")
    return root


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    photometric: str = "MONOCHROME2",
) -> Path:
    """An uncompressed 16-bit greyscale DICOM file holding `pixels` (stored values), with a rescale slope and
    intercept, an optional window (centre, width) and its photometric interpretation."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
