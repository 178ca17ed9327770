"""Callbacks the tests put into real runs through the config (`+callbacks.<name>._target_=...`), and a reader of
figures' pixels."""

from __future__ import annotations

import functools
import os
import signal
from typing import ClassVar, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn


class KillAt(pl.Callback):
    """SIGKILL this process at a given epoch and batch: no cleanup, no flush, as a pre-empted job dies."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class FailJob(pl.Callback):
    """Raise in one job of a multirun, as a trial that runs out of memory does."""

    def __init__(self, job: int) -> None:
        self.job = job

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.get().job.num == self.job:
            raise RuntimeError("CUDA out of memory (simulated)")


class WritePid(pl.Callback):
    """Write the id of the process that trains to `path`: which process ran a launcher's job."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        with open(self.path, "w") as handle:
            handle.write(str(os.getpid()))


class LayerRecorder(pl.Callback):
    """Record what reaches the network's convolutions and linear layers in training and in evaluation: the dtype
    of each layer's output and whether its input is in channels-last memory order (first batch of each).

    The instance made by the last run is `LayerRecorder.last`.
    """

    last: LayerRecorder | None = None

    class Seen(NamedTuple):
        dtype: torch.dtype  # of the layer's output
        channels_last: bool | None  # whether its (N, C, H, W) input is in channels-last order; None for other inputs
        channels: int | None  # its input's channels: with one, both memory orders are the same

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], LayerRecorder.Seen] = {}
        LayerRecorder.last = self

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        for name, module in pl_module.net.named_modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.register_forward_hook(functools.partial(self._record, name))

    def _record(self, name: str, module: nn.Module, args, output) -> None:
        x = args[0]
        image = x.ndim == 4
        seen = self.Seen(output.dtype, x.is_contiguous(memory_format=torch.channels_last) if image else None,
                         x.shape[1] if image else None)  # fmt: skip
        self.seen.setdefault(("train" if module.training else "eval", name), seen)

    def layers(self, stage: str) -> dict[str, LayerRecorder.Seen]:
        return {name: value for (kind, name), value in self.seen.items() if kind == stage}


class BatchRecorder(pl.Callback):
    """Keep every training batch as the training step receives it (after `on_after_batch_transfer`), and the
    training split's stored images. The instance made by the last run is `BatchRecorder.last`."""

    last: BatchRecorder | None = None

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []
        self.stored: torch.Tensor | None = None
        self.workers: int | None = None
        BatchRecorder.last = self

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        self.batches.append(batch[0].detach().cpu().clone())
        self.stored = trainer.datamodule.train_set.images
        self.workers = trainer.train_dataloader.num_workers


class KeepInitialWeights(pl.Callback):
    """Keep a copy of the module's state (weights and buffers) as training starts: `KeepInitialWeights.state`."""

    state: ClassVar[dict[str, torch.Tensor]] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        KeepInitialWeights.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


class GradientKinds(pl.Callback):
    """Record, at the first optimiser step, which parameters had a gradient and whether it was sparse:
    `GradientKinds.last.sparse` maps parameter names to `grad.is_sparse`."""

    last: GradientKinds | None = None

    def __init__(self) -> None:
        self.sparse: dict[str, bool] = {}
        GradientKinds.last = self

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module, optimizer) -> None:
        if not self.sparse:
            self.sparse = {n: p.grad.is_sparse for n, p in pl_module.named_parameters() if p.grad is not None}


def rendered(figure: Figure) -> np.ndarray:
    """The figure drawn as matplotlib draws it for a PNG: (H, W, 3) uint8, row 0 at the top."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def pixel(pixels: np.ndarray, ax, x: float, y: float) -> np.ndarray:
    """The drawn colour at data coordinates (x, y) of `ax` (an image's column and row, or a plot's point)."""
    column, row = ax.transData.transform((x, y))
    return pixels[len(pixels) - 1 - round(row), round(column)].astype(int)
