"""`python train.py ...` as users run it: sweeps, an eleven-class run, and one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.conftest import FAST, run_train, train_in_process

ORGANS = [
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
    "lung-right", "pancreas", "spleen",
]  # fmt: skip


@pytest.mark.slow
def test_sweep_makes_one_run_directory_per_job(two_run_multirun):
    """`train.py -m optimizer.lr=0.001,0.003` in a process of its own (the session's sweep)."""
    jobs = sorted(two_run_multirun.glob("[0-9]"))
    assert [job.name for job in jobs] == ["0", "1"]
    for job, lr in zip(jobs, ("0.001", "0.003"), strict=True):
        assert f"optimizer.lr={lr}" in (job / ".hydra" / "overrides.yaml").read_text()
        assert "test/auroc" in json.loads((job / "metrics.json").read_text())
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))


def test_organcmnist_fast_dev_run_has_eleven_classes(medmnist_dir, tmp_path, monkeypatch):
    """One batch of each split through the command line; the test report covers the whole test split (66 images,
    6 of each organ as generated) with one probability per organ."""
    monkeypatch.chdir(tmp_path)
    train_in_process(
        monkeypatch, "data=organcmnist", "model=custom_cnn", "trainer.fast_dev_run=true",
        f"data.data_dir={medmnist_dir}", f"paths.log_dir={tmp_path}", *FAST,
    )  # fmt: skip
    (run,) = tmp_path.glob("train/runs/*")
    with open(run / "predictions_test.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 66
    columns = [f"p_{organ}" for organ in ORGANS]
    assert [c for c in rows[0] if c.startswith("p_")] == columns
    probs = np.array([[float(row[c]) for c in columns] for row in rows])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs > 0).all()
    assert sorted(int(row["target"]) for row in rows) == sorted(list(range(11)) * 6)
    assert [int(row["predicted"]) for row in rows] == probs.argmax(axis=1).tolist()
    with open(run / "classification_report_test.csv") as handle:
        report = {row["class"]: row for row in csv.DictReader(handle)}
    assert [name for name in report if name in ORGANS] == ORGANS
    assert all(int(report[organ]["support"]) == 6 for organ in ORGANS)
    metrics = json.loads((run / "metrics.json").read_text())
    accuracy = np.mean(probs.argmax(axis=1) == [int(row["target"]) for row in rows])
    assert metrics["test/acc"] == pytest.approx(accuracy)
    assert "test/threshold" not in metrics, "a multi-class model predicts the most probable class"


@pytest.mark.slow
def test_missing_data_without_network_is_one_line_without_traceback(tmp_path):
    result = run_train(
        f"data.data_dir={tmp_path / 'nothing'}",
        "data.url=http://127.0.0.1:9/pneumoniamnist.npz",
        f"paths.log_dir={tmp_path}",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("medlit: error: ")
    assert str(tmp_path / "nothing" / "pneumoniamnist.npz") in errors[0]
    assert "http://127.0.0.1:9/pneumoniamnist.npz" in errors[0]
    assert "data.data_dir" in errors[0] and "data.url" in errors[0]
