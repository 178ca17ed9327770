"""A dense-only network: what images lose without convolutions (the coursework's control model)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor, nn

from medlit.models.outputs import num_logits


class DenseMLP(nn.Module):
    """Flatten, then dense ReLU layers (128 -> 64) with dropout, then the output layer."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        sizes = [in_channels * image_size * image_size, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(sizes[-1], num_logits(num_classes)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
