"""Convolutional networks trained from scratch: the coursework baseline and the reference custom CNN."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor, nn

from medlit.models.outputs import dense_head, num_logits


class BaselineCNN(nn.Module):
    """Two 3x3 convolutions with max-pooling and one dense output layer (the MedMNIST coursework baseline)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, filters: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, filters, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(filters, filters, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = ((image_size - 2) // 2 - 2) // 2
        if side < 1:
            raise ValueError(f"BaselineCNN needs images of at least 10 px, got {image_size}")
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(filters * side * side, num_logits(num_classes)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def conv_block(in_channels: int, out_channels: int, dropout: float) -> nn.Sequential:
    """Convolution, BatchNorm, ReLU and 2x2 max-pooling, then dropout. The ReLU runs after the pooling:
    both are monotone, so the result is the same, and the ReLU touches a quarter of the values."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
    )


class CustomCNN(nn.Module):
    """Conv blocks (conv, BatchNorm, ReLU, max-pool, dropout) 32->64->128->256, then dense 512->256->out.

    Global average pooling before the dense layers makes it work for any input size, from 28 px MedMNIST
    to full-size X-rays. `width` scales every layer's size (0.5: half the channels), for searches.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        hidden: Sequence[int] = (512, 256),
        conv_dropout: float = 0.1,
        dropout: float = 0.5,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        channels = [max(1, round(c * width)) for c in channels]
        hidden = [max(1, round(h * width)) for h in hidden]
        widths = [in_channels, *channels]
        self.features = nn.Sequential(*(conv_block(a, b, conv_dropout) for a, b in pairwise(widths)))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), *dense_head(channels[-1], hidden, dropout, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
