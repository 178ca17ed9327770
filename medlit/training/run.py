"""The training run behind `medlit train` (and `train.py`): build everything from the config, fit, select on
validation, test once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from medlit.evaluation.calibration import calibrate
from medlit.evaluation.report import evaluate, write_metrics, write_report
from medlit.evaluation.threshold import select_threshold
from medlit.training import preflight
from medlit.training.checkpoint import load_checkpoint, restore, write_decision_rule
from medlit.training.classifier import Classifier
from medlit.training.hardware import keep_freed_memory
from medlit.training.resume import resume_config

log = logging.getLogger(__name__)

HPARAM_GROUPS = ("data", "model", "classifier", "optimizer", "scheduler")
HPARAM_TRAINER_KEYS = ("max_epochs", "precision", "accumulate_grad_batches", "gradient_clip_val")


def instantiate_all(node: DictConfig | None, **extra) -> list:
    """Instantiate every entry of a config node that has a `_target_` (callbacks, loggers)."""
    return [instantiate(item, **extra) for item in (node or {}).values() if item and "_target_" in item]


def build_loggers(cfg: DictConfig, resumed_step: int | None) -> list:
    """The configured loggers; when a run resumes, TensorBoard drops events the killed run wrote after
    its last checkpoint, so curves continue without repeated steps."""
    loggers = []
    for item in (cfg.get("logger") or {}).values():
        if not item or "_target_" not in item:
            continue
        extra = {}
        if resumed_step is not None and get_class(item._target_) is TensorBoardLogger:
            extra["purge_step"] = resumed_step
        loggers.append(instantiate(item, **extra))
    return loggers


def close_loggers(loggers: list) -> None:
    """Finish every logger after the test report reached it. A W&B run is ended too: the next job of a multirun
    in this process (Hydra's basic launcher) would otherwise log into it."""
    for logger in loggers:
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()


def build_classifier(
    cfg: DictConfig, num_classes: int, class_names: list[str], run_config: dict | None = None
) -> Classifier:
    """The Classifier for `cfg`, with the network, optimiser and scheduler its groups describe (none where
    the group is null) and `run_config` (default: `cfg` resolved) kept for its checkpoints.

    A data config that leaves `num_classes` (and `classes`) null, to be read from the data, gets the data's
    here, so the network's `${data.num_classes}` is a number and the run's stored config names its classes.
    """
    with open_dict(cfg):
        if cfg.data.get("num_classes", 0) is None:
            cfg.data.num_classes = num_classes
        if "classes" in cfg.data and cfg.data.classes is None:
            cfg.data.classes = [str(name) for name in class_names]
    factory = instantiate(cfg.classifier, _partial_=True, _convert_="all")
    return factory(
        net=instantiate(cfg.model),
        num_classes=num_classes,
        class_names=list(class_names),
        optimizer=instantiate(cfg.optimizer) if cfg.get("optimizer") else None,
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        run_config=OmegaConf.to_container(cfg, resolve=True) if run_config is None else run_config,
    )


def train(cfg: DictConfig) -> float | None:
    """Fit on train, select the checkpoint on validation, test it once; return the best validation score.

    A binary model's decision threshold is chosen on validation (`threshold=`) and written into the
    selected checkpoint; the test report (metrics.json, figures, intervals) is made at that threshold.
    """
    cfg, checkpoint, continuing = resume_config(cfg)
    if cfg.get("keep_freed_memory", False):
        keep_freed_memory()
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    datamodule = instantiate(cfg.data)
    model = build_classifier(cfg, datamodule.num_classes, datamodule.class_names)
    preflight.check_model_fits_data(model, datamodule.example_input(), _choice(cfg, "model"), _choice(cfg, "data"))
    preflight.check_optimizer(model)
    preflight.check_threshold(cfg.get("threshold", 0.5), model, _choice(cfg, "data"))
    preflight.check_output_dir(output_dir, model)

    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = build_loggers(cfg, checkpoint["global_step"] if continuing else None)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    best_score = _best_validation_score(trainer, cfg.monitor.metric)

    if cfg.get("test", True) and trainer.is_global_zero:
        results = _report_on_test(cfg, trainer, model, datamodule)
        if best_score is not None:  # the validation report of the selected checkpoint holds most monitors already
            results.setdefault(cfg.monitor.metric, best_score)
        write_metrics(output_dir / "metrics.json", results)
        _log_hparams(trainer, cfg, results)
    close_loggers(trainer.loggers)
    return best_score


def _report_on_test(
    cfg: DictConfig, trainer: pl.Trainer, model: Classifier, datamodule: pl.LightningDataModule
) -> dict[str, float]:
    """Load the selected checkpoint, fit its temperature and choose its threshold on validation (after
    training), report on validation and, once, on test.

    Runs on rank zero alone, over every validation and test example, so a DDP run reports what one
    process would.
    """
    ckpt_path = _checkpoint_to_test(trainer, cfg)
    if datamodule.test_set is None:
        datamodule.prepare_data()
        datamodule.setup("test")
    if ckpt_path:
        restore(model, datamodule, load_checkpoint(ckpt_path))
    model.to(trainer.strategy.root_device)
    if cfg.get("train", True):
        temperature = calibrate(model, datamodule) if cfg.get("calibrate", True) else 1.0
        threshold = select_threshold(model, datamodule, cfg.get("threshold", 0.5)) if model.binary else 0.5
        if ckpt_path:
            write_decision_rule(ckpt_path, threshold, temperature)
    results = {}
    for split in ("val", "test"):
        report = evaluate(model, datamodule, split, **cfg.get("bootstrap", {}))
        tag = "val_selected" if split == "val" else split  # apart from the epochs' val/ curves
        write_report(report, Path(cfg.paths.output_dir), trainer.loggers, step=trainer.global_step, tag=tag)
        results.update(report.flat())
    return results


def _choice(cfg: DictConfig, group: str) -> str:
    """The name a group was chosen by (`model=custom_cnn` -> custom_cnn), or its target's class name."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return choice
    return str(cfg[group].get("_target_", group)).rpartition(".")[2]


def _best_validation_score(trainer: pl.Trainer, monitor: str) -> float | None:
    callback = trainer.checkpoint_callback
    score = getattr(callback, "best_model_score", None)
    if score is None:
        score = trainer.callback_metrics.get(monitor)
    return None if score is None else float(score)


def _checkpoint_to_test(trainer: pl.Trainer, cfg: DictConfig) -> str | None:
    """The best checkpoint of this fit (selected on validation), or the one given when not training."""
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if cfg.get("train", True):
        if not best:
            log.warning("No best checkpoint was saved (checkpointing off?): testing the last weights")
        return best or None
    return cfg.get("ckpt_path")


def _log_hparams(trainer: pl.Trainer, cfg: DictConfig, results: dict[str, float]) -> None:
    """Record the run's settings with its final metrics, for TensorBoard's HPARAMS view."""
    params = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in HPARAM_GROUPS}
    params["trainer"] = {k: cfg.trainer.get(k) for k in HPARAM_TRAINER_KEYS}
    params["seed"] = cfg.get("seed")
    hp_metrics = {"hp/" + k.replace("/", "_"): v for k, v in results.items()}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, hp_metrics)
