"""Ensembles and test-time augmentation: averages of class probabilities over members and views of each image."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

from medlit.cli.ensemble import build_ensemble
from medlit.cli.ensemble import hydra_main as ensemble_main
from medlit.cli.eval import evaluate_checkpoint
from medlit.cli.export import export
from medlit.deploy.ensemble import VIEWS, Ensemble
from medlit.deploy.predictor import Predictor
from medlit.deploy.rebuild import load_run
from medlit.deploy.serve import Explainer
from medlit.errors import ConfigError, MedlitError
from medlit.training.checkpoint import load_checkpoint
from medlit.training.run import train
from tests.conftest import FAST, best_checkpoint, compose_config, launch_in_process


def test_views_flip_and_zoom_images_as_named():
    image = torch.zeros(1, 1, 20, 20, dtype=torch.uint8)
    image[..., 5:15, 2:6] = 200  # a bar left of centre
    assert torch.equal(VIEWS["identity"](image), image)
    assert torch.equal(VIEWS["hflip"](image)[..., 5:15, 14:18], image[..., 5:15, 2:6])
    plain = torch.full((2, 1, 20, 20), 90, dtype=torch.uint8)
    assert torch.equal(VIEWS["zoom_in"](plain), plain), "a crop of a flat image is flat"
    framed = VIEWS["zoom_out"](plain)  # 18 x 18 of the image in a black frame of one pixel
    assert framed.dtype == torch.uint8 and framed[..., 1:19, 1:19].eq(90).all() and framed[..., 0, :].eq(0).all()


class Tilted(torch.nn.Module):
    """A 'network' whose logit is the mean of the left half of the image minus that of the right half."""

    def forward(self, x):
        half = x.shape[-1] // 2
        return (x[..., :half].mean(dim=(1, 2, 3)) - x[..., half:].mean(dim=(1, 2, 3))).unsqueeze(1) * 4


def classifier(net):
    from medlit.training.classifier import Classifier

    return Classifier(net, num_classes=2, input_mean=[0.0], input_std=[1.0]).eval()


def test_test_time_augmentation_averages_the_views_and_one_identity_view_changes_nothing():
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    model = classifier(Tilted())
    plain = model.class_probabilities(images)
    assert torch.equal(Ensemble([model], ["identity"]).class_probabilities(images), plain)
    both = Ensemble([model], ["identity", "hflip"]).class_probabilities(images)
    by_hand = (plain + model.class_probabilities(images.flip(-1))) / 2
    assert torch.allclose(both, by_hand)
    assert torch.allclose(both[:, 1], torch.full((6,), 0.5)), "the flipped view cancels this network's tilt"


def test_an_ensemble_is_the_weighted_mean_of_its_members():
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    members = [classifier(Tilted()), classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1)))]
    ensemble = Ensemble(members, weights=[3, 1], threshold=0.3)
    expected = 0.75 * members[0].class_probabilities(images) + 0.25 * members[1].class_probabilities(images)
    assert torch.allclose(ensemble.class_probabilities(images), expected)
    assert torch.equal(ensemble.predict_labels(expected[:, 1]), (expected[:, 1] >= 0.3).long())
    with pytest.raises(ConfigError, match=r"tta=\['mirror'\]: choose one or more of identity, hflip"):
        Ensemble(members, ["mirror"])


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory, xray_dir, trained_xray_run):
    """Three chest X-ray runs that differ in their seed only (32 px, baseline CNN, 2 epochs): the shared
    `trained_xray_run` (seed 42) and two more."""
    runs = [trained_xray_run]
    for seed in (1, 2):
        run = tmp_path_factory.mktemp(f"seed{seed}") / "run"
        overrides = [
            "data=chest_xray", f"data.data_dir={xray_dir}", f"data.cache_dir={run.parent / 'cache'}",
            "data.image_size=32", "data.decode_workers=1", *FAST, "model=baseline_cnn", "model.filters=8",
            "trainer.max_epochs=2", "optimizer.lr=3e-3", "threshold=youden", "logger=csv", f"seed={seed}",
        ]  # fmt: skip
        train(compose_config(overrides, run))
        runs.append(run)
    return runs


def test_an_ensemble_of_three_runs_is_reported_on_validation_and_test_and_saved_as_one_checkpoint(
    three_seeds, xray_dir, tmp_path, monkeypatch
):
    """`medlit ensemble` through its command line (Hydra and the run directory under the log folder)."""
    ckpts = [best_checkpoint(run) for run in three_seeds]
    argv = [
        "medlit ensemble", f"ckpt_paths=[{','.join(map(str, ckpts))}]", "threshold=youden", "bootstrap.resamples=200",
        "logger=csv", f"paths.log_dir={tmp_path / 'logs'}",
    ]  # fmt: skip
    launch_in_process(monkeypatch, ensemble_main, argv)
    (out,) = (tmp_path / "logs" / "ensemble" / "runs").iterdir()
    path = out / "ensemble.ckpt"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"val/auroc", "test/auroc", "test/ece", "test/brier", "test/auroc_ci_low", "test/threshold"} <= set(metrics)
    table = (out / "members.md").read_text()
    assert table.count("| member ") == 3 and "| ensemble |" in table

    # the ensemble's probabilities are the mean of its members', at its own threshold chosen on validation
    ensemble = load_run(path).model
    members = [load_run(ckpt).model for ckpt in ckpts]
    images = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = sum(m.class_probabilities(images) for m in members) / 3
    assert torch.allclose(ensemble.class_probabilities(images), expected, atol=1e-6)
    assert float(ensemble.decision_threshold) == pytest.approx(metrics["test/threshold"])

    # predict and the web app read it like any checkpoint, Grad-CAM averaged over the members
    predictor = Predictor.from_checkpoint(path)
    (image_file,) = sorted((xray_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[:1]
    (prediction,) = predictor.predict_files([image_file])
    with torch.no_grad():
        by_hand = sum(m.class_probabilities(predictor.read_image(image_file)[None]) for m in members) / 3
    assert prediction.probabilities == pytest.approx(by_hand[0].tolist(), abs=1e-6)
    shown = Explainer(predictor).image(image_file.read_bytes(), image_file.name)
    assert shown["probabilities"]["PNEUMONIA"] == pytest.approx(by_hand[0, 1].item(), abs=1e-6)
    assert shown["overlay"].startswith("data:image/png;base64,")

    # evaluating the saved ensemble again gives its test report
    again = evaluate_checkpoint(
        compose_config([f"ckpt_path={path}", "bootstrap.resamples=200"], tmp_path / "eval", "eval")
    )
    assert again == pytest.approx(metrics["test/auroc"])

    # and it exports as one ONNX graph that gives PyTorch's probabilities
    onnx_path = export(
        compose_config([f"ckpt_path={path}", "check_inputs=" + str(xray_dir / "test")], tmp_path / "export", "export")
    )
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = images.numpy()
    assert np.abs(session.run(["probabilities"], {"image": batch})[0] - expected.numpy()).max() < 1e-4
    assert json.loads(onnx_path.with_suffix(".json").read_text())["members"] == 3


def test_eval_with_an_identity_view_repeats_plain_eval(trained_xray_run, tmp_path):
    ckpt = best_checkpoint(trained_xray_run)
    fast = "bootstrap.resamples=100"
    plain = evaluate_checkpoint(compose_config([f"ckpt_path={ckpt}", fast], tmp_path / "plain", "eval"))
    viewed = evaluate_checkpoint(
        compose_config([f"ckpt_path={ckpt}", fast, "tta=[identity]"], tmp_path / "tta", "eval")
    )
    assert viewed == plain
    rows = [(tmp_path / name / "predictions_test.csv").read_text() for name in ("plain", "tta")]
    assert rows[0] == rows[1]
    flipped = evaluate_checkpoint(
        compose_config([f"ckpt_path={ckpt}", fast, "tta=[identity,hflip]"], tmp_path / "flip", "eval")
    )
    assert (tmp_path / "flip" / "predictions_test.csv").read_text() != rows[0], "a second view counts"
    assert 0 <= flipped <= 1


def test_members_that_take_other_inputs_are_refused(trained_xray_run, three_seeds, tmp_path):
    other = tmp_path / "other.ckpt"
    checkpoint = load_checkpoint(best_checkpoint(three_seeds[1]))
    checkpoint["hyper_parameters"]["run_config"]["data"]["image_size"] = 64
    torch.save(checkpoint, other)
    cfg = compose_config([f"ckpt_paths=[{best_checkpoint(trained_xray_run)},{other}]"], tmp_path / "e", "ensemble")
    with pytest.raises(MedlitError, match=r"member 1 was trained on data.image_size=64, the first member on 32"):
        build_ensemble(cfg)


def test_a_text_model_refuses_test_time_augmentation(trained_imdb_run):
    from omegaconf import OmegaConf

    from medlit.deploy.rebuild import rebuild_classifier

    run = rebuild_classifier(OmegaConf.create({"ckpt_path": str(best_checkpoint(trained_imdb_run))}), named=[])
    with pytest.raises(ConfigError, match=r"test-time augmentation applies to images; this is a text model"):
        Predictor(run, tta=["identity", "hflip"])
