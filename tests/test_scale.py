"""Sweeps, Optuna searches, cross-validation folds and launchers, through Hydra's and Lightning's own machinery."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch

from medlit.data.medmnist import MedMNISTDataModule
from medlit.data.splits import cross_validation_fold
from medlit.errors import ConfigError
from tests.conftest import ROOT, run_train

FAST = ["trainer=cpu", "data.num_workers=0", "data.batch_size=32", "callbacks.rich_progress_bar=null"]


def trial_states(database) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [state for (state,) in connection.execute("SELECT state FROM trials ORDER BY number")]


@pytest.mark.slow
def test_optuna_search_survives_a_failing_trial_and_resumes(medmnist_dir, tmp_path):
    search = ["hparams_search=optuna", "trainer.fast_dev_run=true", f"data.data_dir={medmnist_dir}",
              f"paths.log_dir={tmp_path}", *FAST]  # fmt: skip
    first = run_train(*search, "hydra.sweeper.n_trials=4", "+callbacks.fail._target_=tests.helpers.FailJob",
                      "+callbacks.fail.job=1", cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    database = tmp_path / "optuna" / "train_pneumoniamnist_custom_cnn.db"
    assert trial_states(database) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    output = first.stdout + first.stderr
    assert "Failed experiment: CUDA out of memory (simulated)" in output
    assert "Best value:" in output

    again = run_train(*search, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(trial_states(database)) == 6, "the second search continued the stored study"


@pytest.mark.slow
def test_a_failing_job_does_not_stop_a_grid_sweep(medmnist_dir, tmp_path):
    result = run_train("-m", "data.size=32,28", "trainer.max_epochs=1", f"data.data_dir={medmnist_dir}",
                       f"paths.log_dir={tmp_path}", *FAST, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "medlit: error: data.size=32 is not a MedMNIST size" in result.stderr
    (sweep,) = tmp_path.glob("train/multiruns/*")
    assert not (sweep / "0" / "metrics.json").exists()
    assert json.loads((sweep / "1" / "metrics.json").read_text())["test/auroc"] >= 0


@pytest.mark.slow
def test_submitit_local_launcher_runs_each_seed(medmnist_dir, tmp_path):
    result = run_train("-m", "hydra/launcher=submitit_local", "seed=1,2", "trainer.max_epochs=1",
                       f"data.data_dir={medmnist_dir}", f"paths.log_dir={tmp_path}", *FAST, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = tmp_path.glob("train/multiruns/*")
    for job, seed in (("0", 1), ("1", 2)):
        assert "test/auroc" in json.loads((sweep / job / "metrics.json").read_text())
        assert f"seed={seed}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
    assert list((sweep / ".submitit").glob("*/*_submitted.pkl")), "the jobs went through submitit"


def test_runs_started_together_get_their_own_directories(tmp_path):
    command = [sys.executable, str(ROOT / "train.py"), "train=false", "test=false", "trainer=cpu",
               f"paths.log_dir={tmp_path}", "data.data_dir=unused"]  # fmt: skip
    runs = [subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=120) == 0, run.stderr.read().decode()[-2000:]
    assert len(list(tmp_path.glob("train/runs/*/.hydra"))) == 2


def test_folds_partition_the_pooled_training_data(medmnist_dir):
    pooled = 96 + 48
    seen = []
    for fold in range(5):
        dm = MedMNISTDataModule("pneumoniamnist", str(medmnist_dir), num_folds=5, fold=fold)
        dm.setup("fit")
        assert len(dm.train_set) + len(dm.val_set) == pooled
        assert len(dm.test_set) == 48, "the test split is never part of the folds"
        counts = torch.bincount(dm.val_set.labels, minlength=2)
        assert abs(counts[0] - counts[1]) <= 1, "each fold keeps the 1:1 class ratio"
        seen.append(dm.val_set.images.flatten(1))
    validation = torch.cat(seen)
    assert len(validation) == pooled and len(torch.unique(validation, dim=0)) == pooled


def test_grouped_folds_keep_each_patient_in_one_validation_fold():
    rng = np.random.default_rng(0)
    patients = np.repeat([f"person{i}" for i in range(40)], rng.integers(1, 5, 40))
    labels = np.array([int(p[6:]) % 3 == 0 for p in patients], dtype=int)
    where = {}
    for fold in range(5):
        train, val = cross_validation_fold(labels, 5, fold, seed=3, groups=patients)
        assert not set(patients[train]) & set(patients[val])
        for patient in set(patients[val]):
            where.setdefault(patient, []).append(fold)
    assert sorted(where) == sorted(set(patients)) and all(len(f) == 1 for f in where.values())


def test_a_fold_outside_the_folds_is_explained():
    with pytest.raises(ConfigError, match=r"data.fold=5 is not one of 0..4"):
        cross_validation_fold([0, 1] * 10, 5, 5)
