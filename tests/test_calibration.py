"""Calibration: expected calibration error, Brier score, reliability bins and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlit.evaluation.calibration import (
    brier_score,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    reliability,
)
from medlit.training.classifier import Classifier


def test_ece_and_brier_of_a_hand_worked_case():
    # P(positive) 0.2 for four examples of which one is positive, 0.8 for four of which two are
    probs = np.array([0.2, 0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8])
    target = np.array([1, 0, 0, 0, 1, 1, 0, 0])
    # bins: |0.2 - 1/4| = 0.05 and |0.8 - 2/4| = 0.3, each half of the examples
    assert expected_calibration_error(probs, target) == pytest.approx(0.5 * 0.05 + 0.5 * 0.3)
    assert brier_score(probs, target) == pytest.approx((0.64 + 3 * 0.04 + 2 * 0.04 + 2 * 0.64) / 8)
    bins = reliability(probs, target, bins=5)
    assert bins.count.tolist() == [0, 4, 0, 0, 4]
    assert bins.frequency[1] == pytest.approx(0.25) and bins.frequency[4] == pytest.approx(0.5)


def test_multiclass_ece_judges_the_top_class_and_brier_sums_over_classes():
    probs = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    target = np.array([0, 1, 2, 2])
    # confidence 0.7 right half the time, 0.8 right always
    assert expected_calibration_error(probs, target) == pytest.approx(0.5 * 0.2 + 0.5 * 0.2)
    first = 0.3**2 + 0.2**2 + 0.1**2
    second = 0.7**2 + 0.8**2 + 0.1**2
    third = 0.1**2 + 0.1**2 + 0.2**2
    assert brier_score(probs, target) == pytest.approx((first + second + 2 * third) / 4)


def test_weighted_ece_matches_the_ece_of_the_resampled_examples():
    rng = np.random.default_rng(0)
    probs, target = rng.random(40), rng.integers(0, 2, 40)
    counts = rng.multinomial(40, np.full(40, 1 / 40), size=3).astype(float)
    weighted = expected_calibration_error(probs, target, weights=counts)
    for row, value in zip(counts.astype(int), weighted, strict=True):
        repeated = np.repeat(np.arange(40), row)
        assert value == pytest.approx(expected_calibration_error(probs[repeated], target[repeated]))


def over_confident(n: int = 4000, scale: float = 4.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from sigmoid(z) with logits reported `scale` times too large: the right temperature is `scale`."""
    generator = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, generator=generator) * 2
    target = (torch.rand(n, generator=generator) < torch.sigmoid(true_logits)).long()
    return (true_logits * scale).unsqueeze(1), target


def test_temperature_scaling_recovers_the_over_confidence_of_a_known_model():
    logits, target = over_confident(scale=4.0)
    assert fit_temperature(logits, target) == pytest.approx(4.0, rel=0.1)
    multi = torch.stack([torch.zeros_like(logits[:, 0]), logits[:, 0]], dim=1)  # softmax of (0, z) = sigmoid(z)
    assert fit_temperature(multi, target) == pytest.approx(4.0, rel=0.1)


class _Logits(torch.nn.Module):
    """A 'network' that returns the logit stored in its input's first pixel (inputs are floats in [0, 1])."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.table = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(x[:, 0, 0, 0] * (len(self.table) - 1)).round().long()]


class _Validation:
    def __init__(self, n: int, target: torch.Tensor) -> None:
        self.inputs = torch.linspace(0, 1, n).view(n, 1, 1, 1)
        self.target = target

    def evaluation_dataloader(self, split: str):
        return [(self.inputs, self.target)]


def test_calibrating_a_deliberately_over_confident_model_lowers_its_validation_ece():
    logits, target = over_confident(n=2001, scale=4.0, seed=1)
    model = Classifier(_Logits(logits), num_classes=2, input_mean=[0.0], input_std=[1.0]).eval()
    data = _Validation(len(logits), target)
    before = model.class_probabilities(data.inputs)[:, 1].detach().numpy()
    temperature = calibrate(model, data)
    after = model.class_probabilities(data.inputs)[:, 1].detach().numpy()
    assert float(model.temperature) == pytest.approx(temperature) and temperature == pytest.approx(4.0, rel=0.15)
    ece_before, ece_after = (
        expected_calibration_error(before, target.numpy()),
        expected_calibration_error(after, target.numpy()),
    )
    assert ece_before > 0.1 and ece_after < 0.04, (ece_before, ece_after)
    assert np.array_equal(before >= 0.5, after >= 0.5), "a temperature never moves P across 0.5"
    assert np.all(np.diff(before[np.argsort(after)]) >= 0), "nor changes the order of the probabilities"
