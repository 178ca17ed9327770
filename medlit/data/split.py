"""Carving a validation split out of a training split that comes without one."""

from __future__ import annotations

import torch
from torch import Tensor


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (keep, held_out): `fraction` of each class held out, chosen at random with `seed`.

    Stratifying keeps the class balance of the held-out part equal to the whole; the seed is separate from
    the training seed so that runs with different seeds are compared on the same validation examples.
    Both index tensors are sorted, so the examples keep their original order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    held_out = []
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        count = round(len(members) * fraction)
        held_out.append(members[torch.randperm(len(members), generator=generator)[:count]])
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[torch.cat(held_out)] = True
    return torch.nonzero(~mask).flatten(), torch.nonzero(mask).flatten()
