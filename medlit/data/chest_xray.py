"""Chest X-rays in folders (Kermany et al. / Kaggle "Chest X-Ray Images (Pneumonia)"), at any resolution."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from medlit.data import image_folder
from medlit.data.image_files import ImageFileDataModule, ImageSplit, Listing, check_choice
from medlit.data.splits import patient_id
from medlit.errors import DataError

log = logging.getLogger(__name__)

STRATEGIES = ("official", "split")


class ChestXrayDataModule(ImageFileDataModule):
    """`<data_dir>/{train,val,test}/<class>/*.jpeg` (also nested in `chest_xray/` once or twice).

    Every image is decoded once, converted to greyscale and resized to `image_size` (square, as the
    reference studies and the 224 px release do), and cached under `cache_dir`; augmentation then runs
    on the cached uint8 tensors. The classes are train/'s sub-folders in sorted order (NORMAL = 0,
    PNEUMONIA = 1, so the positive class is pneumonia).

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
        **loader_kwargs,
    ) -> None:
        check_choice("data.val_strategy", val_strategy, STRATEGIES)
        check_choice("data.test_strategy", test_strategy, STRATEGIES)
        super().__init__(
            image_size=image_size,
            in_channels=in_channels,
            num_classes=num_classes,
            val_strategy=val_strategy,
            val_fraction=val_fraction,
            test_strategy=test_strategy,
            test_fraction=test_fraction,
            split_seed=split_seed,
            sampler=sampler,
            on_bad_file=on_bad_file,
            cache_dir=cache_dir,
            decode_workers=decode_workers,
            train_transform=train_transform,
            **loader_kwargs,
        )
        self.data_dir = Path(data_dir)

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
                splits[split] = ImageSplit(listed.files, listed.labels, [patient_id(f) for f in listed.files])
        return Listing(root, classes, splits)


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
