"""Whole runs through `medlit.training.run.train`, composed from the real configs, on generated MedMNIST files."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tokenizers import Tokenizer

from medlit.training.run import train
from tests.conftest import CONF
from tests.test_models import IMAGE_MODELS, TEXT_MODELS

METRICS = {"acc", "precision", "recall", "specificity", "f1", "auroc", "loss"}


@pytest.mark.parametrize(
    ("data", "model"),
    [
        ("pneumoniamnist", "custom_cnn"),
        ("pneumoniamnist", "baseline_cnn"),
        ("pneumoniamnist", "dense_mlp"),
        ("organcmnist", "custom_cnn"),
    ],
)
def test_fast_dev_run(train_config, data, model, tmp_path):
    cfg = train_config(f"data={data}", f"model={model}", "debug=fdr")
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {f"test/{m}" for m in METRICS} <= set(metrics)


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_text_fast_dev_run(train_config, model, tmp_path):
    train(train_config("data=imdb", f"model={model}", "debug=fdr", "data.max_len=32"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {f"test/{m}" for m in METRICS} <= set(metrics)


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_chest_xray_fast_dev_run(train_config, model, tmp_path):
    """Every image network as a three-class task (normal, bacterial, viral: `data.labels=pathogen`) on the generated
    Kaggle-layout folder (one truncated JPEG, one RGBA PNG), at 32 px. The two-class task runs through the
    reference X-ray experiments in `test_every_experiment_runs`."""
    train(train_config("data=chest_xray", "data.labels=pathogen", f"model={model}", "debug=fdr", "data.batch_size=4"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {f"test/{m}" for m in METRICS} <= set(metrics)
    assert {f"test/recall/{name}" for name in ("NORMAL", "BACTERIAL", "VIRAL")} <= set(metrics)


def test_a_text_run_keeps_its_vocabulary_and_a_checkpoint_is_tested_with_it(train_config, tmp_path):
    common = ["data=imdb", "model=fasttext", "data.vocab_size=20", "data.max_len=32", "data.batch_size=16"]
    train(train_config(*common, "trainer.max_epochs=4", "optimizer.lr=0.05"))
    run = tmp_path / "run"
    first = json.loads((run / "metrics.json").read_text())
    assert first["test/acc"] > 0.8, "the generated sentiment words are easy to learn"
    best = next((run / "checkpoints").glob("epoch_*.ckpt"))
    saved = torch.load(best, weights_only=True)["IMDBDataModule"]["tokenizer"]
    assert Tokenizer.from_file(str(run / "tokenizer.json")).to_str() == saved

    # another validation split gives another vocabulary of the same size; the checkpoint brings its own
    dm = instantiate(train_config(*common, "data.split_seed=7").data)
    dm.setup()
    assert dm.tokenizer.to_str() != saved
    (run / "metrics.json").unlink()
    train(train_config(*common, "data.split_seed=7", "train=false", f"ckpt_path={best}"))
    again = json.loads((run / "metrics.json").read_text())
    assert again["test/acc"] == pytest.approx(first["test/acc"])
    assert again["test/auroc"] == pytest.approx(first["test/auroc"])
    assert Tokenizer.from_file(str(run / "tokenizer.json")).to_str() == saved


def test_run_selects_on_validation_tests_once_and_logs_to_tensorboard(train_config, tmp_path):
    cfg = train_config("trainer.max_epochs=4", "optimizer.lr=3e-3", "scheduler=reduce_on_plateau")
    best_val = train(cfg)
    run = tmp_path / "run"

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/auroc"] == pytest.approx(best_val)
    assert metrics["test/auroc"] > 0.8, "the generated classes are easy to tell apart"
    best = [p for p in (run / "checkpoints").glob("epoch_*.ckpt")]
    assert len(best) == 1 and (run / "checkpoints" / "last.ckpt").exists()
    checkpoint = torch.load(best[0], weights_only=True)
    assert checkpoint["hyper_parameters"]["run_config"]["model"]["_target_"] == "medlit.models.CustomCNN"
    for png in ("confusion_matrix_test.png", "roc_test.png"):
        assert (run / "figures" / png).read_bytes()[:4] == b"\x89PNG"

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for stage in ("train", "val", "test"):
        assert {f"{stage}/auroc", f"{stage}/acc"} <= scalars, stage
    assert {"train/loss_epoch", "val/loss", "test/loss", "lr-Adam", "hp/test_auroc"} <= scalars
    assert len(events.Scalars("val/auroc")) == 4
    assert {"test/confusion_matrix", "test/roc", "val/confusion_matrix"} <= set(events.Tags()["images"])
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams
    assert b"optimizer/lr" in hparams["_hparams_/session_start_info"]


def test_testing_a_saved_checkpoint_without_training(train_config, tmp_path):
    train(train_config("trainer.max_epochs=1"))
    first = json.loads((tmp_path / "run" / "metrics.json").read_text())
    (tmp_path / "run" / "metrics.json").unlink()
    ckpt = next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))
    train(train_config("train=false", f"ckpt_path={ckpt}"))
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert again["test/auroc"] == pytest.approx(first["test/auroc"])
    assert again["test/acc"] == pytest.approx(first["test/acc"])


def test_resume_from_checkpoint_continues_the_epoch_count(train_config, tmp_path):
    train(train_config("trainer.max_epochs=1"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3  # 96 images, batches of 32
    train(train_config("trainer.max_epochs=2", f"ckpt_path={last}"))
    assert torch.load(last, weights_only=True)["global_step"] == 6


def test_bf16_mixed_precision_on_cpu(train_config, tmp_path):
    train(train_config("debug=fdr", "trainer.precision=bf16-mixed"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/loss"] > 0


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_runs(train_config, experiment, tmp_path):
    train(train_config(f"experiment={experiment}", "debug=fdr"))
    assert (tmp_path / "run" / "metrics.json").exists()


def test_the_weight_average_is_validated_kept_and_tested(train_config, tmp_path):
    train(train_config("model=dense_mlp", "callbacks=[default,ema]", "callbacks.ema.decay=0.5", "trainer.max_epochs=2"))
    checkpoint = torch.load(next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")), weights_only=True)
    averaged, trained = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == trained.keys()
    weights = [k for k, v in averaged.items() if k.startswith("net.") and v.is_floating_point()]
    assert weights and any(not torch.equal(averaged[k], trained[k]) for k in weights)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/loss"] > 0


def test_organcmnist_trains_an_eleven_class_head(train_config, tmp_path):
    train(train_config("data=organcmnist", "trainer.max_epochs=1"))
    checkpoint = torch.load(next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")), weights_only=True)
    head = [v for k, v in checkpoint["state_dict"].items() if k.startswith("net.head.") and k.endswith("weight")]
    assert head[-1].shape == (11, 256)
    assert checkpoint["hyper_parameters"]["num_classes"] == 11
    assert len(checkpoint["hyper_parameters"]["class_names"]) == 11
