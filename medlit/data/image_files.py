"""What the data modules that read image files share: decoded once and cached, bad files, carved splits, samplers.

A subclass lists its files (`_list`): the data set's root, its classes and, per split it has, the files with their
labels and patients. This base decodes every listed file once (`medlit.data.image_cache`), reports and leaves out
the unreadable ones, carves the splits that are not given out of train, patient by patient, and serves the
cached uint8 images with the batch augmentation, the class-balanced sampler and the loaders of
`ClassificationDataModule`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from medlit.data.base import ClassificationDataModule, ImageTensorDataset
from medlit.data.decode import MAX_PIXELS
from medlit.data.image_cache import DecodedImages, load_or_decode
from medlit.data.splits import cross_validation_fold, earliest_split, grouped_split
from medlit.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CARVED = "split"  # the strategy that carves a split out of train; any other takes the split as given
EARLIEST = "earliest"  # carves the earliest-numbered patients of each naming scheme (medlit.data.splits.earliest_split)
SAMPLERS = (None, "weighted")
ON_BAD_FILE = ("skip", "fail")
_SHOWN_BAD = 5


@dataclass
class ImageSplit:
    """The files of one split (relative to the data set's root, or absolute), their class indices, their
    patients, and the labels the split is stratified by when it is carved (default: the class indices)."""

    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    strata: list[int] | None = None

    def take(self, indices: Sequence[int]) -> ImageSplit:
        strata = None if self.strata is None else [self.strata[i] for i in indices]
        return ImageSplit(
            [self.files[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.patients[i] for i in indices],
            strata,
        )


@dataclass
class Listing:
    """What a data module found: the root its files are relative to, its classes, and the splits it has."""

    root: Path
    class_names: list[str]
    splits: dict[str, ImageSplit]


class ImageFileDataModule(ClassificationDataModule):
    """Images read from files, decoded once to greyscale `image_size` squares and cached under `cache_dir`.

    Validation and test are taken as listed, or carved out of train (strategy `"split"`), patient by
    patient and class by class, so no patient is on both sides; with `num_folds`, validation is fold `fold`
    of train's patient-grouped, stratified folds. Unreadable files are listed in the log and left out
    (`on_bad_file="skip"`) or stop the run (`"fail"`); files declaring more than `max_pixels` pixels are listed as
    unreadable without being decoded. `sampler="weighted"` draws every class equally often.
    """

    def __init__(
        self,
        image_size: int = 224,
        in_channels: int = 1,
        num_classes: int | None = None,
        val_strategy: str = CARVED,
        val_fraction: float = 0.1,
        test_strategy: str = CARVED,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        sampler: str | None = None,
        on_bad_file: str = "skip",
        cache_dir: str | None = None,
        decode_workers: int | None = None,
        train_transform: Callable[[Tensor], Tensor] | None = None,
        max_pixels: int = MAX_PIXELS,
        **loader_kwargs,
    ) -> None:
        super().__init__(split_seed=split_seed, **loader_kwargs)
        check_choice("data.sampler", sampler, SAMPLERS)
        check_choice("data.on_bad_file", on_bad_file, ON_BAD_FILE)
        check_choice("data.in_channels", in_channels, (1, 3))
        for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 < fraction < 1:
                raise DataError(f"data.{name}={fraction} must be between 0 and 1")
        self.image_size, self.in_channels = image_size, in_channels
        self.expected_classes = num_classes
        self.val_strategy, self.val_fraction = val_strategy, val_fraction
        self.test_strategy, self.test_fraction = test_strategy, test_fraction
        self.sampler, self.on_bad_file = sampler, on_bad_file
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.decode_workers = decode_workers
        self.train_transform = train_transform
        self.max_pixels = max_pixels
        self.decoded = 0  # images decoded (not read from the cache) by prepare_data and setup
        self.split_files: dict[str, list[str]] = {}
        self._listing: Listing | None = None

    def _list(self) -> Listing:
        """The data set's root, classes and listed splits (train, and val/test where the data has them)."""
        raise NotImplementedError

    def _cache_source(self) -> Path:
        """What the decoded images' cache is named after (the root folder, unless a subclass says otherwise)."""
        return self.listing.root

    @property
    def listing(self) -> Listing:
        """The files, listed once per instance, on first use, so a missing data set is reported up front."""
        if self._listing is None:
            self._listing = self._list()
            count = len(self._listing.class_names)
            if self.expected_classes is not None and self.expected_classes != count:
                raise DataError(
                    f"data.num_classes={self.expected_classes}, but the data has {count} classes: "
                    f"{', '.join(self._listing.class_names)}"
                )
        return self._listing

    @property
    def class_names(self) -> list[str]:
        if not self._class_names:
            self._class_names = list(self.listing.class_names)
        return self._class_names

    @class_names.setter
    def class_names(self, names: list[str]) -> None:
        self._class_names = list(names)

    @property
    def num_classes(self) -> int:
        """As configured (checked against the data once it is listed), else from the data."""
        return self.expected_classes or len(self.class_names)

    def prepare_data(self) -> None:
        """Decode and cache every image once (on one process per machine); setup() reads the cache."""
        if self.cache_dir is not None:
            self._decode()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        listing = self.listing
        result = self._decode()
        self._report_bad(listing.root, result)
        splits = listing.splits.items()
        row = {name: i for i, name in enumerate(result.files)}
        readable = {name: split.take([i for i, f in enumerate(split.files) if f in row]) for name, split in splits}
        pools = self._assign_splits(readable)
        for split_name, split in pools.items():
            missing = set(range(self.num_classes)) - set(split.labels)
            if missing:
                names = ", ".join(self.class_names[label] for label in sorted(missing))
                raise DataError(f"the {split_name} split has no readable images of class {names}")
        self.split_files = {name: split.files for name, split in pools.items()}
        datasets = {
            name: ImageTensorDataset(
                result.images[[row[f] for f in split.files]],
                torch.tensor(split.labels),
                self.train_transform if name == "train" else None,
                channels=self.in_channels,
                batch_transform=self.batch_transform if name == "train" else None,
            )
            for name, split in pools.items()
        }
        self.train_set, self.val_set, self.test_set = datasets["train"], datasets["val"], datasets["test"]
        log.info(
            "%s from %s: %s",
            self._title(),
            listing.root,
            ", ".join(f"{name} {self._describe(split.labels)}" for name, split in pools.items()),
        )

    def _title(self) -> str:
        return "Images"

    def sample_weights(self) -> Tensor | None:
        """`sampler="weighted"` draws every class equally often (with replacement)."""
        if self.sampler != "weighted":
            return None
        return (1.0 / self.class_counts.double())[self.train_labels()]

    def example_columns(self, split: str) -> list[dict[str, str]]:
        """What identifies each example of `split` in the predictions table, in the split's order: its file."""
        return [{"file": name} for name in self.split_files[split]]

    def _decode(self) -> DecodedImages:
        """Every listed file decoded (or read from the cache); files that are not there count as unreadable."""
        listing = self.listing
        files = list(dict.fromkeys(name for split in listing.splits.values() for name in split.files))
        present = [name for name in files if (listing.root / name).is_file()]
        result = load_or_decode(
            listing.root,
            present,
            self.image_size,
            self.cache_dir,
            self.decode_workers,
            self.max_pixels,
            self._cache_source(),
        )
        if len(present) < len(files):
            absent = set(files) - set(present)
            result.bad = [(name, "not found") for name in files if name in absent] + result.bad
        self.decoded += result.decoded
        return result

    def _report_bad(self, root: Path, result: DecodedImages) -> None:
        if not result.bad:
            return
        shown = "; ".join(f"{root / name} ({reason})" for name, reason in result.bad[:_SHOWN_BAD])
        more = f"; and {len(result.bad) - _SHOWN_BAD} more" if len(result.bad) > _SHOWN_BAD else ""
        total = len(result.bad) + len(result.files)
        message = f"{len(result.bad)} of {total} files are not readable images: {shown}{more}"
        if self.on_bad_file == "fail":
            raise DataError(f"{message}. Set data.on_bad_file=skip to train without them")
        log.warning("%s. Skipping them (data.on_bad_file=skip)", message)

    def _assign_splits(self, readable: dict[str, ImageSplit]) -> dict[str, ImageSplit]:
        """Given splits as they are; carved splits taken out of train, test first, then validation.
        With `num_folds`, validation is fold `fold` of train's patient-grouped, stratified folds."""
        pools = {"train": readable["train"]}
        for split, strategy, fraction in (
            ("test", self.test_strategy, self.test_fraction),
            ("val", "folds" if self.num_folds else self.val_strategy, self.val_fraction),
        ):
            if strategy not in (CARVED, EARLIEST, "folds"):
                pools[split] = readable[split]
                continue
            train = pools["train"]
            strata = train.labels if train.strata is None else train.strata
            if strategy == "folds":
                keep, held = cross_validation_fold(strata, self.num_folds, self.fold, self.split_seed, train.patients)
            elif strategy == EARLIEST:
                keep, held = earliest_split(strata, train.patients, fraction)
            else:
                keep, held = grouped_split(strata, train.patients, fraction, seed=self.split_seed)
            pools[split], pools["train"] = train.take(held), train.take(keep)
        return {name: pools[name] for name in SPLITS}

    def _describe(self, labels: list[int]) -> str:
        counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=self.num_classes).tolist()
        return "(" + ", ".join(f"{n} {c}" for n, c in zip(counts, self.class_names, strict=True)) + ")"


def check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise DataError(f"{name}={value} is not one of {', '.join(map(str, choices))}")
