"""Rebuild a trained run from its checkpoint: the stored configuration, the weights, the data's state.

`medlit eval`, `explain`, `predict`, `export` and `serve` take a checkpoint and nothing else: its
`hyper_parameters.run_config` holds the run's resolved configuration. Values named on the command line
(`data.data_dir=/elsewhere`, `data.batch_size=256`, `data=...`) replace the stored ones, so a run trained on
one machine can be evaluated on another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from medlit.deploy.ensemble import ENSEMBLE_KEY, Ensemble
from medlit.errors import MedlitError
from medlit.training.checkpoint import current_targets, load_checkpoint, restore_data_state
from medlit.training.classifier import Classifier
from medlit.training.run import build_classifier

# the parts of a run that define its model and data, taken from the checkpoint
RUN_GROUPS = ("data", "model", "classifier")


@dataclass
class RestoredRun:
    """A run rebuilt from a checkpoint: its configuration, model (weights loaded), data module, checkpoint."""

    cfg: DictConfig
    model: Classifier | Ensemble
    datamodule: pl.LightningDataModule
    checkpoint: dict[str, Any]


def rebuild(cfg: DictConfig, named: Sequence[str] | None = None) -> RestoredRun:
    """The run behind `cfg.ckpt_path`: its stored data, model and classifier settings, except the keys
    `named` (default: those this command line sets), which keep their values in `cfg`; its data module set
    up and its weights loaded (on the CPU, in evaluation mode). Pretrained weights are not fetched.

    An ensemble checkpoint (`medlit ensemble`) gives an `Ensemble` of its members, with the data of its first."""
    named = _named(named)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    cfg = _without_weight_files(_with_saved_run(cfg, _saved_run(checkpoint, cfg.ckpt_path), named))
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    restore_data_state(datamodule, checkpoint)
    model = _restored_model(cfg, checkpoint, named)
    return RestoredRun(cfg, model, datamodule, checkpoint)


def rebuild_classifier(cfg: DictConfig, named: Sequence[str] | None = None) -> RestoredRun:
    """The classifier behind `cfg.ckpt_path` (weights, normalisation and decision threshold loaded; on the
    CPU, in evaluation mode) without its data: the data module is built from the stored settings, which
    say how inputs are prepared (image size, channels), but not set up, so the training data need not be
    present. Its saved state (e.g. a tokenizer) stays in `checkpoint`. For predictions on new inputs.

    Pretrained weights are not fetched: the checkpoint holds every weight.
    """
    named = _named(named)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    cfg = _without_weight_files(_with_saved_run(cfg, _saved_run(checkpoint, cfg.ckpt_path), named))
    return RestoredRun(cfg, _restored_model(cfg, checkpoint, named), instantiate(cfg.data), checkpoint)


def _restored_model(cfg: DictConfig, checkpoint: dict[str, Any], named: Sequence[str]) -> nn.Module:
    """The checkpoint's Classifier, or the Ensemble of its members' Classifiers, weights loaded, on the CPU,
    in evaluation mode."""
    if ENSEMBLE_KEY not in checkpoint:
        return _classifier(cfg, checkpoint).eval()
    members = []
    for index, member in enumerate(checkpoint["members"]):
        member_cfg = _without_weight_files(_with_saved_run(cfg, _saved_run(member, f"member {index}"), named))
        check_same_inputs(cfg, member_cfg, index)
        members.append(_classifier(member_cfg, member))
    spec = checkpoint[ENSEMBLE_KEY]
    threshold = float(checkpoint["state_dict"]["decision_threshold"])
    return Ensemble(members, spec["views"], spec["weights"], threshold).eval()


def _classifier(cfg: DictConfig, checkpoint: dict[str, Any]) -> Classifier:
    hparams = checkpoint["hyper_parameters"]
    num_classes = hparams["num_classes"]
    names = hparams.get("class_names") or range(num_classes)
    model = build_classifier(cfg, num_classes, names, _saved_config(checkpoint))
    model.load_state_dict(checkpoint["state_dict"])
    return model


# what says how a member's inputs are prepared: members of an ensemble must agree on it
INPUT_KEYS = ("_target_", "image_size", "size", "in_channels", "flag", "vocab_size", "max_len", "truncation_side")


def check_same_inputs(cfg: DictConfig, member: DictConfig, index: int) -> None:
    for key in INPUT_KEYS:
        if cfg.data.get(key) != member.data.get(key):
            raise MedlitError(
                f"ensemble member {index} was trained on data.{key}={member.data.get(key)}, the first member on "
                f"{cfg.data.get(key)}: an ensemble's members must take the same inputs"
            )


def load_run(ckpt_path: str | Path, overrides: dict[str, Any] | None = None) -> RestoredRun:
    """The run behind a checkpoint, for notebooks and scripts: `overrides` such as
    `{"data.data_dir": "/shared/medmnist"}` replace stored values."""
    cfg = OmegaConf.create({"ckpt_path": str(ckpt_path)})
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return rebuild(cfg, list(overrides or {}))


def _without_weight_files(cfg: DictConfig) -> DictConfig:
    """`cfg` with the model's pretrained weights and weight file switched off: the checkpoint holds every
    weight, and neither a download nor the original file may be needed to load it."""
    with open_dict(cfg):
        for key in ("pretrained", "checkpoint_path"):
            if cfg.model.get(key):
                cfg.model[key] = None if key == "checkpoint_path" else False
    return cfg


def _saved_config(checkpoint: dict[str, Any]) -> dict:
    """The run configuration as stored, kept unchanged in the rebuilt Classifier (and any checkpoint it writes)."""
    return checkpoint["hyper_parameters"]["run_config"]


def _saved_run(checkpoint: dict[str, Any], path: str) -> DictConfig:
    saved = checkpoint.get("hyper_parameters", {}).get("run_config")
    if not saved:
        raise MedlitError(f"{path} holds no run configuration (hyper_parameters.run_config)")
    return OmegaConf.create(current_targets(saved))


def _named(named: Sequence[str] | None) -> list[str]:
    return _command_line_keys() if named is None else list(named)


def _with_saved_run(cfg: DictConfig, saved: DictConfig, named: Sequence[str]) -> DictConfig:
    """`cfg` with the saved run's groups in place of its own, except the keys `named`."""
    merged = cfg.copy()
    with open_dict(merged):
        for group in RUN_GROUPS:
            if group in named:  # the whole group was chosen anew, e.g. data=organcmnist
                continue
            node = saved.get(group)
            if node is None:
                continue
            for key in named:
                if key.startswith(group + "."):
                    OmegaConf.update(node, key[len(group) + 1 :], OmegaConf.select(cfg, key), force_add=True)
            merged[group] = node
        merged.optimizer, merged.scheduler = None, None
    return merged


def _command_line_keys() -> list[str]:
    """The keys this command's overrides set (`data.data_dir=x` -> data.data_dir, `data=y` -> data)."""
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    return [override.split("=", 1)[0].lstrip("+~") for override in overrides]
