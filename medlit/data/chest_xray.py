"""Chest X-rays in folders (Kermany et al. / Kaggle "Chest X-Ray Images (Pneumonia)"), at any resolution."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from medlit.data import image_folder
from medlit.data.base import ClassificationDataModule, ImageTensorDataset
from medlit.data.decode import MAX_PIXELS
from medlit.data.image_cache import DecodedImages, load_or_decode
from medlit.data.image_folder import FolderSplit
from medlit.data.splits import cross_validation_fold, grouped_split, patient_id
from medlit.errors import DataError

log = logging.getLogger(__name__)

STRATEGIES = ("official", "split")
SAMPLERS = (None, "weighted")
ON_BAD_FILE = ("skip", "fail")
_SHOWN_BAD = 5


class ChestXrayDataModule(ClassificationDataModule):
    """`<data_dir>/{train,val,test}/<class>/*.jpeg` (also nested in `chest_xray/` once or twice).

    Every image is decoded once, converted to greyscale and resized to `image_size` (square, as the
    reference studies and the 224 px release do), and cached under `cache_dir`; augmentation then runs
    on the cached uint8 tensors. Files declaring more than `max_pixels` pixels are listed as unreadable
    without being decoded. The classes are train/'s sub-folders in sorted order, except that with two
    classes `positive_class` (matched case-insensitively) is class 1, the one sensitivity and the decision
    threshold are about: NORMAL = 0, PNEUMONIA = 1.

    Validation and test come from their folders (`official`) or are carved out of train (`split`),
    patient by patient and class by class, so no patient is on both sides. The official validation
    folder holds 16 images, hence `val_strategy="split"` by default. A split that is needed but missing
    is an error, never a silent substitute.
    """

    def __init__(
        self,
        data_dir: str,
        image_size: int = 224,
        in_channels: int = 1,
        num_classes: int | None = None,
        val_strategy: str = "split",
        val_fraction: float = 0.1,
        test_strategy: str = "official",
        test_fraction: float = 0.1,
        split_seed: int = 0,
        sampler: str | None = None,
        on_bad_file: str = "skip",
        cache_dir: str | None = None,
        decode_workers: int | None = None,
        train_transform: Callable[[Tensor], Tensor] | None = None,
        positive_class: str | None = "PNEUMONIA",
        max_pixels: int = MAX_PIXELS,
        **loader_kwargs,
    ) -> None:
        super().__init__(split_seed=split_seed, **loader_kwargs)
        _check_choice("data.val_strategy", val_strategy, STRATEGIES)
        _check_choice("data.test_strategy", test_strategy, STRATEGIES)
        _check_choice("data.sampler", sampler, SAMPLERS)
        _check_choice("data.on_bad_file", on_bad_file, ON_BAD_FILE)
        _check_choice("data.in_channels", in_channels, (1, 3))
        for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 < fraction < 1:
                raise DataError(f"data.{name}={fraction} must be between 0 and 1")
        self.data_dir = Path(data_dir)
        self.image_size, self.in_channels = image_size, in_channels
        self.expected_classes = num_classes
        self.val_strategy, self.val_fraction = val_strategy, val_fraction
        self.test_strategy, self.test_fraction = test_strategy, test_fraction
        self.sampler, self.on_bad_file = sampler, on_bad_file
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.decode_workers = decode_workers
        self.train_transform = train_transform
        self.positive_class, self.max_pixels = positive_class, max_pixels
        self.decoded = 0  # images decoded (not read from the cache) by prepare_data and setup
        self.split_files: dict[str, list[str]] = {}
        self._index: tuple[Path, dict[str, FolderSplit]] | None = None

    @property
    def class_names(self) -> list[str]:
        """train/'s class folders, read on first use, so a missing data folder is reported up front."""
        if not self._class_names:
            self._folders()
        return self._class_names

    @class_names.setter
    def class_names(self, names: list[str]) -> None:
        self._class_names = list(names)

    @property
    def num_classes(self) -> int:
        """As configured (checked against the folders once they are read), else from the folders."""
        return self.expected_classes or len(self.class_names)

    def prepare_data(self) -> None:
        """Decode and cache every image once (on one process per machine); setup() reads the cache."""
        if self.cache_dir is not None:
            self._decode()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        root, splits = self._folders()
        result = self._decode()
        self._report_bad(root, result)
        row = {name: i for i, name in enumerate(result.files)}
        readable = {name: _readable(split, row) for name, split in splits.items()}
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
            "Chest X-rays from %s: %s",
            root,
            ", ".join(f"{name} {self._describe(split.labels)}" for name, split in pools.items()),
        )

    def sample_weights(self) -> Tensor | None:
        """`sampler="weighted"` draws every class equally often (with replacement)."""
        if self.sampler != "weighted":
            return None
        return (1.0 / self.class_counts.double())[self.train_labels()]

    def _folders(self) -> tuple[Path, dict[str, FolderSplit]]:
        """The data set's root and the files of each split folder there (listed once per instance)."""
        if self._index is None:
            if not self.data_dir.is_dir():
                raise DataError(
                    f"data folder {self.data_dir} not found; set data.data_dir to the folder that holds "
                    f"train/, or fetch the data set with: medlit download chest_xray"
                )
            root = image_folder.find_root(self.data_dir, nested="chest_xray")
            train_folder = image_folder.split_folder(root, "train")
            self.class_names = positive_last(image_folder.class_names(train_folder), self.positive_class, train_folder)
            if self.expected_classes is not None and self.expected_classes != len(self.class_names):
                raise DataError(
                    f"data.num_classes={self.expected_classes}, but {train_folder} has "
                    f"{len(self.class_names)} class folders: {', '.join(self.class_names)}"
                )
            splits = {}
            for split, strategy in (
                ("train", "official"),
                ("val", self.val_strategy),
                ("test", self.test_strategy),
            ):
                folder = image_folder.split_folder(root, split)
                if folder is None and strategy == "official":
                    raise DataError(
                        f"no {split} split: {root / split} not found. Set data.{split}_strategy=split to "
                        f"carve one out of train (grouped by patient)"
                    )
                if folder is not None:  # listed (and cached) whatever the strategy: one cache per folder
                    splits[split] = image_folder.list_split(root, folder, self.class_names)
                    _warn_unknown_classes(folder, self.class_names)
            self._index = root, splits
        return self._index

    def _decode(self) -> DecodedImages:
        root, splits = self._folders()
        files = [name for split in splits.values() for name in split.files]
        result = load_or_decode(root, files, self.image_size, self.cache_dir, self.decode_workers, self.max_pixels)
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

    def _assign_splits(self, readable: dict[str, FolderSplit]) -> dict[str, FolderSplit]:
        """Official folders as they are; carved splits taken out of train, test first, then validation.
        With `num_folds`, validation is fold `fold` of train's patient-grouped, stratified folds."""
        pools = {"train": readable["train"]}
        for split, strategy, fraction in (
            ("test", self.test_strategy, self.test_fraction),
            ("val", "folds" if self.num_folds else self.val_strategy, self.val_fraction),
        ):
            if strategy == "official":
                pools[split] = readable[split]
                continue
            train = pools["train"]
            patients = [patient_id(f) for f in train.files]
            if strategy == "folds":
                keep, held = cross_validation_fold(train.labels, self.num_folds, self.fold, self.split_seed, patients)
            else:
                keep, held = grouped_split(train.labels, patients, fraction, seed=self.split_seed)
            pools[split] = FolderSplit([train.files[i] for i in held], [train.labels[i] for i in held])
            pools["train"] = FolderSplit([train.files[i] for i in keep], [train.labels[i] for i in keep])
        return {name: pools[name] for name in image_folder.SPLITS}

    def _describe(self, labels: list[int]) -> str:
        counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=self.num_classes).tolist()
        return "(" + ", ".join(f"{n} {c}" for n, c in zip(counts, self.class_names, strict=True)) + ")"


def positive_last(names: list[str], positive: str | None, folder: Path) -> list[str]:
    """Two class names ordered so that `positive` (matched case-insensitively) is class 1; sorted order for
    more classes, where no class is the positive one, or when `positive` is None."""
    if positive is None or len(names) != 2:
        return names
    matches = [name for name in names if name.casefold() == str(positive).casefold()]
    if not matches:
        raise DataError(
            f"data.positive_class={positive} is none of the class folders of {folder} ({', '.join(names)}); "
            "set data.positive_class to the one sensitivity is about"
        )
    return [*(name for name in names if name != matches[0]), matches[0]]


def _warn_unknown_classes(folder: Path, classes: list[str]) -> None:
    """A split folder's class folders that train/ lacks are left out: say which."""
    unknown = sorted(set(image_folder.class_folders(folder)) - set(classes))
    if unknown:
        log.warning(
            "%s has class folders that train/ lacks, left out: %s (the classes are the folders of train/)",
            folder,
            ", ".join(unknown),
        )


def _readable(split: FolderSplit, row: dict[str, int]) -> FolderSplit:
    keep = [i for i, name in enumerate(split.files) if name in row]
    return FolderSplit([split.files[i] for i in keep], [split.labels[i] for i in keep])


def _check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise DataError(f"{name}={value} is not one of {', '.join(map(str, choices))}")


KAGGLE_HANDLE = "paultimothymooney/chest-xray-pneumonia"
# the official release: 5216 training, 16 validation and 624 test images
OFFICIAL_COUNTS = {
    "train": {"NORMAL": 1341, "PNEUMONIA": 3875},
    "val": {"NORMAL": 8, "PNEUMONIA": 8},
    "test": {"NORMAL": 234, "PNEUMONIA": 390},
}


def count_images(root: Path) -> dict[str, dict[str, int]]:
    """Files per class in each split folder under the data set's `root` (checks the layout on the way)."""
    classes = image_folder.class_names(image_folder.split_folder(root, "train"))
    counts = {}
    for split in image_folder.SPLITS:
        folder = image_folder.split_folder(root, split)
        if folder is not None:
            listed = image_folder.list_split(root, folder, classes)
            counts[split] = {name: listed.labels.count(label) for label, name in enumerate(classes)}
    return counts


def download(data_dir: Path, urls: list[str] | None = None, md5: str | None = None) -> Path:
    """Fetch the data set into `<data_dir>/chest_xray` (or, without `urls`, kagglehub's cache); its root.

    With `urls` (an archive of the data set and mirrors, tried in order) the archive is checked against
    `md5` when given and unpacked safely; with none, the Kaggle release is fetched with kagglehub (the
    `kaggle` extra). Data that is already in place is not fetched again.
    """
    from medlit.data.archive import unpack
    from medlit.data.fetch import fetch

    target = data_dir / "chest_xray"
    if not urls:
        try:
            import kagglehub
        except ImportError:
            raise DataError(
                "kagglehub is not installed: pip install 'medlit[kaggle]', or give --url of an archive"
            ) from None
        try:
            return image_folder.find_root(Path(kagglehub.dataset_download(KAGGLE_HANDLE)), "chest_xray")
        except (OSError, ValueError) as err:  # kagglehub's network and authentication errors
            raise DataError(f"kagglehub could not fetch {KAGGLE_HANDLE}: {err}") from None
    try:
        return image_folder.find_root(target, "chest_xray")
    except DataError:
        pass
    name = Path(urls[0].split("?")[0]).name or "chest_xray.zip"
    archive = fetch(urls, data_dir / name, md5)
    unpack(archive, target)
    archive.unlink()
    return image_folder.find_root(target, "chest_xray")
