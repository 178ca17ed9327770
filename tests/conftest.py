from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from medlit.training.run import train
from tests.synthetic import write_aclimdb, write_medmnist_npz, write_xray_folder

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def pytest_configure(config) -> None:
    """Torch computes on one thread here, and so do the processes the tests start (train.py, DDP workers, sweeps'
    jobs, notebook kernels), unless OMP_NUM_THREADS says otherwise. The networks are tiny, so a second thread buys
    little; and on a 2-core machine shared with other work, two threads waiting in OpenMP barriers for each other
    made a MobileNetV2 training step on 32 px images 25-40x slower (3-5 s instead of 0.12 s)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """Generated data sets where every `data=` config looks when `paths.data_dir` is this folder."""
    root = tmp_path_factory.mktemp("data")
    write_medmnist_npz(root / "medmnist" / "pneumoniamnist.npz", num_classes=2)
    write_medmnist_npz(root / "medmnist" / "organcmnist.npz", num_classes=11, counts=(132, 66, 66), seed=1)
    write_aclimdb(root / "imdb", unlabelled=40)
    return root


@pytest.fixture(scope="session")
def medmnist_dir(data_root) -> Path:
    """Generated PneumoniaMNIST and OrganCMNIST files where `data=pneumoniamnist|organcmnist` look."""
    return data_root / "medmnist"


@pytest.fixture(scope="session")
def imdb_dir(data_root) -> Path:
    """A generated folder in the aclImdb layout (40 training and 16 test reviews per class, 40 unlabelled)."""
    return data_root / "imdb"


@pytest.fixture(scope="session")
def xray_dir(tmp_path_factory) -> Path:
    """A generated chest X-ray folder in the Kaggle layout, with a truncated JPEG and an RGBA PNG."""
    return write_xray_folder(tmp_path_factory.mktemp("xray") / "chest_xray")


def compose_config(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """The real `conf/<config_name>.yaml` composed with `overrides`, writing to `output_dir`, ready for
    `train()` (or the task of another entry point)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if not any(o.startswith("paths.log_dir=") for o in overrides):  # nothing is written into the checkout
            cfg.paths.log_dir = str(output_dir / "logs")
        del cfg.hydra
    return cfg


def offline(cfg: DictConfig) -> DictConfig:
    """`cfg` with random initial weights for pretrained models: no download in tests."""
    if "pretrained" in cfg.model:
        cfg.model.pretrained = False
    return cfg


@pytest.fixture
def train_config(tmp_path, data_root, xray_dir):
    """Compose a fast CPU run on the generated data sets (the chest X-ray folder at 32 px)."""

    def make(*overrides: str) -> DictConfig:
        xray = any(o == "data=chest_xray" or o.startswith("experiment=xray_") for o in overrides)
        data = (
            [f"data.data_dir={xray_dir}", f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=32"]
            if xray
            else [f"paths.data_dir={data_root}"]
        )
        base = [
            *data,
            "trainer=cpu",
            "data.num_workers=0",
            "data.batch_size=32",
            "callbacks.rich_progress_bar=null",
        ]
        return offline(compose_config([*base, *overrides], tmp_path / "run"))

    return make


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serve `tmp_path/served` over HTTP on localhost; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def launch_in_process(monkeypatch, main, argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run an entry point's `main` through `medlit.cli.runner.launch` with `argv`, as its command line would, in this
    process: Hydra cleared, and the error-format variables unset (or set from `env`) now and restored afterwards."""
    from medlit.cli.runner import launch

    monkeypatch.setattr(sys, "argv", argv)
    for name in ("HYDRA_FULL_ERROR", "MEDLIT_ONE_LINE_ERRORS"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    GlobalHydra.instance().clear()
    launch(main)


def train_in_process(monkeypatch, *args: str, env: dict[str, str] | None = None) -> None:
    """`train.py <args>` through the command line's own path (Hydra, the run directory, one-line errors, multiruns),
    in this process: what a user's run does, without the seconds a new interpreter spends importing torch."""
    from medlit.cli.train import hydra_main

    launch_in_process(monkeypatch, hydra_main, ["train.py", *args], env)


def run_train(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python train.py <args>` in a subprocess, as a user would (tests' callbacks importable)."""
    return _run([str(ROOT / "train.py"), *args], cwd, timeout)


def _run(args: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


FAST = ["trainer=cpu", "data.num_workers=0", "data.batch_size=32", "callbacks.rich_progress_bar=null"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, medmnist_dir) -> Path:
    """A finished binary run on the generated PneumoniaMNIST: baseline CNN, 3 epochs, threshold by Youden's J."""
    run = tmp_path_factory.mktemp("trained") / "run"
    overrides = [f"data.data_dir={medmnist_dir}", *FAST, "model=baseline_cnn", "model.filters=8"]
    train(compose_config([*overrides, "trainer.max_epochs=3", "optimizer.lr=3e-3", "threshold=youden"], run))
    return run


def best_checkpoint(run: Path) -> Path:
    (found,) = (run / "checkpoints").glob("epoch_*.ckpt")
    return found


@pytest.fixture(scope="session")
def two_run_multirun(tmp_path_factory, medmnist_dir) -> Path:
    """`train.py -m optimizer.lr=0.001,0.003` run as a user would: a multirun directory of two jobs."""
    logs = tmp_path_factory.mktemp("sweep")
    result = run_train(
        "-m", "optimizer.lr=0.001,0.003", f"data.data_dir={medmnist_dir}", *FAST, "model=baseline_cnn",
        "model.filters=8", "trainer.max_epochs=1", f"paths.log_dir={logs}", cwd=logs,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (multirun,) = (logs / "train" / "multiruns").iterdir()
    return multirun


@pytest.fixture(scope="session")
def trained_xray_run(tmp_path_factory, xray_dir) -> Path:
    """A finished run on the generated chest X-ray folder at 32 px: baseline CNN, 2 epochs, Youden threshold."""
    run = tmp_path_factory.mktemp("trained-xray") / "run"
    overrides = [
        "data=chest_xray", f"data.data_dir={xray_dir}", f"data.cache_dir={run.parent / 'cache'}",
        "data.image_size=32", "data.decode_workers=1", *FAST, "model=baseline_cnn", "model.filters=8",
        "trainer.max_epochs=2", "optimizer.lr=3e-3", "threshold=youden", "logger=csv",
    ]  # fmt: skip
    train(compose_config(overrides, run))
    return run


@pytest.fixture(scope="session")
def trained_imdb_run(tmp_path_factory, imdb_dir) -> Path:
    """A finished run on the generated aclImdb folder: a small Transformer, the best of 10 epochs by validation
    loss (validation AUROC is 1 from the first epoch on), Youden threshold."""
    run = tmp_path_factory.mktemp("trained-imdb") / "run"
    overrides = [
        "data=imdb", f"data.data_dir={imdb_dir}", f"data.cache_dir={run.parent / 'cache'}", "data.max_len=32",
        "data.vocab_size=60", *FAST, "data.batch_size=8", "model=text_transformer", "model.d_model=16",
        "model.heads=2", "model.layers=1", "model.ff_dim=32", "trainer.max_epochs=10", "optimizer.lr=1e-2",
        "monitor.metric=val/loss", "monitor.mode=min", "threshold=youden", "logger=csv",
    ]  # fmt: skip
    train(compose_config(overrides, run))
    return run


@pytest.fixture(scope="session")
def finetuned_mobilenetv2_run(tmp_path_factory, xray_dir) -> tuple[Path, dict]:
    """`experiment=xray_mobilenetv2` shortened to one epoch on the frozen backbone, then one fine-tuning blocks.4 on
    (32 px, two batches an epoch), with every epoch's checkpoint kept; and the weights it started from."""
    from tests.helpers import KeepInitialWeights

    run = tmp_path_factory.mktemp("mobilenetv2") / "run"
    overrides = [
        "experiment=xray_mobilenetv2", f"data.data_dir={xray_dir}", f"data.cache_dir={run.parent / 'cache'}",
        "data.image_size=32", "data.decode_workers=1", "data.num_workers=0", "data.batch_size=8", "trainer=cpu",
        "callbacks.rich_progress_bar=null", "callbacks.finetune.freeze_epochs=1", "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "callbacks.model_checkpoint.save_top_k=-1",
        "test=false", "+callbacks.initial._target_=tests.helpers.KeepInitialWeights",
    ]  # fmt: skip
    train(offline(compose_config(overrides, run)))
    return run, dict(KeepInitialWeights.state)


@pytest.fixture(scope="session")
def one_epoch_run(tmp_path_factory, data_root) -> Path:
    """One epoch of the run `train_config()` composes (custom CNN on the generated PneumoniaMNIST, 3 steps of 32
    images): its best and last checkpoints and test report. Tests that train on from it work in a copy."""
    run = tmp_path_factory.mktemp("one-epoch") / "run"
    train(offline(compose_config([f"paths.data_dir={data_root}", *FAST, "trainer.max_epochs=1"], run)))
    return run
