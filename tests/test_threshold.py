"""Decision-threshold rules against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from medlit.errors import ConfigError
from medlit.evaluation.threshold import check_rule, choose_threshold


def test_youden_cuts_separable_scores_in_the_middle_of_the_gap():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7])
    target = np.array([0, 0, 0, 1, 1])
    assert choose_threshold("youden", scores, target) == pytest.approx(0.45)


def test_youden_on_overlapping_scores():
    # negatives 0.1 0.2 0.3 0.55, positives 0.4 0.5 0.7 0.8. J at the cuts: 0.25 -> 1 + 2/4 - 1 = 0.5,
    # 0.35 -> 1 + 3/4 - 1 = 0.75, 0.45 -> 0.5, 0.525 -> 0.25, 0.6 -> 0.5: the best is 0.35
    scores = np.array([0.1, 0.4, 0.2, 0.5, 0.3, 0.7, 0.55, 0.8])
    target = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    assert choose_threshold("youden", scores, target) == pytest.approx(0.35)


def test_youden_ties_keep_the_more_sensitive_threshold():
    # negatives 0.1 0.3 0.5 0.8, positives 0.2 0.4 0.6 0.7: J = 0.25 at the cuts 0.15, 0.35 and 0.55
    scores = np.array([0.1, 0.3, 0.2, 0.5, 0.4, 0.6, 0.7, 0.8])
    target = np.array([0, 0, 1, 0, 1, 1, 1, 0])
    assert choose_threshold("youden", scores, target) == pytest.approx(0.15)


def test_sensitivity_target_keeps_the_most_specific_threshold_that_reaches_it():
    positives = np.linspace(0.05, 1.0, 20)  # 19 of 20 = 0.95 must stay positive: cut above 0.05
    negatives = np.array([0.02, 0.08, 0.12, 0.5])
    scores = np.r_[positives, negatives]
    target = np.r_[np.ones(20, int), np.zeros(4, int)]
    threshold = choose_threshold("sensitivity@0.95", scores, target)
    assert threshold == pytest.approx((0.08 + 0.1) / 2)  # the next cut, 0.11, would miss 0.1 as well
    assert (positives >= threshold).mean() == 0.95


def test_specificity_target():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.9])
    target = np.array([0, 0, 0, 0, 1, 1])
    # specificity 0.75 needs three of four negatives below the cut: lowest such cut is 0.325
    assert choose_threshold("specificity@0.75", scores, target) == pytest.approx(0.325)


def test_fixed_thresholds_need_no_scores():
    assert choose_threshold(0.5, np.array([]), np.array([])) == 0.5
    assert choose_threshold("0.3", np.array([]), np.array([])) == 0.3


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("best", "unknown threshold rule 'best'; choose one of: a number in (0, 1), youden, sensitivity@X"),
        ("sensitivity@1.5", "sensitivity target must be a number in"),
        ("sensitivity@high", "sensitivity target must be a number in"),
        ("1.5", "must lie strictly between 0 and 1"),
    ],
)
def test_unknown_or_impossible_rules_are_named(rule, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_rule(rule)


def test_a_rule_needs_both_classes_in_validation():
    with pytest.raises(ConfigError, match="both classes"):
        choose_threshold("youden", np.array([0.2, 0.4]), np.array([1, 1]))
