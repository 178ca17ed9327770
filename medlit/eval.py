"""Evaluate a trained checkpoint on its test or validation split, with the report `train.py` ends with.

python -m medlit.eval ckpt_path=logs/train/runs/<run>/checkpoints/epoch_007.ckpt
python -m medlit.eval ckpt_path=... split=val threshold=youden data.data_dir=/shared/medmnist
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from medlit.cli import launch, run_task
from medlit.errors import ConfigError
from medlit.evaluation import evaluate, select_threshold, write_metrics, write_report
from medlit.preflight import check_threshold
from medlit.rebuild import rebuild
from medlit.threshold import check_rule
from medlit.training import instantiate_all

SPLITS = ("test", "val")


def evaluate_checkpoint(cfg: DictConfig) -> float:
    """Write the report on `cfg.split` for `cfg.ckpt_path` into the output directory; return its AUROC."""
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split}; choose one of {', '.join(SPLITS)}")
    if cfg.threshold is not None:
        check_rule(cfg.threshold)
    run = rebuild(cfg)
    model, datamodule = run.model, run.datamodule
    model.to(device(cfg.device))
    if cfg.threshold is not None:
        check_threshold(cfg.threshold, model, run.cfg.data.get("flag", type(datamodule).__name__))
        if model.binary:
            select_threshold(model, datamodule, cfg.threshold)
    report = evaluate(model, datamodule, cfg.split, **cfg.bootstrap)
    output_dir = Path(cfg.paths.output_dir)
    loggers = instantiate_all(cfg.get("logger"))
    write_report(report, output_dir, loggers, step=int(run.checkpoint.get("global_step", 0)))
    for logger in loggers:
        logger.finalize("success")
    write_metrics(output_dir / "metrics.json", report.flat())
    return report.metrics["auroc"]


def device(name: str) -> torch.device:
    """`auto`: the first GPU if there is one, else the CPU; any other value as torch names it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name}: {err}") from None


@hydra.main(config_path="pkg://medlit.conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_task(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    launch(main)
