"""Two-stage transfer learning: train the head on a frozen backbone, then fine-tune its upper layers."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from medlit.errors import MedlitError

log = logging.getLogger(__name__)


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
            layers = [layer for layer in layers if not isinstance(layer, _BatchNorm)]
        lr = optimizer.param_groups[0]["lr"] * self.backbone_lr_factor
        self.unfreeze_and_add_param_group(layers, optimizer, lr=lr, train_bn=self.train_bn)
        log.info("Epoch %d: unfroze %d backbone layers at learning rate %.3g", epoch, len(layers), lr)
