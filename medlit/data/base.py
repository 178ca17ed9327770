"""What every medlit data module shares: class metadata for the model configs and the data loaders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from medlit.data.sampling import EpochSampler, EvaluationSampler, derive_seed, run_seed


class BatchTransform(Protocol):
    """Augmentation applied to a whole batch: `sample` draws one example's parameters where it is loaded,
    the call applies a batch of them on the batch's device (e.g. `medlit.data.augment.RandomAffineBatch`)."""

    def sample(self, generator: torch.Generator) -> Tensor: ...

    def __call__(self, images: Tensor, params: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class BinaryView:
    """A two-class task inside a multi-class one: the classes `members` pooled as `positive` against the rest
    (`negative`), e.g. pneumonia (bacterial or viral) against normal. Reports give it beside the multi-class
    metrics, with P(positive) = the members' probabilities summed."""

    positive: str
    negative: str
    members: tuple[int, ...]


class ImageTensorDataset(Dataset):
    """uint8 images of shape (N, C, H, W) with integer labels, decoded once and kept in memory.

    `transform` (e.g. torchvision transforms v2) runs per image on the uint8 tensor; `channels=3` repeats a
    greyscale image for networks that want RGB, without storing three copies. `batch_transform` (see
    `medlit.data.augment`) draws each example's augmentation parameters here and returns them as a third
    item; the data module applies them to the whole batch on its device. Indexed with `(epoch, index)`
    (see `EpochSampler`), the randomness of both is drawn from `(seed, epoch, index)`, so an example is
    augmented the same way in a resumed run and with any number of workers.
    """

    keyed_by_epoch = True

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
        channels: int | None = None,
        batch_transform: BatchTransform | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()
        self.transform, self.batch_transform = transform, batch_transform
        self.channels = channels or images.shape[1]
        self.seed = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, ...]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        image = self.images[index]
        if self.channels != image.shape[0]:
            image = image.expand(self.channels, -1, -1)
        if self.transform is not None:
            if epoch is None:
                image = self.transform(image)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(derive_seed(self.seed, epoch, index))
                    image = self.transform(image)
        if self.batch_transform is None:
            return image, self.labels[index]
        seed = int(torch.randint(1 << 62, ())) if epoch is None else derive_seed(self.seed, epoch, index, 1)
        return image, self.labels[index], self.batch_transform.sample(torch.Generator().manual_seed(seed))


class ClassificationDataModule(pl.LightningDataModule):
    """Base for medlit's data modules.

    Subclasses fill `train_set`, `val_set`, `test_set` in `setup` and set `class_names`; this class turns
    them into loaders and tells the model configs how many classes and input channels to expect.
    `mean`/`std` are the normalisation the classifier applies to this data's [0, 1] intensities.
    `batch_transform` augments each training batch after it reached the model's device (see
    `on_after_batch_transfer`). `num_folds`/`fold` select one fold of a stratified cross-validation as
    the validation split (how each data set pools and groups its examples is its own); `split_seed`
    fixes the folds. `binary_view` (None here) is a two-class task the classes pool into (see `BinaryView`).
    """

    binary_view: BinaryView | None = None

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        shuffle: bool = True,
        num_folds: int | None = None,
        fold: int = 0,
        split_seed: int = 0,
        batch_transform: BatchTransform | None = None,
    ) -> None:
        super().__init__()
        self.mean, self.std = mean, std
        self.batch_transform = batch_transform
        self.shuffle = shuffle
        self.num_folds, self.fold, self.split_seed = num_folds, fold, split_seed
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

    def example_input(self, batch_size: int = 2) -> Tensor:
        """A batch shaped like this data's inputs (uint8 images of `in_channels` x `image_size`^2)."""
        return torch.zeros(batch_size, self.in_channels, self.image_size, self.image_size, dtype=torch.uint8)

    def train_labels(self) -> Tensor:
        return self.train_set.labels

    def train_dataloader(self) -> DataLoader:
        """Batches in an order drawn from (seed, epoch); see `EpochSampler`."""
        dataset, seed = self.train_set, run_seed()
        if hasattr(dataset, "seed"):
            dataset.seed = seed
        sampler = self._train_sampler(dataset, seed)
        # the loader's own generator seeds the workers, so creating it leaves the global RNG untouched
        generator = torch.Generator().manual_seed(seed)
        # a last batch of one example would break BatchNorm's training statistics
        drop_last = len(dataset) > self.batch_size
        return self._loader(dataset, self.batch_size, sampler=sampler, generator=generator, drop_last=drop_last)

    def _train_sampler(self, dataset: Dataset, seed: int) -> EpochSampler:
        """The training order of every epoch, drawn from (seed, epoch) and sharded under DDP."""
        return EpochSampler(
            len(dataset),
            seed,
            epoch=self._current_epoch,
            weights=self.sample_weights(),
            shuffle=self.shuffle,
            keyed=getattr(dataset, "keyed_by_epoch", False),
        )

    def sample_weights(self) -> Tensor | None:
        """Per-example sampling weights for the training loader (None: shuffle without replacement)."""
        return None

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, sampler=self._eval_sampler(self.val_set))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, sampler=self._eval_sampler(self.test_set))

    def _current_epoch(self) -> int:
        """The epoch the next training iterator serves. Lightning's count of processed epochs is right
        also when a run resumes from a checkpoint taken after validation, before the epoch was closed."""
        return self.trainer.fit_loop.epoch_progress.current.processed if self.trainer is not None else 0

    @staticmethod
    def _eval_sampler(dataset: Dataset | None) -> Sampler | None:
        """Under DDP, each example is evaluated exactly once (no padding repeats), so metrics match one
        process exactly; processes may then see one batch more or less."""
        if dataset is None or not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return None
        return EvaluationSampler(len(dataset))

    def on_after_batch_transfer(self, batch: tuple[Tensor, ...], dataloader_idx: int) -> tuple[Tensor, ...]:
        """Apply `batch_transform` to a training batch that carries its per-example parameters."""
        if len(batch) == 3 and self.batch_transform is not None:
            images, labels, params = batch
            return self.batch_transform(images, params), labels
        return batch

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def evaluation_dataloader(self, split: str) -> DataLoader:
        """Every example of `split` ("val" or "test") in order, in this process alone: what evaluation reports
        and explanations read, also on rank zero of a DDP run."""
        dataset = getattr(self, f"{split}_set", None) if split in ("val", "test") else None
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__} has no {split!r} split (before setup, or not val/test)")
        return self._loader(dataset, self.eval_batch_size)

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
