"""Callbacks medlit adds to Lightning's: two-stage fine-tuning, and throughput with each step's data wait.

`TwoStageFinetuning` trains the head on a frozen backbone, then fine-tunes its upper layers.

`Throughput` measures how fast training runs and how long each step waits for its data. A step's data
wait is the time from the end of the previous step (or the start of the epoch) to the start of this one:
fetching the batch, moving it to the device and `on_after_batch_transfer` (batch augmentation). Its
compute is `training_step`, backward and the optimiser step. Logged per epoch as `perf/*`; with `path`,
every step and epoch is also written to a JSON file (what `benchmarks/` reads).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from torch import Tensor, nn
from torch.optim import Optimizer

from medlit.errors import MedlitError

log = logging.getLogger(__name__)

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def backbone_of(pl_module: pl.LightningModule) -> nn.Module:
    """The pretrained part of the Classifier's network (`net.backbone`, as TimmNet has)."""
    backbone = getattr(getattr(pl_module, "net", None), "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise MedlitError(
            f"fine-tuning needs a network with a backbone (the timm models); "
            f"{type(getattr(pl_module, 'net', pl_module)).__name__} has none"
        )
    return backbone


def layers_from(backbone: nn.Module, start: int | str) -> list[nn.Module]:
    """The backbone's layers from `start` on: an index into its layers that hold parameters (convolutions,
    norms, linear layers, in definition order; negative counts from the end) or a module name such as
    `blocks.4`."""
    named = [(n, m) for n, m in backbone.named_modules() if next(m.parameters(recurse=False), None) is not None]
    if isinstance(start, int):
        if not -len(named) <= start < len(named):
            raise MedlitError(f"unfreeze_from={start}, but the backbone has {len(named)} layers with parameters")
        return [m for _, m in named[start:]]
    for index, (name, _) in enumerate(named):
        if name == start or name.startswith(start + "."):
            return [m for _, m in named[index:]]
    tops = ", ".join(n for n, _ in backbone.named_children())
    raise MedlitError(f"unfreeze_from={start!r} names no layer of the backbone (its top-level modules: {tops})")


class TwoStageFinetuning(BaseFinetuning):
    """Freeze the backbone for `freeze_epochs`, then unfreeze its layers from `unfreeze_from` on.

    The unfrozen layers join the optimiser as a new parameter group at `backbone_lr_factor` times the
    head's learning rate, so pretrained features move slowly while the head keeps learning (the
    reference MobileNetV2 study: 10 epochs frozen, then the layers from the 100th on at a lower rate).
    `train_bn=True` keeps BatchNorm layers training throughout, so their statistics follow the X-rays
    rather than ImageNet.
    """

    def __init__(
        self,
        freeze_epochs: int = 10,
        unfreeze_from: int | str = 0,
        backbone_lr_factor: float = 0.1,
        train_bn: bool = True,
    ) -> None:
        super().__init__()
        if freeze_epochs < 0 or backbone_lr_factor <= 0:
            raise MedlitError("finetune needs freeze_epochs >= 0 and backbone_lr_factor > 0")
        self.freeze_epochs = freeze_epochs
        self.unfreeze_from = unfreeze_from
        self.backbone_lr_factor = backbone_lr_factor
        self.train_bn = train_bn

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        backbone = backbone_of(pl_module)
        layers_from(backbone, self.unfreeze_from)  # a wrong layer is reported now, not epochs later
        self.freeze(backbone, train_bn=self.train_bn)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch != self.freeze_epochs:
            return
        layers = layers_from(backbone_of(pl_module), self.unfreeze_from)
        if self.train_bn:  # BatchNorm layers trained from the start, in the optimiser's first group
            layers = [layer for layer in layers if not isinstance(layer, BATCH_NORMS)]
        lr = optimizer.param_groups[0]["lr"] * self.backbone_lr_factor
        self.unfreeze_and_add_param_group(layers, optimizer, lr=lr, train_bn=self.train_bn)
        log.info("Epoch %d: unfroze %d backbone layers at learning rate %.3g", epoch, len(layers), lr)


class Throughput(pl.Callback):
    """Per-step data wait and compute, per-epoch training time, images per second and peak memory.

    "Images" are a batch's examples, whatever they are: the length of its first tensor (reviews for text).

    `warmup` steps at the start of the first epoch (oneDNN / cuDNN set-up, compilation) are recorded but
    left out of the first epoch's rate.
    """

    def __init__(self, path: str | None = None, warmup: int = 2) -> None:
        self.path, self.warmup = path, warmup
        self.created = time.perf_counter()  # before fit: setup (decoding, caching) counts toward startup
        self.steps: list[dict] = []
        self.epochs: list[dict] = []
        self.startup: float | None = None
        self._epoch_start = self._last_end = self._step_start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.startup = time.perf_counter() - self.created

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self.steps.append(
            {
                "epoch": trainer.current_epoch,
                "images": _batch_size(batch),
                "wait": self._step_start - self._last_end,
                "compute": now - self._step_start,
            }
        )
        self._last_end = now

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        steps = [s for s in self.steps if s["epoch"] == epoch]
        if self.steps and epoch == self.steps[0]["epoch"]:
            steps = steps[self.warmup :] or steps
        summary = {
            "epoch": epoch,
            "train_time": self._last_end - self._epoch_start,  # first step's start to last step's end
            "wall_time": time.perf_counter() - self._epoch_start,  # with validation and checkpoints
            **step_rates(steps),
        }
        self.epochs.append(summary)
        pl_module.log_dict({f"perf/{k}": float(summary[k]) for k in ("images_per_s", "data_wait")})

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.path and trainer.is_global_zero:
            best = getattr(trainer.checkpoint_callback, "best_model_score", None)
            report = {
                "best_score": None if best is None else float(best),
                "startup": self.startup,
                "peak_rss_mb": peak_rss_mb(),
                "epochs": self.epochs,
                "steps": self.steps,
            }
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).write_text(json.dumps(report, indent=1))


def step_rates(steps: list[dict]) -> dict[str, float]:
    """Images per second over `steps` and the fraction of their time spent waiting for data."""
    wait = sum(s["wait"] for s in steps)
    total = wait + sum(s["compute"] for s in steps)
    images = sum(s["images"] for s in steps)
    return {
        "images_per_s": images / total if total else 0.0,
        "data_wait": wait / total if total else 0.0,
        "step_time": total / len(steps) if steps else 0.0,
        "steps": len(steps),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _batch_size(batch) -> int:
    first = batch[0] if isinstance(batch, list | tuple) else batch
    return len(first) if isinstance(first, Tensor) else 0
