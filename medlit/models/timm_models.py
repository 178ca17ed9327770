"""Transfer-learning networks: any timm backbone under the reference studies' head."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
from torch import Tensor, nn

from medlit.errors import MedlitError
from medlit.models.outputs import dense_head


class TimmNet(nn.Module):
    """A timm backbone (`name`) without its classifier, then global pooling -> dense -> dropout -> out.

    `pretrained=True` loads timm's ImageNet weights (downloaded on first use); `checkpoint_path` loads
    them from a local file instead (a timm or Hugging Face weights file for the same architecture), for
    machines without internet. Either way timm adapts the first convolution to `in_chans` (greyscale: the
    RGB filters are summed) and drops the ImageNet classifier.

    `input_mean`/`input_std` are the normalisation the backbone's weights were trained with, reduced
    to `in_chans`; the Classifier applies them unless the data config sets its own.
    `keep_pre_logits=False` drops a pre-logits block that timm runs after the features (VGG's fc6/fc7),
    so the head sits on the pooled convolutional features as in Keras' `include_top=False`.
    """

    def __init__(
        self,
        name: str,
        num_classes: int,
        in_chans: int = 3,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        hidden: Sequence[int] = (128,),
        dropout: float = 0.5,
        keep_pre_logits: bool = True,
        **timm_kwargs,
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(name, in_chans, pretrained, checkpoint_path, **timm_kwargs)
        width = self.backbone.head_hidden_size
        if not keep_pre_logits and isinstance(getattr(self.backbone, "pre_logits", None), nn.Module):
            self.backbone.pre_logits = nn.Identity()
            width = self.backbone.num_features
        self.head = nn.Sequential(*dense_head(width, hidden, dropout, num_classes))

        config = self.backbone.pretrained_cfg
        self.input_mean = _per_channel(config.get("mean", (0.5,)), in_chans)
        self.input_std = _per_channel(config.get("std", (0.5,)), in_chans)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def create_backbone(
    name: str, in_chans: int, pretrained: bool, checkpoint_path: str | None, **timm_kwargs
) -> nn.Module:
    """timm's `name` with global average pooling and no classifier, its weights as configured."""
    if not timm.is_model(name):
        raise MedlitError(f"model.name={name!r} is not a timm model (timm.list_models() lists them)")
    kwargs = {"num_classes": 0, "in_chans": in_chans, **timm_kwargs}
    if checkpoint_path is not None:
        if not Path(checkpoint_path).is_file():
            raise MedlitError(f"model.checkpoint_path={checkpoint_path}: no such file")
        kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint_path)}
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except OSError as err:
        if checkpoint_path is not None:
            raise MedlitError(f"cannot load {name} weights from {checkpoint_path}: {err}") from None
        raise MedlitError(
            f"could not fetch the pretrained weights of {name} ({err}). Offline, point model.checkpoint_path "
            f"at a local weights file, or set model.pretrained=false"
        ) from None


def _per_channel(values: Sequence[float], channels: int) -> list[float]:
    """RGB statistics for a network with `channels` inputs: their average for greyscale."""
    values = [float(v) for v in values]
    if len(values) == channels:
        return values
    return [sum(values) / len(values)] * channels
