"""How many outputs a classifier network has for a task, and the dense layers that produce them."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn


def num_logits(num_classes: int) -> int:
    """Binary tasks use one logit (BCE-with-logits); multi-class tasks one logit per class."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    return 1 if num_classes == 2 else num_classes


def dense_head(in_features: int, hidden: Sequence[int], dropout: float, num_classes: int) -> list[nn.Module]:
    """Dense ReLU layers of sizes `hidden`, each followed by dropout, then the output layer."""
    sizes = [in_features, *hidden]
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    layers.append(nn.Linear(sizes[-1], num_logits(num_classes)))
    return layers
