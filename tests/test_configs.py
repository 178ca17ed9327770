"""Every config of every group composes and builds what it says it builds, with the settings its file documents."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import (
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    RichModelSummary,
    RichProgressBar,
)
from pytorch_lightning.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.profilers import SimpleProfiler
from pytorch_lightning.strategies import DDPStrategy

from medlit.data.chest_xray import ChestXrayDataModule
from medlit.data.imdb import IMDBDataModule
from medlit.data.medmnist import MedMNISTDataModule
from medlit.training import hardware
from medlit.training.callbacks import Throughput, TwoStageFinetuning
from medlit.training.checkpoint import AtomicCheckpointIO
from medlit.training.run import build_classifier, instantiate_all
from tests.conftest import CONF, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# what each data config documents: the module, its classes and the input sizes the model configs read from ${data}
DATA = {
    "pneumoniamnist": (MedMNISTDataModule, {"num_classes": 2, "in_channels": 1, "image_size": 28, "batch_size": 128}),
    "organcmnist": (MedMNISTDataModule, {"num_classes": 11, "in_channels": 1, "image_size": 28, "batch_size": 128}),
    "chest_xray": (ChestXrayDataModule, {"num_classes": 2, "in_channels": 1, "image_size": 224, "batch_size": 32}),
    "imdb": (IMDBDataModule, {"num_classes": 2, "vocab_size": 10000, "max_len": 200, "batch_size": 32}),
}


def test_every_data_config_is_checked():
    assert sorted(DATA) == options("data")


@pytest.mark.parametrize("name", sorted(DATA))
def test_data(name, tmp_path):
    kind, expected = DATA[name]
    dm = instantiate(compose_config([f"data={name}"], tmp_path).data)
    assert type(dm) is kind
    assert {key: getattr(dm, key) for key in expected} == expected
    if name == "organcmnist":
        assert len(dm.class_names) == 11 and dm.class_names[0] == "bladder"


# optimizer: (class, learning rate, other settings its file documents)
OPTIMIZERS = {
    "adagrad": (torch.optim.Adagrad, 0.3, {"weight_decay": 0.0}),
    "adam": (torch.optim.Adam, 1e-3, {"weight_decay": 0.0}),
    "adamw": (torch.optim.AdamW, 1e-3, {"weight_decay": 1e-2}),
    "sgd": (torch.optim.SGD, 1e-2, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.0}),
}


def test_every_optimizer_and_scheduler_config_is_checked():
    assert sorted(OPTIMIZERS) == options("optimizer")
    assert sorted([*SCHEDULES, "none"]) == options("scheduler")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer(name, tmp_path):
    kind, lr, settings = OPTIMIZERS[name]
    opt = instantiate(compose_config([f"optimizer={name}"], tmp_path).optimizer)(
        params=[torch.nn.Parameter(torch.ones(2))]
    )
    assert type(opt) is kind
    (group,) = opt.param_groups
    assert group["lr"] == lr and {key: group[key] for key in settings} == settings


def _plateau(opt, sched) -> list[float]:
    """Validation AUROC rises for 5 epochs, then stays flat for 4: only the flat stretch may lower the rate."""
    rates = []
    for score in (0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9):
        opt.step()
        sched.step(score)
        rates.append(opt.param_groups[0]["lr"])
    return rates


def _epochs(opt, sched, count: int) -> list[float]:
    rates = []
    for _ in range(count):
        opt.step()
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    return rates


def _cosine(epoch: int) -> float:
    return 1e-6 + (1e-3 - 1e-6) * (1 + math.cos(math.pi * epoch / 30)) / 2  # T_max = max_epochs = 30


# the learning rate (Adam's 1e-3 at the start) after each epoch, worked out from each schedule's documentation
SCHEDULES = {
    "cosine": (lambda o, s: _epochs(o, s, 30), [_cosine(e) for e in range(1, 31)]),
    "exponential": (lambda o, s: _epochs(o, s, 3), [9e-4, 8.1e-4, 7.29e-4]),
    # mode max (the monitored AUROC): rising scores never lower it; the third epoch without a better score
    # exceeds patience 2 and halves it
    "reduce_on_plateau": (_plateau, [1e-3] * 7 + [5e-4] * 2),
}


@pytest.mark.parametrize("name", options("scheduler"))
def test_scheduler_steps_the_learning_rate_once_an_epoch(name, tmp_path):
    cfg = compose_config([f"scheduler={name}"], tmp_path)
    model = build_classifier(cfg, num_classes=2, class_names=["a", "b"], run_config={})
    configured = model.configure_optimizers()
    if name == "none":
        assert not cfg.scheduler and "lr_scheduler" not in configured
        return
    scheduling = configured["lr_scheduler"]
    assert scheduling["interval"] == "epoch" and scheduling["monitor"] == "val/auroc"
    run, expected = SCHEDULES[name]
    assert run(configured["optimizer"], scheduling["scheduler"]) == pytest.approx(expected, rel=1e-6)
    if name == "cosine":
        assert expected[-1] == pytest.approx(1e-6) and expected[14] == pytest.approx(5.005e-4)


def test_trainer_default_follows_the_machine_and_writes_checkpoints_atomically(tmp_path):
    trainer = instantiate(compose_config([], tmp_path).trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.accelerator, CPUAccelerator)  # `auto` on a machine without GPU
    assert trainer.precision == hardware.fastest_precision("cpu")
    assert trainer.max_epochs == 30 and trainer.log_every_n_steps == 10 and trainer.num_devices == 1
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_trainer_cpu(tmp_path):
    cfg = compose_config(["trainer=cpu"], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices == 1
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_trainer_ddp_runs_one_process_per_device(tmp_path):
    cfg = compose_config(["trainer=ddp"], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.num_nodes) == ("auto", 2, 1)
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)  # auto: the CPU here
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy._get_process_group_backend() == "gloo"
    assert trainer.num_devices == 2 and trainer.num_nodes == 1 and trainer.world_size == 2
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_trainer_gpu_asks_for_one_gpu_in_16_bit_mixed_precision(tmp_path):
    cfg = compose_config(["trainer=gpu"], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.precision) == ("gpu", 1, "16-mixed")
    if not torch.cuda.is_available():
        with pytest.raises(
            Exception, match="No supported gpu backend found"
        ):  # refused here, never quietly run on the CPU
            instantiate(cfg.trainer, logger=False)


def test_every_trainer_config_is_checked():
    assert options("trainer") == ["cpu", "ddp", "default", "gpu"]


def _trainer(tmp_path, debug: str) -> tuple[pl.Trainer, object]:
    cfg = compose_config(["data=chest_xray", f"debug={debug}"], tmp_path)
    return instantiate(cfg.trainer, logger=False, enable_progress_bar=False), cfg


def test_debug_fdr_runs_one_batch_of_each_split_on_the_cpu(tmp_path):
    trainer, _ = _trainer(tmp_path, "fdr")
    assert trainer.fast_dev_run is True and isinstance(trainer.accelerator, CPUAccelerator)
    assert trainer.limit_train_batches == trainer.limit_val_batches == trainer.limit_test_batches == 1
    assert trainer.max_epochs == 1 and trainer.num_sanity_val_steps == 0


def test_debug_limit_runs_a_few_batches_for_a_few_epochs(tmp_path):
    trainer, _ = _trainer(tmp_path, "limit")
    assert trainer.max_epochs == 3 and not trainer.fast_dev_run
    assert (trainer.limit_train_batches, trainer.limit_val_batches, trainer.limit_test_batches) == (0.05, 0.1, 0.1)


def test_debug_overfit_learns_three_batches_without_augmentation_or_early_stop(tmp_path):
    trainer, cfg = _trainer(tmp_path, "overfit")
    assert trainer.overfit_batches == 3 and trainer.max_epochs == 50
    dm = instantiate(cfg.data)
    assert dm.batch_transform is None and dm.train_transform is None
    assert not any(isinstance(c, EarlyStopping) for c in instantiate_all(cfg.callbacks))


def test_debug_profiler_times_one_epoch(tmp_path):
    trainer, _ = _trainer(tmp_path, "profiler")
    assert isinstance(trainer.profiler, SimpleProfiler) and trainer.max_epochs == 1


def test_every_debug_config_is_checked():
    assert options("debug") == ["fdr", "limit", "overfit", "profiler"]


def _by_type(objects: list) -> dict[type, list]:
    found: dict[type, list] = {}
    for item in objects:
        found.setdefault(type(item), []).append(item)
    return found


def test_default_callbacks_keep_the_best_and_the_last_checkpoint_and_stop_early(tmp_path):
    cfg = compose_config(["monitor.metric=val/loss", "monitor.mode=min"], tmp_path)
    found = _by_type(instantiate_all(cfg.callbacks))
    assert set(found) == {ModelCheckpoint, EarlyStopping, LearningRateMonitor, RichProgressBar, RichModelSummary}
    best, last = sorted(found[ModelCheckpoint], key=lambda c: c.filename == "last")
    assert (best.monitor, best.mode, best.save_top_k, best.dirpath) == (
        "val/loss",
        "min",
        1,
        str(tmp_path / "checkpoints"),
    )
    assert (last.filename, last.monitor, last.dirpath) == ("last", None, str(tmp_path / "checkpoints"))
    (stop,) = found[EarlyStopping]
    assert (stop.monitor, stop.mode, stop.patience) == ("val/loss", "min", 8)
    (rates,) = found[LearningRateMonitor]
    assert rates.logging_interval == "epoch"


@pytest.mark.parametrize(
    ("name", "kind", "settings"),
    [
        ("ema", EMAWeightAveraging, {}),
        (
            "finetune",
            TwoStageFinetuning,
            {"freeze_epochs": 10, "unfreeze_from": 0, "backbone_lr_factor": 0.1, "train_bn": True},
        ),
        ("throughput", Throughput, {"path": None, "warmup": 2}),
    ],
)
def test_optional_callbacks_join_the_defaults(name, kind, settings, tmp_path):
    cfg = compose_config([f"callbacks=[default,{name}]"], tmp_path)
    found = _by_type(instantiate_all(cfg.callbacks))
    assert ModelCheckpoint in found and EarlyStopping in found
    (callback,) = found[kind]
    assert {key: getattr(callback, key) for key in settings} == settings
    if name == "ema":  # each step keeps 0.999 of the average and adds 0.001 of the weights
        average = callback._kwargs["avg_fn"](torch.tensor(1.0), torch.tensor(0.0), torch.tensor(5))
        assert float(average) == pytest.approx(0.999)


def test_no_callbacks(tmp_path):
    assert instantiate_all(compose_config(["callbacks=none"], tmp_path).callbacks) == []


def test_every_callback_config_is_checked():
    assert options("callbacks") == [
        "default", "early_stopping", "ema", "finetune", "lr_monitor", "model_checkpoint", "none",
        "rich_model_summary", "rich_progress_bar", "throughput",
    ]  # fmt: skip


def test_loggers_write_into_the_run_directory_or_the_log_folder(tmp_path):
    """TensorBoard and CSV built here; MLflow and W&B are built, run and read back in tests/test_loggers.py (their
    stores take seconds to create), so here their composed settings are checked."""
    logs = tmp_path / "logs"
    cfgs = {
        name: compose_config([f"logger={name}", f"paths.log_dir={logs}"], tmp_path / "run")
        for name in options("logger")
    }
    assert sorted(cfgs) == ["csv", "mlflow", "tensorboard", "wandb"]
    (tensorboard,) = instantiate_all(cfgs["tensorboard"].logger)
    assert isinstance(tensorboard, TensorBoardLogger)
    assert Path(tensorboard.log_dir) == tmp_path / "run" / "tensorboard"
    (table,) = instantiate_all(cfgs["csv"].logger)
    assert isinstance(table, CSVLogger) and Path(table.log_dir) == tmp_path / "run" / "csv"
    mlflow = cfgs["mlflow"].logger.mlflow
    assert get_class(mlflow._target_) is MLFlowLogger
    assert mlflow.tracking_uri == f"sqlite:///{logs / 'mlflow' / 'mlflow.db'}" and (logs / "mlflow").is_dir()
    assert mlflow.tags.run_dir == str(tmp_path / "run")
    wandb = cfgs["wandb"].logger.wandb
    assert get_class(wandb._target_) is WandbLogger
    assert wandb.offline is True and wandb.save_dir == str(tmp_path / "run")
