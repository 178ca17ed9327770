"""`medlit eval`: evaluate a trained checkpoint on its test or validation split, with the report training ends with.

medlit eval ckpt_path=logs/train/runs/<run>/checkpoints/epoch_007.ckpt
medlit eval ckpt_path=... split=val threshold=youden data.data_dir=/shared/medmnist
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from medlit.cli.runner import CONFIG_PATH, launch, run_task
from medlit.deploy.ensemble import with_views
from medlit.deploy.rebuild import rebuild
from medlit.errors import ConfigError
from medlit.evaluation.report import SPLITS, evaluate, write_metrics, write_report
from medlit.evaluation.threshold import check_rule, select_threshold
from medlit.training.hardware import resolve_device
from medlit.training.preflight import check_threshold
from medlit.training.run import instantiate_all


def evaluate_checkpoint(cfg: DictConfig) -> float:
    """Write the report on `cfg.split` for `cfg.ckpt_path` into the output directory; return its AUROC."""
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split}; choose one of {', '.join(SPLITS)}")
    if cfg.threshold is not None:
        check_rule(cfg.threshold)
    run = rebuild(cfg)
    model, datamodule = with_views(run.model, cfg.get("tta")), run.datamodule
    model.to(resolve_device(cfg.device))
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


@hydra.main(config_path=CONFIG_PATH, config_name="eval", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float:
    return run_task(evaluate_checkpoint, cfg)


def main() -> None:
    launch(hydra_main)


if __name__ == "__main__":
    main()
