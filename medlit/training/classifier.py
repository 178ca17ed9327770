"""`Classifier`: the one LightningModule, wrapping any network for any medlit data set."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from medlit.data.sampling import derive_seed, run_seed
from medlit.errors import MedlitError
from medlit.evaluation import plots
from medlit.models import num_logits
from medlit.training import metrics

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class Classifier(pl.LightningModule):
    """Loss, metrics, optimiser and figures for a network `net` with `num_classes` classes.

    Inputs follow one intensity convention, checked here: images are uint8 in 0-255 (as the data modules
    deliver them) or float in [0, 1]; they are normalised with `input_mean`/`input_std` inside the module,
    so a checkpoint carries its own preprocessing. Left unset, they are the network's own `input_mean`/
    `input_std` (the statistics its pretrained weights expect), else 0.5/0.5. Integer token ids (text)
    pass through unchanged.

    Binary tasks use one logit with BCE-with-logits, multi-class tasks cross-entropy. A binary model calls
    an example positive when P(positive) >= `decision_threshold`, a buffer (0.5 until a threshold is chosen
    on validation and written into the selected checkpoint), so a loaded checkpoint predicts with the
    threshold it was evaluated with. Probabilities are those of the logits divided by `temperature`, a buffer
    (1 until temperature scaling fits it on validation after training; see `medlit.evaluation.calibration`),
    so every consumer of a checkpoint reads calibrated probabilities. `optimizer` and `scheduler` are
    factories (Hydra partials) called in `configure_optimizers`. `run_config` is the run's resolved
    configuration, kept in the checkpoint so evaluation can rebuild the run.

    `channels_last=True` keeps the network's weights and 4-D inputs in channels-last (NHWC) memory
    order, which oneDNN and cuDNN convolutions run faster; results are the same up to rounding.
    `compile=True` compiles the network with torch.compile, in place, so checkpoints keep their keys.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        class_names: Sequence[str] | None = None,
        class_weighted_loss: bool = False,
        label_smoothing: float = 0.0,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        monitor: str = "val/auroc",
        run_config: dict | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_classes = num_classes
        self.class_names = list(class_names or range(num_classes))
        self.binary = num_classes == 2
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
        mean = input_mean if input_mean is not None else getattr(net, "input_mean", None)
        std = input_std if input_std is not None else getattr(net, "input_std", None)
        self.register_buffer("input_mean", torch.tensor(mean or [0.5]).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(std or [0.5]).view(1, -1, 1, 1))
        self.register_buffer("loss_weights", torch.ones(num_logits(num_classes)))
        self.register_buffer("decision_threshold", torch.tensor(0.5))
        self.register_buffer("temperature", torch.tensor(1.0))
        self.register_load_state_dict_pre_hook(_default_buffers)

        collection = metrics.classification_metrics(num_classes)
        self.train_metrics = collection.clone(prefix="train/")
        self.val_metrics = collection.clone(prefix="val/")
        self.val_confmat = metrics.confusion_matrix(num_classes)
        # example-weighted means whose sums and counts torchmetrics adds up across DDP processes
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._start_from_training_data(self.trainer.datamodule)
        if stage == "fit" and self.hparams.class_weighted_loss:
            counts = self.trainer.datamodule.class_counts.to(self.loss_weights)
            if self.binary:
                weights = counts[:1] / counts[1:].clamp(min=1)  # pos_weight = negatives / positives
            else:
                weights = counts.sum() / (self.num_classes * counts.clamp(min=1))
            self.loss_weights.copy_(weights)
            log.info("Class-weighted loss: %s", [round(w, 3) for w in weights.tolist()])

    def _start_from_training_data(self, datamodule: pl.LightningDataModule | None) -> None:
        """What a network takes from its data before the first step: pretrained word vectors for its embedding
        (`pretrained_word_vectors` of the data module) and statistics of the training split (a network's
        `initialise_from_training_data`, e.g. fastText's naive Bayes weights). A resumed run's checkpoint,
        loaded after this, replaces all of it."""
        vectors = getattr(datamodule, "pretrained_word_vectors", lambda: None)()
        if vectors is not None:
            load = getattr(self.net, "load_word_vectors", None)
            if load is None:
                raise MedlitError(
                    f"{type(self.net).__name__} has no word embedding to start from pretrained word vectors: "
                    f"set data.word_vectors=null"
                )
            load(vectors)
            log.info("Word embedding started from %d pretrained word vectors", len(vectors))
        initialise = getattr(self.net, "initialise_from_training_data", None)
        if initialise is not None and datamodule is not None:
            initialise(datamodule.train_set.ids, datamodule.train_labels())

    def on_train_batch_start(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Draw this step's randomness (dropout, ...) from (seed, step, rank), not from what ran before, so
        a run resumed from a checkpoint repeats the uninterrupted run exactly."""
        if "PL_GLOBAL_SEED" in os.environ:
            seed = derive_seed(run_seed(), self.global_step, self.global_rank)
            # this device's generator alone: torch.manual_seed visits every kind of device (2 ms a step)
            torch.default_generator.manual_seed(seed)
            if self.device.type != "cpu":
                torch.get_device_module(self.device).manual_seed(seed)

    def preprocess(self, x: Tensor) -> Tensor:
        """uint8 0-255 or float 0-1 images -> normalised float; token ids unchanged."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        elif x.is_floating_point():
            low, high = torch.aminmax(x)
            if low < 0 or high > 1:
                raise MedlitError(
                    f"image input must be uint8 in 0-255 or float in [0, 1]; got values in "
                    f"[{low.item():.3g}, {high.item():.3g}]"
                )
        else:
            return x
        x = (x - self.input_mean) / self.input_std
        return x.contiguous(memory_format=self.memory_format) if x.ndim == 4 else x

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.preprocess(x))

    def probabilities(self, logits: Tensor) -> Tensor:
        """P(positive class) of shape (B,) for binary tasks; class probabilities (B, C) otherwise; both of the
        logits divided by the temperature."""
        logits = logits.float() / self.temperature
        return torch.sigmoid(logits.squeeze(1)) if self.binary else logits.softmax(dim=1)

    def class_probabilities(self, x: Tensor) -> Tensor:
        """Inputs -> one probability per class (B, C), binary tasks too (P(negative), P(positive)).

        The one way medlit predicts: evaluation reports, `medlit predict`, the web app and the exported
        ONNX and TorchScript graphs all call this.
        """
        probs = self.probabilities(self(x))
        return torch.stack([1 - probs, probs], dim=1) if self.binary else probs

    def predict_labels(self, probs: Tensor) -> Tensor:
        """Predicted classes: P(positive) >= the decision threshold for binary tasks, the argmax otherwise."""
        return (probs >= self.decision_threshold).long() if self.binary else probs.argmax(dim=1)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, smoothing = logits.float(), self.hparams.label_smoothing
        weights = self.loss_weights if self.hparams.class_weighted_loss else None
        if self.binary:
            target = target.float() * (1 - smoothing) + 0.5 * smoothing
            return F.binary_cross_entropy_with_logits(logits.squeeze(1), target, pos_weight=weights)
        return F.cross_entropy(logits, target, weight=weights, label_smoothing=smoothing)

    def _step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        x, y = batch
        logits = self(x)
        if logits.ndim != 2 or logits.shape[1] != num_logits(self.num_classes):
            raise MedlitError(
                f"the network returns shape {tuple(logits.shape)}, but a {self.num_classes}-class task needs "
                f"(batch, {num_logits(self.num_classes)})"
            )
        return self.loss(logits, y), self.probabilities(logits), y

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, probs, y = self._step(batch)
        finite = bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:  # stop every process together, none waits for a dead peer
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise MedlitError(
                f"the training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}: "
                "training diverged and was stopped; the last good checkpoint is kept. Try a lower "
                "optimizer.lr, trainer.gradient_clip_val=1.0 or trainer.precision=32-true"
            )
        self.train_metrics.update(probs, y)
        self.train_loss.update(loss.detach(), len(y))
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self._log_epoch(self.train_loss, self.train_metrics, "train/loss_epoch")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, probs, y = self._step(batch)
        self._val_finite &= bool(torch.isfinite(loss).all())
        self.val_metrics.update(probs, y)
        self.val_confmat.update(probs, y)
        self.val_loss.update(loss, len(y))

    def on_validation_epoch_start(self) -> None:
        self._val_finite = True

    def on_validation_epoch_end(self) -> None:
        # before the checkpoint callbacks run: diverged weights must not overwrite last.ckpt
        if not self.trainer.strategy.reduce_boolean_decision(self._val_finite, all=True):
            raise MedlitError(
                f"the validation loss is not finite at epoch {self.current_epoch}: the weights diverged; "
                "training was stopped and the last good checkpoint is kept"
            )
        self._log_epoch(self.val_loss, self.val_metrics, "val/loss")
        matrix = self.val_confmat.compute()
        self.val_confmat.reset()
        if not self.trainer.sanity_checking:
            figure = plots.confusion_figure(matrix.cpu().numpy(), self.class_names, "validation")
            self._figure("val/confusion_matrix", figure)

    def _log_epoch(self, loss: MeanMetric, collection: MetricCollection, loss_name: str) -> None:
        """Log an epoch's mean loss (as `loss_name`) and metrics, computed once here, then reset them.

        torchmetrics adds up the states of all DDP processes in `compute`, so every process logs the same
        values. Logging the metric objects at every step instead makes Lightning move each one's whole state
        at every step, and AUROC's holds every prediction of the epoch so far: per step, that cost grows
        with the epoch (11 ms a step after 40 steps).
        """
        if not loss.update_called:
            return
        values = {loss_name: loss.compute(), **collection.compute()}
        loss.reset()
        collection.reset()
        self.log(loss_name, values.pop(loss_name), prog_bar=loss_name == "val/loss", sync_dist=True)
        self.log_dict(values, sync_dist=True)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """`probs`: (B, C) class probabilities; `preds`: the predicted classes at the decision threshold."""
        x, y = batch
        probs = self.class_probabilities(x)
        return {"probs": probs, "preds": self.predict_labels(probs[:, 1] if self.binary else probs), "target": y}

    def configure_optimizers(self) -> dict:
        if self.optimizer_factory is None:
            raise MedlitError("this Classifier was built without an optimizer; it can evaluate but not train")
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if not self.scheduler_factory:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": self.hparams.monitor},
        }

    def _figure(self, tag: str, fig: Figure) -> None:
        """Send a figure to every TensorBoard logger."""
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(tag, fig, global_step=self.global_step)


def _default_buffers(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints written before decision thresholds and temperatures were stored predict at 0.5, with T = 1."""
    state_dict.setdefault(prefix + "decision_threshold", torch.tensor(0.5))
    state_dict.setdefault(prefix + "temperature", torch.tensor(1.0))
