"""Checks that run before training, so a doomed run fails in seconds with one clear line."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import torch

from medlit.errors import ConfigError, MedlitError
from medlit.evaluation.threshold import check_rule, is_fixed
from medlit.models import num_logits
from medlit.training.classifier import Classifier

# room for logs, figures and TensorBoard events on top of the checkpoints
_SPARE_BYTES = 64 * 2**20


def check_output_dir(path: Path, model: Classifier) -> None:
    """The run directory must be writable and have room for two checkpoints (best and last)."""
    probe = path / f".medlit-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0" * 4096)
    except OSError as err:
        raise MedlitError(f"cannot write to the output directory {path}: {err.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    # weights plus two optimiser moments (Adam) per checkpoint, two checkpoints
    needed = 2 * 3 * sum(p.numel() * p.element_size() for p in model.parameters()) + _SPARE_BYTES
    free = shutil.disk_usage(path).free
    if free < needed:
        raise MedlitError(
            f"only {free / 2**20:.0f} MB free in {path}, and this run's checkpoints and logs need about "
            f"{needed / 2**20:.0f} MB; free some space or set paths.log_dir to another disk"
        )


def check_model_fits_data(model: Classifier, example: torch.Tensor, model_name: str, data_name: str) -> None:
    """One forward pass on an example batch: the network must take the data's inputs and return one
    logit per class (one for binary tasks). Keeps the batch as the module's `example_input_array`."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model {model_name} cannot take the inputs of data {data_name} "
            f"(shape {tuple(example.shape[1:])}, {example.dtype}): {first_line}"
        ) from None
    finally:
        model.train(was_training)
    expected = num_logits(model.num_classes)
    if out.ndim != 2 or out.shape[1] != expected:
        raise ConfigError(
            f"model {model_name} returns shape {tuple(out.shape)}, but data {data_name} has "
            f"{model.num_classes} classes and needs (batch, {expected})"
        )
    model.example_input_array = example


def check_optimizer(model: Classifier) -> None:
    """Build the optimiser and scheduler once, so a wrong value (lr=abc) fails before any data is read."""
    try:
        model.configure_optimizers()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"the optimizer or scheduler settings are invalid: {err}") from None


def check_threshold(rule: str | float, model: Classifier, data_name: str) -> None:
    """A known threshold rule, and none but a fixed one for a multi-class task (which predicts the argmax)."""
    check_rule(rule)
    if not model.binary and not (is_fixed(rule) and float(rule) == 0.5):
        raise ConfigError(
            f"threshold={rule} applies to binary tasks; data {data_name} has {model.num_classes} classes, "
            "whose prediction is the most probable class"
        )
