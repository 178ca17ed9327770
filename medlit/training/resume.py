"""`resume=<run dir>`: continue a run, with the settings it was started with, in its own directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from medlit.errors import MedlitError
from medlit.training.checkpoint import check_layout, current_targets, load_checkpoint
from medlit.training.trusted import check_model_fits_weights, check_run_config

log = logging.getLogger(__name__)

_GROUPS = ("data", "model", "classifier", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths")


def resume_config(cfg: DictConfig) -> tuple[DictConfig, dict[str, Any] | None, bool]:
    """The configuration to run, the checkpoint to start from (None for a fresh run), and whether the run
    continues in the checkpoint's own directory.

    With `resume=<run dir>` the run's own configuration is read from its `checkpoints/last.ckpt`, and only
    `key=value` overrides given on this command line (e.g. `trainer.max_epochs=40`) change it. A run whose
    directory already holds a last.ckpt (a SLURM job requeued after pre-emption or its time limit)
    continues from it with its configuration as given. With `ckpt_path=<file>` the checkpoint is checked
    (it must load with `weights_only=True` and fit the configured network) and `cfg` is used as given.
    The stored configuration `resume=` reads is checked as every stored configuration is
    (`medlit.training.trusted`), except the keys this command line sets.
    """
    if not cfg.get("resume"):
        path = cfg.get("ckpt_path")
        own_last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not path and cfg.get("train", True) and own_last.is_file():
            log.info("Continuing from %s, left by an earlier attempt of this run", own_last)
            with open_dict(cfg):
                cfg.ckpt_path = str(own_last)
            return cfg, _checked(own_last, cfg), True
        return cfg, (_checked(path, cfg) if path else None), False
    run_dir = Path(cfg.resume)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise MedlitError(f"resume={run_dir}: {last} does not exist, so there is nothing to continue")
    checkpoint = load_checkpoint(last)
    check_layout(checkpoint, last)
    saved = checkpoint.get("hyper_parameters", {}).get("run_config")
    if not saved:
        raise MedlitError(f"{last} has no run configuration; continue it with ckpt_path={last} and its settings")
    changes = _command_line_changes()
    saved = current_targets(saved)
    check_run_config(saved, str(last), [change.split("=", 1)[0] for change in changes])
    resumed = OmegaConf.merge(OmegaConf.create(saved), OmegaConf.from_dotlist(changes))
    with open_dict(resumed):
        resumed.resume, resumed.ckpt_path = str(run_dir), str(last)
        resumed.paths.output_dir = cfg.paths.output_dir
    check_model_fits_weights(resumed.model, checkpoint["state_dict"], str(last))
    _check_epochs_left(checkpoint, resumed, last)
    log.info("Resuming %s from epoch %d%s", run_dir, checkpoint["epoch"], f" with {changes}" if changes else "")
    return resumed, checkpoint, True


def _checked(path: str | Path, cfg: DictConfig) -> dict[str, Any]:
    """A checkpoint to start from, loaded without unpickling code, that fits the configured network."""
    checkpoint = load_checkpoint(path)
    check_layout(checkpoint, path)
    check_model_fits_weights(cfg.model, checkpoint["state_dict"], str(path))
    if cfg.get("train", True):
        _check_epochs_left(checkpoint, cfg, path)
    return checkpoint


def _check_epochs_left(checkpoint: dict[str, Any], cfg: DictConfig, path: str | Path) -> None:
    """A checkpoint that trained more epochs than `trainer.max_epochs` cannot continue: say so. One that
    trained exactly as many continues to the test report (a run killed after its last epoch)."""
    done, planned = int(checkpoint.get("epoch", -1)) + 1, cfg.trainer.get("max_epochs")
    if planned is not None and planned != -1 and done > planned:
        raise MedlitError(
            f"{path} has trained {done} epochs, more than trainer.max_epochs={planned}; set trainer.max_epochs "
            f"to {done} or more to continue it"
        )


def _command_line_changes() -> list[str]:
    """`key=value` overrides of this command, other than resume itself; group choices are refused."""
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    changes = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+")
        if key in ("resume", "ckpt_path") or key.startswith("hydra"):
            continue
        if ("." not in key and key in _GROUPS) or key.startswith("~"):
            raise MedlitError(
                f"resume continues a run with its own settings; {override!r} would change its parts "
                "(start a new run with ckpt_path=<checkpoint> instead)"
            )
        changes.append(override.lstrip("+"))
    return changes
