"""A dense-only network: what images lose without convolutions (the coursework's control model)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medlit.models.outputs import dense_head


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
        self.layers = nn.Sequential(
            nn.Flatten(), *dense_head(in_channels * image_size * image_size, hidden, dropout, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
