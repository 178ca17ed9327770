"""A three-class checkpoint (normal, bacterial, viral) end to end: its report, `medlit predict`, ONNX export,
Grad-CAM of every class and the web app, each with one probability per class."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from medlit.cli.export import export
from medlit.cli.predict import predict
from medlit.deploy.predictor import Predictor, list_inputs
from medlit.deploy.rebuild import load_run
from medlit.deploy.serve import Explainer
from medlit.interpret.explain import explain_examples, write_explanations
from medlit.training.run import train
from tests.conftest import FAST, best_checkpoint, compose_config

NAMES = ["NORMAL", "BACTERIAL", "VIRAL"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def pathogen_run(tmp_path_factory, xray_dir) -> Path:
    """Two epochs of the baseline CNN on the generated chest X-rays as normal, bacterial or viral, at 32 px."""
    run = tmp_path_factory.mktemp("pathogen") / "run"
    overrides = [
        "data=chest_xray", "data.labels=pathogen", f"data.data_dir={xray_dir}", f"data.cache_dir={run.parent / 'c'}",
        "data.image_size=32", "data.decode_workers=1", *FAST, "model=baseline_cnn", "model.filters=8",
        "trainer.max_epochs=2", "optimizer.lr=3e-3", "bootstrap.resamples=100", "logger=csv",
    ]  # fmt: skip
    train(compose_config(overrides, run))
    return run


def test_the_report_has_every_class_and_pneumonia_against_normal(pathogen_run):
    metrics = json.loads((pathogen_run / "metrics.json").read_text())
    for name in NAMES:
        low, value, high = (metrics[f"test/recall/{name}{end}"] for end in ("_ci_low", "", "_ci_high"))
        assert low <= value <= high
    assert metrics["test/pneumonia_vs_normal/auroc_ci_low"] <= metrics["test/pneumonia_vs_normal/auroc"]
    rows = read_csv(pathogen_run / "predictions_test.csv")
    assert len(rows) == 12 and {r["file"].split("/")[1] for r in rows} == {"NORMAL", "PNEUMONIA"}
    for row in rows:
        probs = [float(row[f"p_{name}"]) for name in NAMES]
        assert sum(probs) == pytest.approx(1.0) and int(row["predicted"]) == int(np.argmax(probs))
        expected = 0 if "/NORMAL/" in row["file"] else 1 if "_bacteria_" in row["file"] else 2
        assert int(row["target"]) == expected
    report = (pathogen_run / "report_test.md").read_text()
    assert "| VIRAL |" in report and "## PNEUMONIA against NORMAL" in report


def test_predict_gives_three_probabilities_as_the_evaluation_did(pathogen_run, xray_dir, tmp_path):
    ckpt = best_checkpoint(pathogen_run)
    cfg = compose_config([f"ckpt_path={ckpt}", f"inputs={xray_dir / 'test'}"], tmp_path / "p", config_name="predict")
    predict(cfg)
    predicted = read_csv(tmp_path / "p" / "predictions.csv")
    assert list(predicted[0]) == ["input", "p_NORMAL", "p_BACTERIAL", "p_VIRAL", "predicted", "error"]
    evaluated = {r["file"]: r for r in read_csv(pathogen_run / "predictions_test.csv")}
    assert len(predicted) == len(evaluated) == 12
    for row in predicted:
        reference = evaluated[str(Path(row["input"]).relative_to(xray_dir))]
        for name in NAMES:
            assert float(row[f"p_{name}"]) == pytest.approx(float(reference[f"p_{name}"]), abs=1e-5)
        assert row["predicted"] == NAMES[int(reference["predicted"])]


def test_onnx_export_gives_pytorchs_three_probabilities(pathogen_run, xray_dir, tmp_path):
    ckpt = best_checkpoint(pathogen_run)
    overrides = [f"ckpt_path={ckpt}", "format=onnx", f"check_inputs={xray_dir / 'test'}"]
    path = export(compose_config(overrides, tmp_path / "export", config_name="export"))
    stored = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert stored["medlit.class_names"] == NAMES and stored["medlit.decision_threshold"] is None
    assert stored["medlit.decision_rule"] == "the most probable class"
    predictor = Predictor.from_checkpoint(ckpt)
    images = np.stack([predictor.read_image(p).numpy() for p in list_inputs([xray_dir / "test"])])
    noise = np.random.default_rng(0).integers(0, 256, (3, 1, 32, 32), dtype=np.uint8)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (images, images[:1], noise):
        probs = session.run(["probabilities"], {"image": batch})[0]
        assert probs.shape == (len(batch), 3)
        assert np.abs(probs - predictor.probabilities(torch.from_numpy(batch)).numpy()).max() <= 1e-4


def test_gradcam_of_every_class_side_by_side(pathogen_run, tmp_path):
    run = load_run(best_checkpoint(pathogen_run))
    result = explain_examples(run.model, run.datamodule, "test", methods=["gradcam"], examples=1)
    figure = result.figures["gradcam_per_class"]
    panels = [ax for ax in figure.axes if ax.images]
    assert len(panels) == len(result.examples) * 4  # the image, then one heat map per class
    titles = [ax.get_title() for ax in panels if ax.get_title().split(" (")[0] in NAMES]
    assert [t.split(" (")[0] for t in titles] == NAMES * len(result.examples)
    heat = [ax.images[1].get_array() for ax in panels if len(ax.images) == 2]
    assert any(not np.allclose(heat[0], other) for other in heat[1:3]), "each class has its own evidence"
    write_explanations(result, tmp_path)
    assert (tmp_path / "gradcam_per_class.png").read_bytes()[:4] == b"\x89PNG"


def test_the_web_app_shows_three_probabilities(pathogen_run, xray_dir):
    explainer = Explainer(Predictor.from_checkpoint(best_checkpoint(pathogen_run)))
    image = next((xray_dir / "test" / "PNEUMONIA").iterdir())
    result = explainer.image(image.read_bytes(), image.name)
    assert list(result["probabilities"]) == NAMES and sum(result["probabilities"].values()) == pytest.approx(1.0)
    assert result["predicted"] == max(result["probabilities"], key=result["probabilities"].get)
    assert result["threshold"] is None and result["overlay"].startswith("data:image/png;base64,")
