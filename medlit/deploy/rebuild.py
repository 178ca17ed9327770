"""Rebuild a trained run from its checkpoint: the stored configuration, the weights, the data's state.

`medlit eval`, `explain`, `predict`, `export` and `serve` take a checkpoint and nothing else: its
`hyper_parameters.run_config` holds the run's resolved configuration. Values named on the command line
(`data.data_dir=/elsewhere`, `data.batch_size=256`, `data=...`) replace the stored ones, so a run trained on
one machine can be evaluated on another. The stored configuration is untrusted input: it is checked by
`medlit.training.trusted` before anything is built from it, the network it describes must fit the
checkpoint's weights before real memory is allocated for it, and its download sources (`data.url`,
`data.mirrors`, `data.md5`) are not used: data missing here is fetched from the official source.
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

from medlit.errors import MedlitError
from medlit.training.checkpoint import check_layout, current_targets, load_checkpoint, load_weights, restore
from medlit.training.classifier import Classifier
from medlit.training.run import build_classifier
from medlit.training.trusted import (
    check_hyper_parameters,
    check_model_fits_weights,
    check_run_config,
    without_download_sources,
)

# the parts of a run that define its model and data, taken from the checkpoint
RUN_GROUPS = ("data", "model", "classifier")


@dataclass
class RestoredRun:
    """A run rebuilt from a checkpoint: its configuration, model (weights loaded), data module, checkpoint."""

    cfg: DictConfig
    model: Classifier
    datamodule: pl.LightningDataModule
    checkpoint: dict[str, Any]


def rebuild(cfg: DictConfig, named: Sequence[str] | None = None) -> RestoredRun:
    """The run behind `cfg.ckpt_path`: its stored data, model and classifier settings, except the keys
    `named` (default: those this command line sets), which keep their values in `cfg`; its data module set
    up and its weights loaded (on the CPU, in evaluation mode). Pretrained weights are not fetched."""
    path = str(cfg.ckpt_path)
    checkpoint, cfg = _checked_run(cfg, named)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    _check_class_order(datamodule.class_names, checkpoint["hyper_parameters"].get("class_names"), path)
    model = build_classifier(cfg, datamodule.num_classes, datamodule.class_names, _saved_config(checkpoint))
    restore(model, datamodule, checkpoint, path)
    model.eval()
    return RestoredRun(cfg, model, datamodule, checkpoint)


def rebuild_classifier(cfg: DictConfig, named: Sequence[str] | None = None) -> RestoredRun:
    """The classifier behind `cfg.ckpt_path` (weights, normalisation and decision threshold loaded; on the
    CPU, in evaluation mode) without its data: the data module is built from the stored settings, which
    say how inputs are prepared (image size, channels), but not set up, so the training data need not be
    present. Its saved state (e.g. a tokenizer) stays in `checkpoint`. For predictions on new inputs.

    Pretrained weights are not fetched: the checkpoint holds every weight.
    """
    path = str(cfg.ckpt_path)
    checkpoint, cfg = _checked_run(cfg, named)
    hparams = checkpoint["hyper_parameters"]
    num_classes = hparams["num_classes"]
    model = build_classifier(
        cfg, num_classes, hparams.get("class_names") or range(num_classes), _saved_config(checkpoint)
    )
    load_weights(model, checkpoint, path)
    model.eval()
    return RestoredRun(cfg, model, instantiate(cfg.data), checkpoint)


def load_run(ckpt_path: str | Path, overrides: dict[str, Any] | None = None) -> RestoredRun:
    """The run behind a checkpoint, for notebooks and scripts: `overrides` such as
    `{"data.data_dir": "/shared/medmnist"}` replace stored values."""
    cfg = OmegaConf.create({"ckpt_path": str(ckpt_path)})
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return rebuild(cfg, list(overrides or {}))


def _checked_run(cfg: DictConfig, named: Sequence[str] | None) -> tuple[dict[str, Any], DictConfig]:
    """The checkpoint at `cfg.ckpt_path` and `cfg` with its stored run in place, every part checked: the
    checkpoint's layout, its stored configuration (`medlit.training.trusted`), and the network it describes
    against its weights, before real memory is allocated for the network."""
    path, named = str(cfg.ckpt_path), _named(named)
    checkpoint = load_checkpoint(path)
    check_layout(checkpoint, path)
    saved = _saved_run(checkpoint, path, named)
    check_hyper_parameters(checkpoint["hyper_parameters"], path)
    cfg = _without_weight_files(_with_saved_run(cfg, saved, named))
    check_model_fits_weights(cfg.model, checkpoint["state_dict"], path)
    return checkpoint, cfg


def _check_class_order(current: Sequence[str], stored: Sequence[str] | None, path: str) -> None:
    """The data's classes in the order the checkpoint was trained with; the same names in another order (a
    folder renamed, the positive class chosen differently) would swap the labels silently."""
    if not stored or [str(c).casefold() for c in current] == [str(c).casefold() for c in stored]:
        return
    if sorted(str(c).casefold() for c in current) == sorted(str(c).casefold() for c in stored):
        raise MedlitError(
            f"{path} was trained with the classes {', '.join(map(str, stored))} in this order, but the data gives "
            f"{', '.join(map(str, current))}: the labels would be swapped (chest X-ray folders: set "
            f"data.positive_class={stored[-1]})"
        )


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


def _saved_run(checkpoint: dict[str, Any], path: str, named: Sequence[str]) -> DictConfig:
    """The stored run's groups this module uses, checked; the keys `named` on the command line are not."""
    saved = checkpoint.get("hyper_parameters", {}).get("run_config")
    if not saved:
        raise MedlitError(f"{path} holds no run configuration (hyper_parameters.run_config)")
    if not isinstance(saved, dict):
        raise MedlitError(f"{path}: hyper_parameters.run_config is not a mapping")
    used = {group: node for group, node in current_targets(saved).items() if group in RUN_GROUPS}
    check_run_config(used, path, named)
    return OmegaConf.create(without_download_sources(used, named))


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
