"""Every config of every group composes and builds its object."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from medlit.training.run import instantiate_all
from tests.conftest import CONF, compose_config
from tests.test_image_table import image_rows, write_csv


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("name", options("data"))
def test_data(name, tmp_path):
    overrides = [f"data={name}"]
    if name == "image_table":  # no default table: a generated one of three classes, which sets num_classes
        table = write_csv(tmp_path / "t.csv", image_rows(tmp_path))
        overrides += [f"data.table={table}", "data.label_column=diagnosis", "data.split_column=split"]
    cfg = compose_config(overrides, tmp_path)
    dm = instantiate(cfg.data)
    assert dm.num_classes == (3 if cfg.data.num_classes is None else cfg.data.num_classes)
    for key in ("image_size", "vocab_size", "max_len"):  # what the model configs read from ${data}
        if key in cfg.data:
            assert getattr(dm, key) == cfg.data[key], key


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizer_and_scheduler(optimizer, scheduler, tmp_path):
    cfg = compose_config([f"optimizer={optimizer}", f"scheduler={scheduler}"], tmp_path)
    params = [torch.nn.Parameter(torch.ones(2))]
    opt = instantiate(cfg.optimizer)(params=params)
    assert isinstance(opt, torch.optim.Optimizer)
    if scheduler == "none":
        assert not cfg.scheduler
    else:
        sched = instantiate(cfg.scheduler)(optimizer=opt)
        opt.step()
        sched.step(0.5) if scheduler == "reduce_on_plateau" else sched.step()


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer(trainer, tmp_path):
    overrides = [f"trainer={trainer}"]
    if trainer in ("gpu", "ddp"):
        overrides.append("trainer.accelerator=cpu")  # the same settings, minus the GPU this machine lacks
    if trainer == "gpu":
        overrides.append("trainer.precision=bf16-mixed")
    cfg = compose_config(overrides, tmp_path)
    assert isinstance(instantiate(cfg.trainer, logger=False, enable_progress_bar=False), pl.Trainer)


@pytest.mark.parametrize("group", ["callbacks", "logger"])
def test_callbacks_and_loggers(group, tmp_path):
    for name in options(group):
        cfg = compose_config([f"{group}={name}"], tmp_path)
        objects = instantiate_all(cfg.get(group))
        assert len(objects) == len([v for v in (cfg.get(group) or {}).values() if v]), name


@pytest.mark.parametrize("debug", options("debug"))
def test_debug(debug, tmp_path):
    cfg = compose_config([f"debug={debug}"], tmp_path)
    assert isinstance(instantiate(cfg.trainer, logger=False), pl.Trainer)
