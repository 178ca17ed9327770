"""A model's predictions on every example of a split, and the predictions table a report writes and reads back.

`predict` asks the model for `class_probabilities` (see `medlit.training.classifier.Classifier`), the one
function every consumer predicts with, batch by batch in one process.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

_EPS = 1e-12


@dataclass
class Predictions:
    """P(positive) (N,) for binary tasks or class probabilities (N, C), the true classes, the mean log loss."""

    probs: np.ndarray
    target: np.ndarray
    loss: float


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> Predictions:
    """The model's probabilities for every `(inputs, targets)` batch, in order, and their log loss.

    `model` has `class_probabilities(x) -> (B, C)` and `binary`, as the Classifier does; it runs in
    evaluation mode and is left in the mode it was in.
    """
    was_training = model.training
    model.eval()
    probs, targets = [], []
    try:
        for x, y in batches:
            probs.append(model.class_probabilities(x.to(model.device)).float().cpu())
            targets.append(y.cpu())
    finally:
        model.train(was_training)
    rows, target = torch.cat(probs).double().numpy(), torch.cat(targets).numpy()
    return Predictions(rows[:, 1] if model.binary else rows, target, log_loss(rows, target))


def log_loss(probs: np.ndarray, target: np.ndarray) -> float:
    """Mean negative log probability of the true class: rows (N, C), or P(positive) (N,) for binary tasks."""
    rows = np.stack([1 - probs, probs], axis=1) if probs.ndim == 1 else probs
    if not len(target):
        return math.nan
    return float(-np.log(np.clip(rows[np.arange(len(target)), target], _EPS, 1.0)).mean())


def predicted_labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Binary: 1 where P(positive) >= threshold; multi-class: the most probable class."""
    return (probs >= threshold).astype(np.int64) if probs.ndim == 1 else probs.argmax(axis=1)


def prediction_rows(
    predictions: Predictions,
    class_names: list[str],
    threshold: float | None,
    identity: list[dict[str, str]] | None = None,
) -> list[dict]:
    """One row per example: its index in the split, what identifies it (`identity[i]`, e.g. its file), its true
    class, probabilities and predicted class."""
    probs, target = predictions.probs, predictions.target
    if identity is not None and len(identity) != len(target):
        raise ValueError(f"{len(identity)} rows identify the examples of a split of {len(target)}")
    predicted = predicted_labels(probs, 0.5 if threshold is None else threshold)
    columns = [f"p_{class_names[1]}"] if probs.ndim == 1 else [f"p_{name}" for name in class_names]
    values = probs.reshape(len(target), -1)
    return [
        {
            "index": i,
            **(identity[i] if identity is not None else {}),
            "target": int(target[i]),
            **dict(zip(columns, values[i].tolist(), strict=True)),
            "predicted": int(predicted[i]),
        }
        for i in range(len(target))
    ]


def read_predictions(path: Path) -> Predictions:
    """A `predictions_<split>.csv` back as probabilities and targets, with their log loss."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in rows[0] if c.startswith("p_")] if rows else []
    probs = np.array([[float(row[c]) for c in columns] for row in rows]).reshape(len(rows), len(columns))
    target = np.array([int(row["target"]) for row in rows], dtype=np.int64)
    probs = probs[:, 0] if len(columns) == 1 else probs
    return Predictions(probs, target, log_loss(probs, target))
