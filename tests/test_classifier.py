"""The Classifier's loss, class weighting, input convention and output checks."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.functional.classification import binary_auroc

from medlit.errors import MedlitError
from medlit.training.classifier import Classifier


class _Counts:
    def __init__(self, counts):
        self.class_counts = torch.tensor(counts)


class _Trainer:
    def __init__(self, counts):
        self.datamodule = _Counts(counts)


def classifier(num_classes: int, **kwargs) -> Classifier:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1 if num_classes == 2 else num_classes))
    return Classifier(net, num_classes=num_classes, **kwargs)


def test_binary_loss_is_bce_on_one_logit():
    model = classifier(2)
    logits, target = torch.tensor([[2.0], [-1.0]]), torch.tensor([1, 0])
    expected = F.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]))
    assert torch.isclose(model.loss(logits, target), expected)


def test_binary_class_weighting_uses_negatives_over_positives(monkeypatch):
    model = classifier(2, class_weighted_loss=True)
    monkeypatch.setattr(Classifier, "trainer", _Trainer([1341, 3875]), raising=False)
    model.setup("fit")
    assert torch.isclose(model.loss_weights, torch.tensor([1341 / 3875])).all()
    logits, target = torch.tensor([[0.3], [0.3]]), torch.tensor([1, 0])
    expected = F.binary_cross_entropy_with_logits(
        torch.tensor([0.3, 0.3]), torch.tensor([1.0, 0.0]), pos_weight=torch.tensor([1341 / 3875])
    )
    assert torch.isclose(model.loss(logits, target), expected)


def test_multiclass_class_weights_are_inverse_frequency(monkeypatch):
    model = classifier(3, class_weighted_loss=True, label_smoothing=0.1)
    monkeypatch.setattr(Classifier, "trainer", _Trainer([10, 30, 60]), raising=False)
    model.setup("fit")
    assert torch.allclose(model.loss_weights, torch.tensor([100 / 30, 100 / 90, 100 / 180]))
    logits, target = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 1])
    expected = F.cross_entropy(logits, target, weight=model.loss_weights, label_smoothing=0.1)
    assert torch.isclose(model.loss(logits, target), expected)


def test_uint8_and_unit_float_images_are_normalised_alike():
    model = classifier(2, input_mean=[0.5], input_std=[0.25])
    images = torch.randint(0, 256, (2, 1, 2, 2), dtype=torch.uint8)
    from_uint8 = model.preprocess(images)
    assert torch.allclose(from_uint8, model.preprocess(images.float() / 255))
    assert torch.allclose(from_uint8, (images.float() / 255 - 0.5) / 0.25)


def test_images_outside_the_intensity_convention_are_refused():
    with pytest.raises(MedlitError, match=r"uint8 in 0-255 or float in \[0, 1\]; got values in \[0, 255\]"):
        classifier(2).preprocess(torch.tensor([[[[0.0, 255.0], [3.0, 4.0]]]]))


def test_token_ids_pass_through_unchanged():
    ids = torch.tensor([[3, 5, 0]])
    assert torch.equal(classifier(2).preprocess(ids), ids)


def test_a_network_with_the_wrong_number_of_outputs_is_explained():
    model = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), num_classes=2)
    with pytest.raises(MedlitError, match=r"needs \(batch, 1\)"):
        model.training_step((torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1])), 0)


def test_probabilities_are_p_positive_or_rows():
    assert classifier(2).probabilities(torch.zeros(4, 1)).shape == (4,)
    rows = classifier(5).probabilities(torch.randn(4, 5))
    assert rows.shape == (4, 5) and torch.allclose(rows.sum(1), torch.ones(4))


class _StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_epoch_metrics_cover_every_prediction_of_the_epoch_and_no_sanity_check():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(100, 1, 2, 2, generator=generator)
    y = (x.mean(dim=(1, 2, 3)) + 0.2 * torch.randn(100, generator=generator) > 0.5).long()
    train_loader = DataLoader(TensorDataset(x[:60], y[:60]), batch_size=8)  # the last batch holds 4
    val_loader = DataLoader(TensorDataset(x[60:], y[60:]), batch_size=8)
    model = classifier(2, optimizer=partial(torch.optim.SGD, lr=0.5))
    steps = _StepLosses()
    trainer = pl.Trainer(
        max_epochs=1,
        num_sanity_val_steps=2,  # predictions of the untrained network, which must not count
        callbacks=[steps],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_loader, val_loader)

    metrics = trainer.callback_metrics
    sizes = torch.tensor([8.0] * 7 + [4.0])
    assert float(metrics["train/loss_epoch"]) == pytest.approx(float((torch.tensor(steps.losses) * sizes).sum() / 60))
    with torch.no_grad():
        logits = model.eval()(x[60:]).squeeze(1)
    assert float(metrics["val/loss"]) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, y[60:].float()))
    )
    assert float(metrics["val/auroc"]) == pytest.approx(float(binary_auroc(torch.sigmoid(logits), y[60:])))
    assert float(metrics["val/acc"]) == pytest.approx(float(((logits >= 0).long() == y[60:]).float().mean()))
