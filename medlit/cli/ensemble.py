"""`medlit ensemble`: several trained checkpoints combined into one, its threshold chosen on validation.

medlit ensemble 'ckpt_paths=[logs/train/multiruns/<time>/0/checkpoints/epoch_006.ckpt,...]'
medlit ensemble 'ckpt_paths=[...]' tta=[identity,hflip] threshold=youden

Writes ensemble.ckpt (taken by eval, predict, serve and export like any checkpoint), members.md (each
member's validation figures beside the ensemble's) and the validation and test reports.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict
from sklearn.metrics import roc_auc_score

from medlit.cli.runner import CONFIG_PATH, launch, run_task
from medlit.deploy.ensemble import Ensemble, ensemble_checkpoint
from medlit.deploy.rebuild import check_same_inputs, rebuild, rebuild_classifier
from medlit.errors import ConfigError
from medlit.evaluation.calibration import expected_calibration_error
from medlit.evaluation.predictions import predict
from medlit.evaluation.report import evaluate, write_metrics, write_report
from medlit.evaluation.threshold import check_rule, select_threshold
from medlit.training.checkpoint import AtomicCheckpointIO, load_checkpoint
from medlit.training.hardware import resolve_device
from medlit.training.preflight import check_threshold
from medlit.training.run import instantiate_all

log = logging.getLogger(__name__)


def build_ensemble(cfg: DictConfig) -> Path:
    """Combine `cfg.ckpt_paths`, choose the threshold on validation, report, write the ensemble checkpoint."""
    paths = [str(p) for p in cfg.ckpt_paths]
    if len(paths) < 2:
        raise ConfigError("an ensemble needs two or more checkpoints (one model's test-time augmentation: tta=...)")
    check_rule(cfg.threshold)
    runs = [rebuild(_for(cfg, paths[0]))] + [rebuild_classifier(_for(cfg, p)) for p in paths[1:]]
    for index, run in enumerate(runs[1:], start=1):
        check_same_inputs(runs[0].cfg, run.cfg, index)
    datamodule = runs[0].datamodule
    ensemble = Ensemble([run.model for run in runs], cfg.tta or ["identity"], cfg.weights)
    ensemble.to(resolve_device(cfg.device))
    check_threshold(cfg.threshold, ensemble, type(datamodule).__name__)
    rows = [
        _validation_row(f"member {i}: {p}", member, datamodule)
        for i, (p, member) in enumerate(zip(paths, ensemble.members, strict=True))
    ]
    threshold = select_threshold(ensemble, datamodule, cfg.threshold) if ensemble.binary else 0.5
    rows.append(_validation_row("ensemble", ensemble, datamodule))

    output_dir = Path(cfg.paths.output_dir)
    loggers = instantiate_all(cfg.get("logger"))
    results = {}
    for split in ("val", "test"):
        report = evaluate(ensemble, datamodule, split, **cfg.bootstrap)
        write_report(report, output_dir, loggers, step=0)
        results.update(report.flat())
    for logger in loggers:
        logger.finalize("success")
    write_metrics(output_dir / "metrics.json", results)
    (output_dir / "members.md").write_text(_members_table(rows))
    print(_members_table(rows))
    path = Path(cfg.output) if cfg.output else output_dir / "ensemble.ckpt"
    checkpoint = ensemble_checkpoint(
        [load_checkpoint(p) for p in paths], ensemble.views, ensemble.weights.tolist(), threshold
    )
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    log.info("Ensemble of %d members written to %s", len(paths), path)
    return path


def _for(cfg: DictConfig, ckpt_path: str) -> DictConfig:
    member = cfg.copy()
    with open_dict(member):
        member.ckpt_path = ckpt_path
    return member


def _validation_row(name: str, model, datamodule) -> dict:
    """A model's validation AUROC (macro one-vs-rest for multi-class tasks), log loss and calibration error."""
    predictions = predict(model, datamodule.evaluation_dataloader("val"))
    probs, target = predictions.probs, predictions.target
    auroc = (
        roc_auc_score(target, probs, multi_class="ovr", average="macro")
        if probs.ndim == 2
        else roc_auc_score(target, probs)
    )
    return {
        "model": name,
        "auroc": float(auroc),
        "log loss": predictions.loss,
        "ece": expected_calibration_error(probs, target),
    }


def _members_table(rows: list[dict]) -> str:
    lines = ["| model | validation AUROC | validation log loss | validation ECE |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['auroc']:.4f} | {r['log loss']:.4f} | {r['ece']:.4f} |" for r in rows]
    best = max(rows[:-1], key=lambda r: r["auroc"])
    gain = rows[-1]["auroc"] - best["auroc"]
    return "\n".join(lines) + f"\n\nThe ensemble's validation AUROC minus its best member's: {gain:+.4f}\n"


@hydra.main(config_path=CONFIG_PATH, config_name="ensemble", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    run_task(build_ensemble, cfg)


def main() -> None:
    launch(hydra_main)


if __name__ == "__main__":
    main()
