"""MedMNIST 2-D data sets (PneumoniaMNIST, OrganCMNIST, ...) with their official splits, via `medmnist`."""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import medmnist
import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from medlit.data.base import ClassificationDataModule, ImageTensorDataset
from medlit.data.fetch import fetch, md5sum
from medlit.data.splits import cross_validation_fold
from medlit.errors import DataError, DownloadError

log = logging.getLogger(__name__)

SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")


class MedMNISTDataModule(ClassificationDataModule):
    """One MedMNIST 2-D data set (`flag`, e.g. "pneumoniamnist") at one of its official sizes.

    `prepare_data` uses `<data_dir>/<flag>[_<size>].npz` if it is there (warning when its MD5 is not the
    official one: subsets and re-packaged files are legitimate), and otherwise downloads it from `url`
    (default: the official Zenodo record) or one of `mirrors`, checking the MD5.
    """

    def __init__(
        self,
        flag: str,
        data_dir: str,
        size: int = 28,
        image_size: int | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        url: str | None = None,
        mirrors: Sequence[str] = (),
        md5: str | None = None,
        train_transform: Callable[[Tensor], Tensor] | None = None,
        **loader_kwargs,
    ) -> None:
        super().__init__(**loader_kwargs)
        if flag not in medmnist.INFO or not flag.endswith("mnist") or flag.endswith("3d"):
            names = sorted(k for k in medmnist.INFO if not k.endswith("3d"))
            raise DataError(f"unknown MedMNIST 2-D data set {flag!r}; choose one of {', '.join(names)}")
        if size not in SIZES:
            raise DataError(f"data.size={size} is not a MedMNIST size; choose one of {SIZES}")
        if image_size not in (None, size):
            raise DataError(f"data.image_size={image_size} differs from data.size={size}; set data.size")
        self.info = medmnist.INFO[flag]
        self.flag, self.size, self.image_size = flag, size, size
        suffix = "" if size == 28 else f"_{size}"
        self.path = Path(data_dir) / f"{flag}{suffix}.npz"
        self.official_url, self.official_md5 = self.info[f"url{suffix}"], self.info[f"MD5{suffix}"]
        self.urls = [url or self.official_url, *mirrors]
        self.md5 = md5 or self.official_md5
        self.class_names = [self.info["label"][str(i)] for i in range(len(self.info["label"]))]
        if num_classes is not None and num_classes != len(self.class_names):
            raise DataError(f"data.num_classes={num_classes}, but {flag} has {len(self.class_names)} classes")
        self.in_channels = in_channels or self.info["n_channels"]
        self.train_transform = train_transform
        self._checked = False

    def prepare_data(self) -> None:
        if self.path.exists():
            if self._checked:
                return
            self._checked = True
            actual = md5sum(self.path)
            if actual != self.md5:
                log.warning(
                    "%s has MD5 %s, not the official %s: using it as it is (a subset or re-packaged file)",
                    self.path,
                    actual,
                    self.md5,
                )
            return
        try:
            fetch(self.urls, self.path, self.md5)
        except DownloadError as err:
            raise DataError(
                f"{self.path} not found and the download failed: {err}. Put the file there, set "
                f"data.data_dir to the folder that holds it, or set data.url to a mirror"
            ) from None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = self._load()
        if self.num_folds:
            images, labels = self._folds(images, labels)
        kw = {"channels": self.in_channels}
        self.train_set = ImageTensorDataset(
            images["train"], labels["train"], self.train_transform, batch_transform=self.batch_transform, **kw
        )
        self.val_set = ImageTensorDataset(images["val"], labels["val"], **kw)
        self.test_set = ImageTensorDataset(images["test"], labels["test"], **kw)

    def _folds(self, images: dict[str, Tensor], labels: dict[str, Tensor]) -> tuple[dict, dict]:
        """Cross-validation over the official train and validation splits pooled; the test split stays."""
        pool_images = torch.cat([images["train"], images["val"]])
        pool_labels = torch.cat([labels["train"], labels["val"]])
        train, val = cross_validation_fold(pool_labels.numpy(), self.num_folds, self.fold, self.split_seed)
        images = {**images, "train": pool_images[train], "val": pool_images[val]}
        labels = {**labels, "train": pool_labels[train], "val": pool_labels[val]}
        return images, labels

    def _load(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        if not self.path.exists():
            raise DataError(f"{self.path} not found; run prepare_data() or set data.data_dir")
        dataset_class = getattr(medmnist, self.info["python_class"])
        images, labels = {}, {}
        for split in SPLITS:
            try:
                arrays = dataset_class(split=split, root=str(self.path.parent), size=self.size)
                images[split] = self._to_tensor(np.asarray(arrays.imgs), split)
                labels[split] = torch.from_numpy(np.asarray(arrays.labels).reshape(-1).astype(np.int64))
            except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
                raise DataError(f"{self.path} is not a readable MedMNIST file ({split} split: {err})") from None
            bad = (labels[split] < 0) | (labels[split] >= self.num_classes)
            if bad.any():
                raise DataError(
                    f"{self.path}: {split}_labels has values outside 0..{self.num_classes - 1} "
                    f"(e.g. {labels[split][bad][0].item()})"
                )
        return images, labels

    def _to_tensor(self, array: np.ndarray, split: str) -> Tensor:
        """(N, H, W[, 3]) uint8 -> (N, C, H, W), converted once to the configured channel count."""
        if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[1:3] != (self.size, self.size):
            raise DataError(
                f"{self.path}: {split}_images has {array.dtype} {array.shape}; expected uint8 "
                f"(N, {self.size}, {self.size}[, 3]) for data.size={self.size}"
            )
        images = torch.from_numpy(array)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
        if images.shape[1] == 3 and self.in_channels == 1:
            images = F.rgb_to_grayscale(images)
        return images
