"""Bootstrap intervals against answers known in advance: exact AUROCs, binomial widths, coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from medlit.errors import ConfigError
from medlit.evaluation.bootstrap import confidence_intervals, metric_values, weighted_auroc


def test_weighted_auroc_equals_auroc_of_the_resampled_data_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 50) / 5  # many ties
    positive = rng.integers(0, 2, 50)
    weights = rng.multinomial(50, np.full(50, 1 / 50), size=20).astype(float)
    got = weighted_auroc(scores, positive, weights)
    for row, value in zip(weights.astype(int), got, strict=True):
        drawn = np.repeat(np.arange(50), row)
        assert value == pytest.approx(roc_auc_score(positive[drawn], scores[drawn]), abs=1e-12)


def test_point_values_match_the_definitions():
    probs = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
    target = np.array([1, 1, 1, 0, 0, 0])
    values = metric_values(probs, target, 0.5, np.ones((1, 6)))
    assert values["recall"][0] == pytest.approx(2 / 3)
    assert values["specificity"][0] == pytest.approx(2 / 3)
    assert values["acc"][0] == pytest.approx(4 / 6)
    assert values["auroc"][0] == pytest.approx(roc_auc_score(target, probs))


def test_a_perfect_classifier_has_degenerate_intervals_at_one():
    target = np.repeat([0, 1], 50)
    probs = np.where(target == 1, 0.9, 0.1)
    intervals = confidence_intervals(probs, target, resamples=300)
    for name in ("acc", "auroc", "recall", "specificity"):
        assert intervals[name] == (1.0, 1.0), name
    # every probability is 0.1 away from an outcome it always predicts right: ECE 0.1, Brier 0.01 in every resample
    assert intervals["ece"] == pytest.approx((0.1, 0.1)) and intervals["brier"] == pytest.approx((0.01, 0.01))


def test_binary_rates_match_the_binomial_normal_approximation():
    """800 of 1000 correct: 0.8 ± 1.96·sqrt(0.8·0.2/1000); sensitivity 90/100 and specificity 0.75 of 900 alike."""
    target = np.r_[np.ones(100, int), np.zeros(900, int)]
    probs = np.r_[np.full(90, 0.9), np.full(10, 0.1), np.full(675, 0.1), np.full(225, 0.9)]
    intervals = confidence_intervals(probs, target, resamples=4000, seed=1)
    for name, p, n in (("recall", 0.9, 100), ("specificity", 0.75, 900), ("acc", 0.765, 1000)):
        half = 1.96 * np.sqrt(p * (1 - p) / n)
        assert intervals[name][0] == pytest.approx(p - half, abs=0.15 * half), name
        assert intervals[name][1] == pytest.approx(p + half, abs=0.15 * half), name


def test_intervals_cover_the_true_auroc_and_accuracy_about_95_percent_of_the_time():
    """Two unit-variance normal score distributions one apart: true AUROC Φ(1/√2)."""
    rng = np.random.default_rng(2)
    true_auroc, true_acc = norm.cdf(1 / np.sqrt(2)), norm.cdf(0.5)  # threshold midway between the means
    covered = {"auroc": 0, "acc": 0}
    trials = 150
    for trial in range(trials):
        target = np.repeat([0, 1], 100)
        scores = norm.cdf(rng.normal(target - 0.5, 1.0))  # as probabilities; cut at 0.5 = midway
        intervals = confidence_intervals(scores, target, resamples=300, seed=trial)
        covered["auroc"] += intervals["auroc"][0] <= true_auroc <= intervals["auroc"][1]
        covered["acc"] += intervals["acc"][0] <= true_acc <= intervals["acc"][1]
    for name, count in covered.items():
        assert 0.89 <= count / trials <= 0.99, (name, count)


def test_multiclass_intervals_are_macro_averages_and_reproducible():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300)
    probs[np.arange(300), target] += 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    first = confidence_intervals(probs, target, resamples=400, seed=5)
    assert first == confidence_intervals(probs, target, resamples=400, seed=5)
    point = {k: v[0] for k, v in metric_values(probs, target, 0.5, np.ones((1, 300))).items()}
    for name, (low, high) in first.items():
        assert low < point[name] < high or low == high == point[name] == 1.0, name
    expected = np.mean([roc_auc_score(target == c, probs[:, c]) for c in range(3)])
    assert point["auroc"] == pytest.approx(expected)


def test_an_impossible_confidence_level_is_refused():
    with pytest.raises(ConfigError, match="need 0 < level < 1"):
        confidence_intervals(np.array([0.2, 0.8]), np.array([0, 1]), level=95)
