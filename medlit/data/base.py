"""What every medlit data module shares: class metadata for the model configs and the data loaders."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class ImageTensorDataset(Dataset):
    """uint8 images of shape (N, C, H, W) with integer labels, decoded once and kept in memory.

    `transform` (e.g. torchvision transforms v2) runs per image on the uint8 tensor; `channels=3` repeats a
    greyscale image for networks that want RGB, without storing three copies.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
        channels: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"expected uint8 images of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()
        self.transform = transform
        self.channels = channels or images.shape[1]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        if self.channels != image.shape[0]:
            image = image.expand(self.channels, -1, -1)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class ClassificationDataModule(pl.LightningDataModule):
    """Base for medlit's data modules.

    Subclasses fill `train_set`, `val_set`, `test_set` in `setup` and set `class_names`; this class turns
    them into loaders and tells the model configs how many classes and input channels to expect.
    `mean`/`std` are the normalisation the classifier applies to this data's [0, 1] intensities.
    """

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.mean, self.std = mean, std
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.class_names: list[str] = []
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_counts(self) -> Tensor:
        """Number of training examples per class, for class-weighted losses and samplers."""
        if self.train_set is None:
            raise RuntimeError("class_counts is known after setup('fit')")
        return torch.bincount(self.train_labels(), minlength=self.num_classes)

    def train_labels(self) -> Tensor:
        return self.train_set.labels

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def _loader(self, dataset: Dataset | None, batch_size: int, **kwargs) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not created this split")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )
