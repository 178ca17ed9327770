"""`python train.py ...` as users run it: sweeps, DDP on CPU, and one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_train

pytestmark = pytest.mark.slow

FAST = ["trainer=cpu", "data.num_workers=0", "data.batch_size=32", "callbacks.rich_progress_bar=null"]


def test_sweep_makes_one_run_directory_per_job(medmnist_dir, tmp_path):
    result = run_train(
        "-m",
        "optimizer.lr=1e-4,3e-4",
        "trainer.max_epochs=1",
        f"data.data_dir={medmnist_dir}",
        f"paths.log_dir={tmp_path}",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(tmp_path.glob("train/multiruns/*/[0-9]"))
    assert [job.name for job in jobs] == ["0", "1"]
    for job, lr in zip(jobs, ("0.0001", "0.0003"), strict=True):
        assert f"optimizer.lr={lr}" in (job / ".hydra" / "overrides.yaml").read_text()
        assert "test/auroc" in json.loads((job / "metrics.json").read_text())
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))


def test_organcmnist_fast_dev_run_has_eleven_classes(medmnist_dir, tmp_path):
    result = run_train(
        "data=organcmnist",
        "model=custom_cnn",
        "trainer.fast_dev_run=true",
        f"data.data_dir={medmnist_dir}",
        f"paths.log_dir={tmp_path}",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = next(tmp_path.glob("train/runs/*"))
    assert json.loads((run / "metrics.json").read_text())["test/acc"] >= 0


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
