"""Percentile bootstrap confidence intervals for accuracy, AUROC, sensitivity (recall), specificity and calibration.

A test split of a few hundred X-rays gives metrics that move by several points from one sample of patients
to the next; an interval says how far. Each bootstrap resample draws the test examples with replacement;
here a resample is a row of multiplicities (how often each example was drawn), so every metric of every
resample is a weighted sum computed for a block of resamples at once, without copying the data.

Multi-class sensitivity, specificity and AUROC are macro averages over classes (one-vs-rest), as in the
training metrics; multi-class tasks also get macro precision and F1, and every class's precision, recall,
specificity, F1 and AUROC (`PER_CLASS`, keyed `<metric>/<class index>`), from the same resamples. A resample
without positives or negatives of a class has no recall, specificity or AUROC for it; such resamples are
left out of that interval (they are rare unless a class has a handful of examples). Binary tasks compute
the four metrics of the positive class alone.
"""

from __future__ import annotations

import numpy as np

from medlit.errors import ConfigError
from medlit.evaluation.calibration import brier_score, expected_calibration_error
from medlit.evaluation.predictions import predicted_labels

METRICS = ("acc", "auroc", "recall", "specificity", "ece", "brier")  # recall is sensitivity
PER_CLASS = ("precision", "recall", "specificity", "f1", "auroc")
_BLOCK_ELEMENTS = 4_000_000  # multiplicities held in memory at once (32 MB of float64)


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of `scores` for 0/1 `positive`, for each row of example weights (B, N); ties count half.

    The probability that a positive outscores a negative, with example i counted `weights[b, i]` times:
    scores are sorted once and grouped by value, so each row costs a few cumulative sums.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores, positive = scores[order], positive[order].astype(bool)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(np.where(positive, w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(positive, 0.0, w), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def metric_values(probs: np.ndarray, target: np.ndarray, threshold: float, weights: np.ndarray) -> dict:
    """Accuracy, AUROC, recall (sensitivity), specificity, expected calibration error and Brier score for each
    row of example weights (B, N); multi-class tasks also macro precision and F1, and each class's `PER_CLASS`
    metrics as `<metric>/<class index>`.

    A class never predicted has precision 0, and F1 0 when it is neither present nor predicted, as
    scikit-learn's `zero_division=0` reports them."""
    target = np.asarray(target)
    predicted = predicted_labels(probs, threshold)
    classes = [1] if probs.ndim == 1 else range(probs.shape[1])
    per_class: dict[str, list[np.ndarray]] = {name: [] for name in PER_CLASS}
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in classes:
            is_c, said_c = target == c, predicted == c
            hits, present = weights @ (is_c & said_c), weights @ is_c
            per_class["recall"].append(hits / present)
            per_class["specificity"].append(weights @ (~is_c & ~said_c) / (weights @ ~is_c))
            per_class["auroc"].append(weighted_auroc(probs if probs.ndim == 1 else probs[:, c], is_c, weights))
            if probs.ndim == 2:
                said = weights @ said_c
                per_class["precision"].append(np.where(said > 0, hits / said, 0.0))
                per_class["f1"].append(np.where(present + said > 0, 2 * hits / (present + said), 0.0))
        values = {
            "acc": weights @ (predicted == target) / weights.sum(axis=1),
            "auroc": _mean(per_class["auroc"]),
            "recall": _mean(per_class["recall"]),
            "specificity": _mean(per_class["specificity"]),
            "ece": expected_calibration_error(probs, target, weights=weights),
            "brier": brier_score(probs, target, weights=weights),
        }
    if probs.ndim == 2:
        values["precision"], values["f1"] = np.mean(per_class["precision"], axis=0), np.mean(per_class["f1"], axis=0)
        for name, rows in per_class.items():
            values.update({f"{name}/{c}": row for c, row in enumerate(rows)})
    return values


def _mean(per_class: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(per_class)
    counted = np.isfinite(stacked).sum(axis=0)
    return np.where(counted > 0, np.nansum(stacked, axis=0) / np.maximum(counted, 1), np.nan)


def confidence_intervals(
    probs: np.ndarray,
    target: np.ndarray,
    threshold: float = 0.5,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals `{metric: (low, high)}` at confidence `level` for every metric
    `metric_values` gives: `METRICS`, and for multi-class tasks the per-class and macro ones too.

    `probs` are P(positive) of shape (N,) for binary tasks or class probabilities (N, C); the same
    `seed` gives the same intervals.
    """
    if not 0 < level < 1 or resamples < 1:
        raise ConfigError(f"bootstrap intervals need 0 < level < 1 and resamples >= 1, got {level} and {resamples}")
    probs, target = np.asarray(probs, dtype=np.float64), np.asarray(target)
    n = len(target)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    values: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, block):
        weights = rng.multinomial(n, np.full(n, 1 / n), size=min(block, resamples - start)).astype(np.float64)
        for name, value in metric_values(probs, target, threshold, weights).items():
            values.setdefault(name, []).append(value)
    tail = 100 * (1 - level) / 2
    intervals = {}
    for name in values:
        draws = np.concatenate(values[name])
        draws = draws[np.isfinite(draws)]
        low, high = np.percentile(draws, [tail, 100 - tail]) if len(draws) else (np.nan, np.nan)
        intervals[name] = (float(low), float(high))
    return intervals
