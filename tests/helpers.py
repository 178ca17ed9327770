"""Callbacks the tests put into real runs through the config (`+callbacks.<name>._target_=...`)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


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
