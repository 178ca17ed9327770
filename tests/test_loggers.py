"""The loggers users ask for beside TensorBoard and CSV: MLflow with a local store, Weights & Biases offline."""

from __future__ import annotations

import json

import pytest

from medlit.training.run import train

TINY = ["model=baseline_cnn", "model.filters=4", "trainer.max_epochs=2", "callbacks.rich_model_summary=null"]


def test_mlflow_keeps_every_epoch_and_the_test_report_in_a_local_store(train_config, tmp_path):
    logs = tmp_path / "logs"
    cfg = train_config("logger=mlflow", f"paths.log_dir={logs}", *TINY)
    train(cfg)
    from mlflow import MlflowClient

    store = logs / "mlflow" / "mlflow.db"
    assert store.is_file() and not (tmp_path / "mlruns").exists()
    client = MlflowClient(f"sqlite:///{store}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "train"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["run_dir"] == cfg.paths.output_dir
    assert len(client.get_metric_history(run.info.run_id, "val/auroc")) == 2  # one value per epoch
    reported = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run.data.metrics["test/auroc"] == pytest.approx(reported["test/auroc"])
    assert float(run.data.params["run_config/optimizer/lr"]) == cfg.optimizer.lr  # the run's settings


def test_wandb_writes_an_offline_run_into_each_run_directory(train_config, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    train(train_config("logger=wandb", *TINY))
    second = train_config("logger=wandb", *TINY, "seed=1")  # the next job of a multirun, in this process
    second.paths.output_dir = str(tmp_path / "second")
    train(second)
    assert len(list((tmp_path / "second" / "wandb").glob("offline-run-*"))) == 1, "a run of its own"
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (events,) = offline.glob("run-*.wandb")  # the run's records, what `wandb sync` uploads
    records = events.read_bytes()
    reported = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("test/auroc", "test/acc"):  # each metric's key and its value as JSON, as W&B stores them
        assert key.encode() in records and json.dumps(reported[key]).encode() in records, key
    assert b"val/auroc" in records and b"run_config" in records
