"""The test report of training and of `medlit eval`, and the decision threshold in the checkpoint."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import shutil

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from medlit.cli.eval import evaluate_checkpoint
from medlit.cli.eval import hydra_main as eval_main
from medlit.deploy.rebuild import load_run
from medlit.errors import ConfigError
from medlit.evaluation.predictions import Predictions, predict, read_predictions
from medlit.evaluation.report import build_report, figures
from medlit.evaluation.threshold import choose_threshold
from medlit.training.checkpoint import load_checkpoint
from medlit.training.classifier import Classifier
from medlit.training.run import train
from tests.conftest import FAST, best_checkpoint, compose_config, launch_in_process
from tests.helpers import pixel, rendered

INTERVALS = ("acc", "auroc", "recall", "specificity")


def test_training_ends_with_the_report_at_the_threshold_chosen_on_validation(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for name in INTERVALS:
        assert metrics[f"test/{name}_ci_low"] <= metrics[f"test/{name}"] <= metrics[f"test/{name}_ci_high"], name
    threshold = metrics["test/threshold"]
    assert 0 < threshold < 1 and threshold != 0.5

    # the threshold is Youden's on the validation predictions of the selected checkpoint, and is stored in it
    run = load_run(best_checkpoint(trained_run))
    assert float(run.model.decision_threshold) == pytest.approx(threshold)
    val = predict(run.model, run.datamodule.evaluation_dataloader("val"))
    assert choose_threshold("youden", val.probs, val.target) == pytest.approx(threshold)

    # the test metrics are those of the predictions at that threshold
    test = read_predictions(trained_run / "predictions_test.csv")
    predicted = test.probs >= threshold
    assert metrics["test/acc"] == pytest.approx(np.mean(predicted == test.target))
    assert metrics["test/recall"] == pytest.approx(predicted[test.target == 1].mean())
    assert metrics["test/specificity"] == pytest.approx(1 - predicted[test.target == 0].mean())

    with open(trained_run / "classification_report_test.csv") as handle:
        rows = {row["class"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"normal", "pneumonia", "macro avg", "weighted avg"}
    assert int(rows["normal"]["support"]) + int(rows["pneumonia"]["support"]) == len(test.target) == 48
    assert float(rows["pneumonia"]["recall"]) == pytest.approx(metrics["test/recall"])
    assert float(rows["normal"]["recall"]) == pytest.approx(metrics["test/specificity"])
    report = (trained_run / "report_test.md").read_text()
    assert f"P(pneumonia) >= {threshold:.4f}" in report and "95% bootstrap interval" in report
    for png in ("confusion_matrix_test", "roc_test", "pr_test"):
        assert (trained_run / "figures" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"

    events = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"test/roc", "test/pr", "test/confusion_matrix", "val/confusion_matrix"} <= set(events.Tags()["images"])
    assert {"test/auroc_ci_low", "test/threshold", "hp/test_auroc"} <= set(events.Tags()["scalars"])


def _on_segment(p, a, b) -> bool:
    cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
    inside = min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])
    return abs(cross) < 1e-12 and inside


def test_the_roc_and_precision_recall_figures_mark_the_operating_point():
    """Scores ranked by hand: at threshold 0.5, 3 of 4 positives and 1 of 4 negatives are called positive, so the
    operating point is (FPR 0.25, TPR 0.75), a point of the ROC curve, drawn there as a black dot; precision 3/4."""
    probs = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1])
    target = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    report = build_report(Predictions(probs, target, 0.0), ["normal", "pneumonia"], "test", 0.5, resamples=10)
    drawn = figures(report)
    for name, point in (("roc", (0.25, 0.75)), ("pr", (0.75, 0.75))):
        ax = drawn[name].axes[0]
        (marker,) = [line for line in ax.get_lines() if line.get_marker() == "o"]
        assert (marker.get_xdata()[0], marker.get_ydata()[0]) == pytest.approx(point), name
        pixels = rendered(drawn[name])
        assert pixel(pixels, ax, *point).max() < 60, f"no black dot at {point} in the {name} figure"
        assert pixel(pixels, ax, 0.6, 0.2).min() > 200, "the plot's empty corner is white"
    roc = drawn["roc"].axes[0]
    (curve,) = [line for line in roc.get_lines() if line.get_label().startswith("pneumonia")]
    points = list(zip(curve.get_xdata(), curve.get_ydata(), strict=True))
    assert any(_on_segment((0.25, 0.75), a, b) for a, b in itertools.pairwise(points)), "the point is off the curve"
    (label,) = [line.get_label() for line in roc.get_lines() if line.get_marker() == "o"]
    assert label == "threshold (sens 0.75, spec 0.75)"


def test_prediction_uses_the_stored_threshold(trained_run):
    run = load_run(best_checkpoint(trained_run))
    images, target = next(iter(run.datamodule.evaluation_dataloader("test")))
    out = run.model.predict_step((images, target), 0)
    assert out["probs"].shape == (len(target), 2) and torch.allclose(out["probs"].sum(1), torch.ones(len(target)))
    assert torch.equal(out["preds"], (out["probs"][:, 1] >= run.model.decision_threshold).long())
    run.model.decision_threshold.fill_(1.0)
    assert not run.model.predict_step((images, target), 0)["preds"].any()


def test_a_checkpoint_without_a_stored_threshold_predicts_at_one_half():
    model = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 1)), num_classes=2)
    state = {k: v for k, v in model.state_dict().items() if k != "decision_threshold"}
    model.decision_threshold.fill_(0.9)
    model.load_state_dict(state)
    assert float(model.decision_threshold) == 0.5


def eval_config(trained_run, *overrides):
    ckpt = best_checkpoint(trained_run)
    return compose_config([f"ckpt_path={ckpt}", *overrides], trained_run / "eval-out", config_name="eval")


def test_eval_reproduces_the_training_report_from_the_checkpoint_alone(trained_run, medmnist_dir, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(medmnist_dir, moved)
    ckpt = best_checkpoint(trained_run)
    before = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    auroc = evaluate_checkpoint(eval_config(trained_run, f"data.data_dir={moved}", "device=cpu"))
    trained = json.loads((trained_run / "metrics.json").read_text())
    again = json.loads((trained_run / "eval-out" / "metrics.json").read_text())
    assert auroc == pytest.approx(trained["test/auroc"])
    assert again == {k: pytest.approx(v) for k, v in trained.items() if k.startswith("test/")}

    # another split and a fixed threshold for this report only: the checkpoint is left as it is
    evaluate_checkpoint(eval_config(trained_run, "split=val", "threshold=0.5", f"data.data_dir={moved}"))
    val = json.loads((trained_run / "eval-out" / "metrics.json").read_text())
    assert val["val/threshold"] == 0.5 and "test/acc" not in val
    assert (trained_run / "eval-out" / "figures" / "roc_val.png").exists()
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == before


def test_eval_refuses_an_unknown_threshold_rule_and_split(trained_run):
    with pytest.raises(ConfigError, match="unknown threshold rule 'best'; choose one of"):
        evaluate_checkpoint(eval_config(trained_run, "threshold=best"))
    with pytest.raises(ConfigError, match="split=train; choose one of test, val"):
        evaluate_checkpoint(eval_config(trained_run, "split=train"))


def test_eval_of_a_missing_checkpoint_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """Through the command line's own path (Hydra, the output-directory resolver, the one-line errors)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        launch_in_process(monkeypatch, eval_main, ["medlit.eval", "ckpt_path=no/such.ckpt"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "medlit: error: checkpoint no/such.ckpt not found\n"
    assert not any(tmp_path.iterdir())


def test_training_refuses_a_bad_threshold_rule_before_it_starts(medmnist_dir, tmp_path):
    base = [f"data.data_dir={medmnist_dir}", *FAST]
    with pytest.raises(ConfigError, match=r"threshold=sensitivity@2: the sensitivity target must be a number"):
        train(compose_config([*base, "threshold=sensitivity@2"], tmp_path / "a"))
    with pytest.raises(ConfigError, match="threshold=youden applies to binary tasks; data organcmnist has 11"):
        train(compose_config([*base, "data=organcmnist", "threshold=youden"], tmp_path / "b"))
    assert not (tmp_path / "a" / "checkpoints").exists()


def test_a_checkpoint_with_a_threshold_still_loads_with_weights_only(trained_run):
    checkpoint = load_checkpoint(best_checkpoint(trained_run))
    assert checkpoint["state_dict"]["decision_threshold"].shape == ()
    assert checkpoint["hyper_parameters"]["run_config"]["threshold"] == "youden"
