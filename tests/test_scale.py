"""Sweeps, Optuna searches, cross-validation folds and launchers, through Hydra's and Lightning's own machinery."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medlit.data.medmnist import MedMNISTDataModule
from medlit.data.splits import cross_validation_fold
from medlit.errors import ConfigError
from tests.conftest import FAST, ROOT, train_in_process

# each job writes the id of the process that ran it into its directory
WRITE_PID = ["+callbacks.pid._target_=tests.helpers.WritePid", "+callbacks.pid.path=${paths.output_dir}/pid"]


def trial_states(database) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [state for (state,) in connection.execute("SELECT state FROM trials ORDER BY number")]


@pytest.mark.slow
def test_optuna_search_survives_a_failing_trial_and_resumes(medmnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    search = ["hparams_search=optuna", "trainer.fast_dev_run=true", f"data.data_dir={medmnist_dir}",
              f"paths.log_dir={tmp_path}", *FAST]  # fmt: skip
    train_in_process(monkeypatch, *search, "hydra.sweeper.n_trials=4", "+callbacks.fail._target_=tests.helpers.FailJob",
                     "+callbacks.fail.job=1")  # fmt: skip
    database = tmp_path / "optuna" / "train_pneumoniamnist_custom_cnn.db"
    assert trial_states(database) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    output = "".join(capsys.readouterr())
    assert "Failed experiment: CUDA out of memory (simulated)" in output
    assert "Best value:" in output

    train_in_process(monkeypatch, *search, "hydra.sweeper.n_trials=2")
    assert len(trial_states(database)) == 6, "the second search continued the stored study"


@pytest.mark.slow
def test_a_failing_job_does_not_stop_a_grid_sweep(medmnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        train_in_process(monkeypatch, "-m", "data.size=32,28", "trainer.max_epochs=1", f"data.data_dir={medmnist_dir}",
                         f"paths.log_dir={tmp_path}", *FAST)  # fmt: skip
    assert exit_.value.code == 1
    assert "medlit: error: data.size=32 is not a MedMNIST size" in capsys.readouterr().err
    (sweep,) = tmp_path.glob("train/multiruns/*")
    assert not (sweep / "0" / "metrics.json").exists()
    assert json.loads((sweep / "1" / "metrics.json").read_text())["test/auroc"] >= 0


def pid_files(sweep: Path) -> dict[str, int]:
    return {job.name: int((job / "pid").read_text()) for job in sorted(sweep.glob("[0-9]"))}


@pytest.mark.slow
def test_submitit_local_launcher_runs_each_seed(medmnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the jobs' processes import the tests' callback
    train_in_process(monkeypatch, "-m", "hydra/launcher=submitit_local", "seed=1,2", "trainer.max_epochs=1",
                     f"data.data_dir={medmnist_dir}", f"paths.log_dir={tmp_path}", *FAST, *WRITE_PID)  # fmt: skip
    (sweep,) = tmp_path.glob("train/multiruns/*")
    for job, seed in (("0", 1), ("1", 2)):
        assert "test/auroc" in json.loads((sweep / job / "metrics.json").read_text())
        assert f"seed={seed}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
    assert list((sweep / ".submitit").glob("*/*_submitted.pkl")), "the jobs went through submitit"
    assert os.getpid() not in pid_files(sweep).values() and len(pid_files(sweep)) == 2, (
        "each job in a process of its own"
    )


@pytest.mark.slow
def test_joblib_launcher_runs_each_job_in_a_worker_process(medmnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the workers import the tests' callback
    train_in_process(monkeypatch, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=1e-3,3e-3",
                     "trainer.max_epochs=1", "model=baseline_cnn", "model.filters=4", f"data.data_dir={medmnist_dir}",
                     f"paths.log_dir={tmp_path}", *FAST, *WRITE_PID)  # fmt: skip
    assert "Joblib.Parallel(n_jobs=2" in "".join(capsys.readouterr())
    (sweep,) = tmp_path.glob("train/multiruns/*")
    for job, lr in (("0", "0.001"), ("1", "0.003")):
        assert f"optimizer.lr={lr}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert 0 <= metrics["test/auroc"] <= 1
    pids = pid_files(sweep)
    assert len(pids) == 2 and os.getpid() not in pids.values(), "the jobs ran in joblib's worker processes"


class Submitted(Exception):
    """Raised instead of calling sbatch: carries the batch script submitit wrote."""


def test_slurm_launcher_sizes_its_jobs_from_the_trainer(tmp_path, monkeypatch):
    """`hydra/launcher=slurm` with 2 nodes of 4 devices asks SLURM for one task and one GPU per device on each of 2
    nodes, as Lightning's DDP expects under SLURM: the batch script submitit writes says so."""
    import submitit.slurm.slurm as slurm

    written = slurm.SlurmExecutor._make_submission_file_text

    def intercept(self, command, uid):
        raise Submitted(written(self, command, uid))

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # as if srun were here
    monkeypatch.setattr(slurm.SlurmExecutor, "_make_submission_file_text", intercept)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Submitted) as submitted:
        train_in_process(
            monkeypatch,
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "seed=1,2,3",
            f"paths.log_dir={tmp_path}",
        )
    script = str(submitted.value).splitlines()
    # the three seeds as one job array, all three at once (array_parallelism 16 caps nothing here)
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--array=0-2%3",
                 "--cpus-per-task=8", "--mem=32GB", "--time=240"):  # fmt: skip
        assert f"#SBATCH {line}" in script, line
    assert not list(tmp_path.glob("train/multiruns/*/0")), "nothing ran"


@pytest.mark.slow
def test_runs_started_together_get_their_own_directories(tmp_path):
    """Two processes started at the same moment: their run directories differ by the process id."""
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
