"""The multi-class report: each class's metrics with bootstrap intervals, their macro average, the pooled
two-class view, and the predictions table that names each example."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from medlit.data.base import BinaryView
from medlit.evaluation.predictions import Predictions, prediction_rows
from medlit.evaluation.report import build_report, markdown

NAMES = ["NORMAL", "BACTERIAL", "VIRAL"]


def three_class_predictions(n: int = 600, seed: int = 0) -> Predictions:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    probs[np.arange(n), target] += rng.uniform(0, 1.2, n)
    probs /= probs.sum(axis=1, keepdims=True)
    return Predictions(probs, target, 0.7)


def test_each_class_has_its_metrics_with_intervals_and_a_macro_average():
    predictions = three_class_predictions()
    report = build_report(predictions, NAMES, "val", threshold=None, resamples=500)
    probs, target = predictions.probs, predictions.target
    predicted = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(target, predicted)
    matrix = confusion_matrix(target, predicted)
    rows = {row["class"]: row for row in report.per_class}
    for c, name in enumerate(NAMES):
        negatives = target != c
        specificity = (matrix.sum() - matrix[c].sum() - matrix[:, c].sum() + matrix[c, c]) / negatives.sum()
        expected = {
            "precision": precision[c],
            "recall": recall[c],
            "f1": f1[c],
            "specificity": specificity,
            "auroc": roc_auc_score(target == c, probs[:, c]),
        }
        for metric, value in expected.items():
            row = rows[name]
            assert row[metric] == pytest.approx(value), (name, metric)
            assert row[f"{metric}_ci_low"] < value < row[f"{metric}_ci_high"], (name, metric)
            assert row[f"{metric}_ci_high"] - row[f"{metric}_ci_low"] < 0.2, "about 200 examples a class"
        assert rows[name]["support"] == support[c]
    macro = rows["macro avg"]
    for metric in ("precision", "recall", "f1", "specificity", "auroc"):
        assert macro[metric] == pytest.approx(np.mean([rows[n][metric] for n in NAMES])), metric
        assert macro[f"{metric}_ci_low"] < macro[metric] < macro[f"{metric}_ci_high"], metric
    assert report.metrics["auroc"] == pytest.approx(macro["auroc"])
    flat = report.flat()
    assert flat["val/recall/VIRAL"] == pytest.approx(recall[2])
    assert flat["val/auroc/BACTERIAL_ci_low"] == rows["BACTERIAL"]["auroc_ci_low"]
    assert flat["val/f1_ci_low"] < flat["val/f1"] < flat["val/f1_ci_high"]
    text = markdown(report)
    low, high = rows["VIRAL"]["recall_ci_low"], rows["VIRAL"]["recall_ci_high"]
    assert f"{recall[2]:.4f} ({low:.3f}–{high:.3f})" in text


def test_a_class_recall_interval_has_the_binomial_width():
    """Class 2: 90 of 100 found; 0.9 ± 1.96·sqrt(0.9·0.1/100), whatever the other classes do."""
    target = np.repeat([0, 1, 2], 100)
    predicted = target.copy()
    predicted[200:210] = 0
    probs = np.full((300, 3), 0.1)
    probs[np.arange(300), predicted] = 0.8
    report = build_report(Predictions(probs, target, 0.5), NAMES, "test", None, resamples=4000, seed=1)
    viral = report.per_class[2]
    half = 1.96 * np.sqrt(0.9 * 0.1 / 100)
    assert viral["recall"] == pytest.approx(0.9)
    assert viral["recall_ci_low"] == pytest.approx(0.9 - half, abs=0.15 * half)
    assert viral["recall_ci_high"] == pytest.approx(min(1.0, 0.9 + half), abs=0.15 * half)
    assert report.per_class[1]["recall_ci_low"] == report.per_class[1]["recall_ci_high"] == 1.0


def test_the_pooled_view_is_the_two_class_task_from_the_summed_probabilities():
    predictions = three_class_predictions(seed=1)
    view = BinaryView("PNEUMONIA", "NORMAL", (1, 2))
    report = build_report(predictions, NAMES, "val", None, resamples=300, binary_view=view)
    pneumonia = predictions.probs[:, 1] + predictions.probs[:, 2]
    sick = predictions.target != 0
    said = pneumonia >= 0.5
    flat = report.flat()
    assert flat["val/pneumonia_vs_normal/auroc"] == pytest.approx(roc_auc_score(sick, pneumonia))
    assert flat["val/pneumonia_vs_normal/recall"] == pytest.approx(said[sick].mean())
    assert flat["val/pneumonia_vs_normal/specificity"] == pytest.approx(1 - said[~sick].mean())
    low, high = flat["val/pneumonia_vs_normal/auroc_ci_low"], flat["val/pneumonia_vs_normal/auroc_ci_high"]
    assert low < flat["val/pneumonia_vs_normal/auroc"] < high
    assert "## PNEUMONIA against NORMAL" in markdown(report)
    assert "P(PNEUMONIA) = P(BACTERIAL) + P(VIRAL)" in markdown(report)
    assert build_report(predictions, NAMES, "val", None, resamples=10).pooled is None


def test_the_predictions_table_names_each_example():
    predictions = three_class_predictions(n=4)
    identity = [{"path": f"scans/{i}.dcm", "site": "north"} for i in range(4)]
    rows = prediction_rows(predictions, NAMES, None, identity)
    assert list(rows[2]) == ["index", "path", "site", "target", "p_NORMAL", "p_BACTERIAL", "p_VIRAL", "predicted"]
    assert rows[2]["path"] == "scans/2.dcm" and rows[2]["target"] == predictions.target[2]
    with pytest.raises(ValueError, match="3 rows identify the examples of a split of 4"):
        prediction_rows(predictions, NAMES, None, identity[:3])
