"""Chest X-rays in folders (Kermany et al. / Kaggle "Chest X-Ray Images (Pneumonia)"), at any resolution."""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePath

from medlit.data import image_folder
from medlit.data.base import BinaryView
from medlit.data.image_files import ImageFileDataModule, ImageSplit, Listing, check_choice
from medlit.data.splits import patient_id
from medlit.errors import DataError

log = logging.getLogger(__name__)

STRATEGIES = ("official", "split", "earliest")
LABELS = ("folders", "pathogen")
PATHOGEN_CLASSES = ["NORMAL", "BACTERIAL", "VIRAL"]
# Kermany et al.'s pneumonia file names say the pathogen: person1_bacteria_1.jpeg, person1_virus_6.jpeg
_PATHOGEN = re.compile(r"_(bacteria|virus)_", re.IGNORECASE)


class ChestXrayDataModule(ImageFileDataModule):
    """`<data_dir>/{train,val,test}/<class>/*.jpeg` (also nested in `chest_xray/` once or twice).

    Every image is decoded once, converted to greyscale and resized to `image_size` (square, as the
    reference studies and the 224 px release do), and cached under `cache_dir`; augmentation then runs
    on the cached uint8 tensors. Files declaring more than `max_pixels` pixels are listed as unreadable
    without being decoded. The classes are train/'s sub-folders in sorted order, except that with two
    classes `positive_class` (matched case-insensitively) is class 1, the one sensitivity and the decision
    threshold are about: NORMAL = 0, PNEUMONIA = 1.

    Validation and test come from their folders (`official`) or are carved out of train (`split`),
    patient by patient and class by class, so no patient is on both sides. The official validation
    folder holds 16 images, hence `val_strategy="split"` by default. `earliest` carves the patients with the
    lowest numbers of each naming scheme instead (see `medlit.data.splits.earliest_split`): a validation
    cohort apart in patient order from the training one. A split that is needed but missing
    is an error, never a silent substitute.

    `labels="pathogen"` makes it a three-class task, NORMAL, BACTERIAL and VIRAL (see `pathogen_labels`),
    on the same patient-grouped splits as the two-class one; its `binary_view` pools the two pneumonias
    against normal, so reports give pneumonia against normal from the same network as well.
    """

    def __init__(
        self,
        data_dir: str,
        labels: str = "folders",
        val_strategy: str = "split",
        test_strategy: str = "official",
        positive_class: str | None = "PNEUMONIA",
        **settings,
    ) -> None:
        """`settings`: those of `ImageFileDataModule` (image size, fractions, sampler, cache, ...) and the loaders'."""
        check_choice("data.labels", labels, LABELS)
        check_choice("data.val_strategy", val_strategy, STRATEGIES)
        check_choice("data.test_strategy", test_strategy, STRATEGIES)
        super().__init__(val_strategy=val_strategy, test_strategy=test_strategy, **settings)
        self.data_dir = Path(data_dir)
        self.labels = labels
        self.positive_class = positive_class

    @property
    def binary_view(self) -> BinaryView | None:
        """Pneumonia (bacterial or viral) against normal, for the three-class task."""
        return BinaryView("PNEUMONIA", "NORMAL", (1, 2)) if self.labels == "pathogen" else None

    def _title(self) -> str:
        return "Chest X-rays"

    def _list(self) -> Listing:
        """The data set's root and the files of each split folder there; the patient is read from each file name."""
        if not self.data_dir.is_dir():
            raise DataError(
                f"data folder {self.data_dir} not found; set data.data_dir to the folder that holds "
                f"train/, or fetch the data set with: medlit download chest_xray"
            )
        root = image_folder.find_root(self.data_dir, nested="chest_xray")
        train_folder = image_folder.split_folder(root, "train")
        classes = image_folder.class_names(train_folder)
        if self.labels == "pathogen":  # its folder labels are NORMAL = 0, PNEUMONIA = 1, whatever the letter case
            check_pathogen_folders(train_folder, classes)
            classes = positive_last(classes, "PNEUMONIA", train_folder)
        else:
            classes = positive_last(classes, self.positive_class, train_folder)
            if self.expected_classes is not None and self.expected_classes != len(classes):
                raise DataError(
                    f"data.num_classes={self.expected_classes}, but {train_folder} has "
                    f"{len(classes)} class folders: {', '.join(classes)}"
                )
        splits = {}
        for split, strategy in (("train", "official"), ("val", self.val_strategy), ("test", self.test_strategy)):
            folder = image_folder.split_folder(root, split)
            if folder is None and strategy == "official":
                raise DataError(
                    f"no {split} split: {root / split} not found. Set data.{split}_strategy=split to "
                    f"carve one out of train (grouped by patient)"
                )
            if folder is not None:  # listed (and cached) whatever the strategy: one cache per folder
                listed = image_folder.list_split(root, folder, classes)
                _warn_unknown_classes(folder, classes)
                splits[split] = ImageSplit(listed.files, listed.labels, [patient_id(f) for f in listed.files])
        if self.labels == "pathogen":
            return Listing(root, PATHOGEN_CLASSES, {name: pathogen_labels(root, s) for name, s in splits.items()})
        return Listing(root, classes, splits)


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


def check_pathogen_folders(train_folder: Path, classes: list[str]) -> None:
    """The pathogen is read from the file names of PNEUMONIA/, against NORMAL/: those must be the classes."""
    if sorted(name.upper() for name in classes) != ["NORMAL", "PNEUMONIA"]:
        raise DataError(
            f"data.labels=pathogen needs the class folders NORMAL and PNEUMONIA (it reads bacterial and viral "
            f"pneumonia from the file names in PNEUMONIA/); {train_folder} has {', '.join(classes)}"
        )


def pathogen_labels(root: Path, split: ImageSplit) -> ImageSplit:
    """`split` (NORMAL = 0, PNEUMONIA = 1) labelled NORMAL (0), BACTERIAL (1) or VIRAL (2).

    A pneumonia image's pathogen is in its file name (`person1_bacteria_1.jpeg`, `person1_virus_6.jpeg`); one
    whose name says neither cannot be labelled and is an error naming it. The split keeps the folder labels as
    its strata, so carved validation and test splits are the patients of the two-class task's.
    """
    labels, unnamed = [], []
    for name, folder_label in zip(split.files, split.labels, strict=True):
        found = _PATHOGEN.search(PurePath(name).stem) if folder_label == 1 else None
        if folder_label == 1 and found is None:
            unnamed.append(name)
        labels.append(0 if found is None else 1 if found.group(1).lower() == "bacteria" else 2)
    if unnamed:
        shown = ", ".join(str(root / name) for name in unnamed[:3])
        raise DataError(
            f"data.labels=pathogen: {len(unnamed)} pneumonia images do not name their pathogen (_bacteria_ or "
            f"_virus_) in their file name: {shown}{', ...' if len(unnamed) > 3 else ''}"
        )
    return ImageSplit(split.files, labels, split.patients, strata=split.labels)


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
