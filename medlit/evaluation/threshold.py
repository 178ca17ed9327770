"""Decision thresholds for binary classifiers, chosen on the validation split.

A binary Classifier outputs P(positive); it calls an example positive when that probability is at or
above its decision threshold. 0.5 is right only when the classes are balanced and both errors cost the
same. In screening, a missed pneumonia costs more than a false alarm, so the threshold is chosen on
validation predictions by a named rule and then applied, unchanged, to the test split.

Rules (`threshold=` on the command line):
- a number in (0, 1), e.g. `0.5`: that threshold;
- `youden`: the threshold that maximises Youden's J = sensitivity + specificity - 1;
- `sensitivity@X`: the highest threshold that keeps sensitivity >= X (the most specific such one);
- `specificity@X`: the lowest threshold that keeps specificity >= X (the most sensitive such one).

Candidate thresholds are the midpoints between consecutive distinct validation scores (and one below and
one above all of them), so a chosen threshold never sits exactly on a validation score.
"""

from __future__ import annotations

import logging
import re

import numpy as np
from torch import nn

from medlit.errors import ConfigError
from medlit.evaluation.predictions import predict

log = logging.getLogger(__name__)

RULES = ("a number in (0, 1)", "youden", "sensitivity@X", "specificity@X")
_TARGET_RULE = re.compile(r"^(sensitivity|specificity)@(.+)$")


def check_rule(rule: str | float) -> None:
    """Refuse a rule that is not one of `RULES`, naming it and the valid ones, before any work is done."""
    _parse(rule)


def _parse(rule: str | float) -> tuple[str, float | None]:
    text = str(rule).strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not 0 < value < 1:
            raise ConfigError(f"threshold={text}: a fixed threshold must lie strictly between 0 and 1")
        return "fixed", value
    if text == "youden":
        return "youden", None
    if match := _TARGET_RULE.match(text):
        try:
            target = float(match.group(2))
        except ValueError:
            target = -1.0
        if not 0 < target <= 1:
            raise ConfigError(f"threshold={text}: the {match.group(1)} target must be a number in (0, 1]")
        return match.group(1), target
    raise ConfigError(f"unknown threshold rule {text!r}; choose one of: {', '.join(RULES)}")


def is_fixed(rule: str | float) -> bool:
    """Whether `rule` is a fixed number (it needs no validation predictions)."""
    return _parse(rule)[0] == "fixed"


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct scores, plus one cut below and one above all of them."""
    unique = np.unique(scores)
    low, high = min(0.0, unique[0] - 1e-6), max(1.0, unique[-1] + 1e-6)
    return np.concatenate([[(low + unique[0]) / 2], (unique[:-1] + unique[1:]) / 2, [(unique[-1] + high) / 2]])


def sensitivity_specificity(
    scores: np.ndarray, target: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity when `scores >= t`, for every threshold t."""
    positives, negatives = np.sort(scores[target == 1]), np.sort(scores[target == 0])
    sensitivity = 1 - np.searchsorted(positives, thresholds, side="left") / max(len(positives), 1)
    specificity = np.searchsorted(negatives, thresholds, side="left") / max(len(negatives), 1)
    return sensitivity, specificity


def choose_threshold(rule: str | float, scores: np.ndarray, target: np.ndarray) -> float:
    """The decision threshold `rule` picks for validation scores P(positive) and their 0/1 targets."""
    kind, value = _parse(rule)
    if kind == "fixed":
        return float(value)
    scores, target = np.asarray(scores, dtype=np.float64), np.asarray(target)
    if not ((target == 1).any() and (target == 0).any()):
        raise ConfigError(f"threshold={rule} needs validation examples of both classes; the split has only one")
    thresholds = candidate_thresholds(scores)
    sensitivity, specificity = sensitivity_specificity(scores, target, thresholds)
    if kind == "youden":
        # ties: the first (lowest) threshold of the best J, the more sensitive one
        return float(thresholds[np.argmax(sensitivity + specificity - 1)])
    if kind == "sensitivity":
        # sensitivity falls as the threshold rises: the last threshold that still reaches the target
        return float(thresholds[np.flatnonzero(sensitivity >= value - 1e-12)[-1]])
    return float(thresholds[np.flatnonzero(specificity >= value - 1e-12)[0]])


def select_threshold(model: nn.Module, datamodule, rule: str | float) -> float:
    """Choose the decision threshold by `rule` on the validation split and set it on the model
    (its `decision_threshold` buffer); return it."""
    if is_fixed(rule):
        value = choose_threshold(rule, np.empty(0), np.empty(0))
    else:
        val = predict(model, datamodule.evaluation_dataloader("val"))
        value = choose_threshold(rule, val.probs, val.target)
    model.decision_threshold.fill_(value)
    log.info("Decision threshold %.4f (threshold=%s, chosen on the validation split)", value, rule)
    return value
