"""How far predicted probabilities can be taken at their word: calibration error, Brier score, temperature scaling.

A model whose P(pneumonia) = 0.9 should be right nine times in ten. Binary tasks are judged on P(positive)
(the probability a clinician reads), multi-class tasks on the top class's probability (confidence against
accuracy, as Guo et al. 2017 do). Temperature scaling divides the logits by one number T > 0 fitted on the
validation split (T > 1 softens over-confident probabilities); it changes neither the ranking (AUROC) nor the
most probable class, only how far the probabilities are from 0 and 1.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor, nn

log = logging.getLogger(__name__)

BINS = 15
_LOG_T_RANGE = (-4.0, 4.0)  # T from 0.018 to 55


@dataclass
class Reliability:
    """Per equal-width bin of the judged probability: its mean, the observed frequency, and the examples."""

    confidence: np.ndarray
    frequency: np.ndarray
    count: np.ndarray


def judged(probs: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The probability each example is judged on and whether it came true: P(positive) and y for binary
    tasks; the top class's probability and whether that class was right for multi-class tasks."""
    if probs.ndim == 1:
        return probs, (target == 1).astype(np.float64)
    return probs.max(axis=1), (probs.argmax(axis=1) == target).astype(np.float64)


def reliability(probs: np.ndarray, target: np.ndarray, bins: int = BINS) -> Reliability:
    """The reliability diagram's bins (empty bins hold NaN)."""
    p, outcome = judged(np.asarray(probs, dtype=np.float64), np.asarray(target))
    index = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=p, minlength=bins) / count
        frequency = np.bincount(index, weights=outcome, minlength=bins) / count
    return Reliability(confidence, frequency, count.astype(int))


def expected_calibration_error(
    probs: np.ndarray, target: np.ndarray, bins: int = BINS, weights: np.ndarray | None = None
) -> np.ndarray | float:
    """Sum over bins of |mean probability - observed frequency|, weighted by the bin's share of examples.

    With `weights` (B, N), one value per row of example weights (bootstrap resamples).
    """
    p, outcome = judged(np.asarray(probs, dtype=np.float64), np.asarray(target))
    single = weights is None
    w = np.ones((1, len(p))) if single else np.asarray(weights, dtype=np.float64)
    index = np.minimum((p * bins).astype(int), bins - 1)
    members = np.eye(bins, dtype=np.float64)[index]  # (N, bins)
    count = w @ members
    gap = np.abs(w @ (members * p[:, None]) - w @ (members * outcome[:, None]))  # |sum p - sum y| per bin
    with np.errstate(invalid="ignore", divide="ignore"):
        ece = gap.sum(axis=1) / count.sum(axis=1)
    return float(ece[0]) if single else ece


def brier_score(probs: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | float:
    """Mean squared difference between the probabilities and the outcome: (P(positive) - y)^2 for binary
    tasks, the sum over classes of (p_c - [y = c])^2 for multi-class tasks."""
    probs, target = np.asarray(probs, dtype=np.float64), np.asarray(target)
    if probs.ndim == 1:
        squared = (probs - (target == 1)) ** 2
    else:
        squared = ((probs - np.eye(probs.shape[1])[target]) ** 2).sum(axis=1)
    if weights is None:
        return float(squared.mean()) if len(squared) else math.nan
    weights = np.asarray(weights, dtype=np.float64)
    return weights @ squared / weights.sum(axis=1)


@torch.no_grad()
def collect_logits(model: nn.Module, batches) -> tuple[Tensor, Tensor]:
    """The model's raw logits (before any temperature) and the targets of every batch, in order."""
    was_training = model.training
    model.eval()
    logits, targets = [], []
    try:
        for x, y in batches:
            logits.append(model(x.to(model.device)).float().cpu())
            targets.append(y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


def fit_temperature(logits: Tensor, target: Tensor) -> float:
    """The T > 0 that minimises the log loss of softmax(logits / T) (sigmoid for one logit per example)."""
    logits, target = logits.double(), target.long()

    def log_loss(log_t: float) -> float:
        scaled = logits / math.exp(log_t)
        if scaled.shape[1] == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scaled[:, 0], target.double())
        else:
            loss = torch.nn.functional.cross_entropy(scaled, target)
        return float(loss)

    best = minimize_scalar(log_loss, bounds=_LOG_T_RANGE, method="bounded", options={"xatol": 1e-4})
    return float(math.exp(best.x))


def calibrate(model: nn.Module, datamodule) -> float:
    """Fit the model's temperature on the validation split of a set-up data module, set it (the model's
    `temperature` buffer) and return it."""
    model.temperature.fill_(1.0)
    logits, target = collect_logits(model, datamodule.evaluation_dataloader("val"))
    temperature = fit_temperature(logits, target)
    model.temperature.fill_(temperature)
    log.info("Temperature %.4f (fitted on the validation split's log loss)", temperature)
    return temperature
