"""`Throughput`: how fast training runs and how long each step waits for its data.

A step's data wait is the time from the end of the previous step (or the start of the epoch) to the start
of this one: fetching the batch, moving it to the device and `on_after_batch_transfer` (batch
augmentation). Its compute is `training_step`, backward and the optimiser step. Logged per epoch as
`perf/*`; with `path`, every step and epoch is also written to a JSON file (what `benchmarks/` reads).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
from torch import Tensor


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
            **rates(steps),
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


def rates(steps: list[dict]) -> dict[str, float]:
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
