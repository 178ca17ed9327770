"""Runs that die, diverge, meet hostile files or mistyped configs lose nothing and explain themselves."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medlit.errors import MedlitError
from medlit.training.checkpoint import AtomicCheckpointIO, load_checkpoint
from medlit.training.classifier import Classifier
from medlit.training.run import train
from tests.conftest import run_train, train_in_process
from tests.synthetic import write_medmnist_npz

FAST = ["trainer=cpu", "data.batch_size=32", "callbacks.rich_progress_bar=null"]


def run_dir(log_dir: Path) -> Path:
    (found,) = log_dir.glob("train/runs/*")
    return found


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(medmnist_dir, tmp_path, monkeypatch):
    """Killed with SIGKILL in epoch 2 and resumed, a run ends with the same weights, metrics and curves.

    The killed run is a process of its own; the uninterrupted and the resumed runs go through the same command
    line in this one."""
    monkeypatch.chdir(tmp_path)
    common = [
        f"data.data_dir={medmnist_dir}",
        "seed=1",
        "trainer.deterministic=true",
        "trainer.max_epochs=4",
        "trainer.log_every_n_steps=1",
        "data.num_workers=2",  # augmentation in worker processes, persistent across epochs
        *FAST,
    ]
    train_in_process(monkeypatch, *common, f"paths.log_dir={tmp_path / 'whole'}")
    kill = [
        "+callbacks.kill._target_=tests.helpers.KillAt",
        "+callbacks.kill.epoch=2",
        "+callbacks.kill.batch=1",
    ]
    killed = run_train(*common, *kill, f"paths.log_dir={tmp_path / 'killed'}", cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    interrupted = run_dir(tmp_path / "killed")
    assert load_checkpoint(interrupted / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert not (interrupted / "metrics.json").exists()

    train_in_process(monkeypatch, f"resume={interrupted}", "+callbacks.kill=null")
    uninterrupted = run_dir(tmp_path / "whole")
    assert (interrupted / "metrics.json").read_text() == (uninterrupted / "metrics.json").read_text()
    weights = [load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"] for run in (interrupted, uninterrupted)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])

    curves = {}
    for name, run in (("resumed", interrupted), ("whole", uninterrupted)):
        events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        curves[name] = {
            tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in ("val/auroc", "train/loss_step")
        }
    assert [step for step, _ in curves["resumed"]["val/auroc"]] == [2, 5, 8, 11]  # 3 steps an epoch, no repeats
    assert curves["resumed"] == curves["whole"]


def test_resume_needs_a_last_checkpoint(train_config, tmp_path):
    cfg = train_config(f"resume={tmp_path / 'no-such-run'}")
    with pytest.raises(MedlitError, match=r"no-such-run/checkpoints/last\.ckpt does not exist"):
        train(cfg)


@pytest.mark.slow
def test_a_checkpoint_write_cut_short_keeps_the_previous_checkpoint(tmp_path):
    """A writer killed while saving leaves the old file whole: the new one is renamed in only when done."""
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    script = (
        "import sys, torch; from medlit.training.checkpoint import AtomicCheckpointIO; "
        "AtomicCheckpointIO().save_checkpoint({'epoch': 2, 'w': torch.rand(150_000_000)}, sys.argv[1])"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(path)])
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".last.ckpt.*.partial")) and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert list(tmp_path.glob(".last.ckpt.*.partial")), "the kill landed during the write"
    assert load_checkpoint(path)["epoch"] == 1


@pytest.mark.parametrize(
    "data",
    [
        [],
        ["data=imdb", "model=bilstm", "data.bucket_by_length=true", "data.max_len=32", "data.batch_size=16"],
    ],
    ids=["pneumoniamnist", "imdb-bilstm-buckets"],
)
def test_same_seed_in_deterministic_mode_gives_identical_metrics(train_config, tmp_path, data):
    texts = []
    for attempt in range(2):
        cfg = train_config("seed=1", "trainer.deterministic=true", "trainer.max_epochs=2", "data.num_workers=2", *data)
        cfg.paths.output_dir = str(tmp_path / f"attempt{attempt}")
        train(cfg)
        texts.append((tmp_path / f"attempt{attempt}" / "metrics.json").read_text())
    assert texts[0] == texts[1]
    assert json.loads(texts[0])["test/auroc"] > 0.5


@pytest.mark.slow
def test_ddp_on_cpu_gives_the_validation_metrics_of_one_process(tmp_path, monkeypatch):
    """Two gloo processes with half the batch each match one process to 1e-4 (no BatchNorm, dropout,
    shuffling or augmentation to tell them apart); 47 validation images split unevenly across them."""
    data = tmp_path / "data"
    write_medmnist_npz(data / "pneumoniamnist.npz", num_classes=2, counts=(96, 47, 45))
    common = [
        f"data.data_dir={data}",
        "model=baseline_cnn",
        "data.shuffle=false",
        "data.train_transform=null",
        "data.batch_transform=null",
        "trainer.precision=32-true",
        "trainer.max_epochs=2",
        "optimizer.lr=3e-3",
        "seed=5",
        "data.num_workers=0",
        *FAST,
    ]
    ddp_args = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=16"]
    monkeypatch.chdir(tmp_path)
    train_in_process(monkeypatch, *common, f"paths.log_dir={tmp_path / 'single'}")  # one process: this one
    ddp = run_train(*common, *ddp_args, f"paths.log_dir={tmp_path / 'ddp'}", cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    runs = {name: run_dir(tmp_path / name) for name in ("single", "ddp")}
    metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in runs.items()}
    assert metrics["ddp"].keys() == metrics["single"].keys()
    for key, value in metrics["single"].items():
        assert metrics["ddp"][key] == pytest.approx(value, abs=1e-4), key
    curves = {}
    for name, run in runs.items():
        events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        curves[name] = {tag: [e.value for e in events.Scalars(tag)] for tag in ("val/loss", "val/auroc", "val/acc")}
    for tag, values in curves["single"].items():
        assert curves["ddp"][tag] == pytest.approx(values, abs=1e-4), tag
    written = {
        name: sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and "events" not in p.name)
        for name, run in runs.items()
    }
    assert written["ddp"] == written["single"], "rank zero alone writes files"


def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(train_config, tmp_path, monkeypatch):
    loss = Classifier.loss

    def diverge_in_epoch_two(self, logits, target):
        value = loss(self, logits, target)
        return value * float("nan") if self.training and self.current_epoch == 2 else value

    monkeypatch.setattr(Classifier, "loss", diverge_in_epoch_two)
    with pytest.raises(MedlitError, match="the training loss became nan at epoch 2, step 6"):
        train(train_config("trainer.max_epochs=4"))
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_diverged_weights_never_overwrite_last_checkpoint(train_config, tmp_path, monkeypatch):
    forward = Classifier.forward

    def nan_outputs_in_epoch_one(self, x):
        out = forward(self, x)
        return out * float("nan") if not self.training and self.current_epoch == 1 else out

    monkeypatch.setattr(Classifier, "forward", nan_outputs_in_epoch_one)
    with pytest.raises(MedlitError, match="validation loss is not finite at epoch 1"):
        train(train_config("trainer.max_epochs=3"))
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["epoch"] == 0


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(train_config, tmp_path):
    _RunsCode.marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": {}, "payload": _RunsCode()}, handle)
    with pytest.raises(MedlitError, match=r"refusing to load .*evil\.ckpt: it holds objects other than tensors"):
        train(train_config("train=false", f"ckpt_path={evil}"))
    assert not _RunsCode.marker.exists()


def test_a_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "cut.ckpt"
    torch.save({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(MedlitError, match=r"cut\.ckpt is not a readable checkpoint"):
        load_checkpoint(path)


def test_an_unwritable_output_directory_fails_before_training(train_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = train_config()
    cfg.paths.output_dir = str(blocker / "run")
    with pytest.raises(MedlitError, match=r"cannot write to the output directory .*a-file/run"):
        train(cfg)
    assert blocker.read_text() == "not a directory"


def test_a_full_disk_fails_before_training(train_config, tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("Usage", (), {"free": 2**20})())
    with pytest.raises(MedlitError, match=r"only 1 MB free in .*run, and this run's checkpoints and logs need"):
        train(train_config())
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("args", "expected", "code"),
    [
        (
            ["model=resnet9000"],
            "no config 'model/resnet9000'; choose model= one of baseline_cnn, bilstm, custom_cnn",
            2,
        ),
        (
            ["data=mnist"],
            "no config 'data/mnist'; choose data= one of chest_xray, image_table, imdb, organcmnist, pneumoniamnist",
            2,
        ),
        (["trainer.max_epoch=3"], "unknown key 'trainer.max_epoch'; did you mean trainer.max_epochs?", 2),
        (
            ["model.in_channels=3"],
            "model custom_cnn cannot take the inputs of data pneumoniamnist (shape (1, 28, 28)",
            2,
        ),
        (
            ["model=dense_mlp", "model.image_size=64"],
            "model dense_mlp cannot take the inputs of data pneumoniamnist",
            2,
        ),
        (["optimizer.lr=fast"], "the optimizer or scheduler settings are invalid", 2),
    ],
)
def test_config_mistakes_are_one_line_without_traceback(
    medmnist_dir, tmp_path, monkeypatch, capsys, args, expected, code
):
    """Through the command line's own path in this process; tests/test_cli.py runs one mistake in a process of its
    own, as a user sees it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        train_in_process(monkeypatch, *args, f"data.data_dir={medmnist_dir}", f"paths.log_dir={tmp_path}", *FAST)
    assert exit_.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("medlit: error: ")]
    assert expected in line
    assert not list(tmp_path.glob("train/runs/*/checkpoints")), "nothing trained"


def test_hydra_full_error_shows_the_traceback(tmp_path, monkeypatch, capsys):
    """HYDRA_FULL_ERROR=1 lets Hydra's own exception out of the command, which Python reports with its traceback,
    instead of the one line."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingConfigException, match="Could not find 'model/resnet9000'"):
        train_in_process(monkeypatch, "model=resnet9000", env={"HYDRA_FULL_ERROR": "1"})
    assert "medlit: error" not in capsys.readouterr().err


def test_a_requeued_job_continues_from_the_last_checkpoint_in_its_directory(train_config, one_epoch_run, tmp_path):
    shutil.copytree(one_epoch_run, tmp_path / "run")  # the first attempt's directory: one epoch done
    train(train_config("trainer.max_epochs=2"))  # same directory, as a SLURM requeue of the same job
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 6
