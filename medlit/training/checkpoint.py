"""Reading and writing checkpoints safely: atomic writes, and no unpickling of code on load."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO
from torch import nn

from medlit.errors import MedlitError

# classes whose module moved since checkpoints were first written: the run configurations stored in older
# checkpoints name them at their old place
MOVED_TARGETS = {
    "medlit.classifier.Classifier": "medlit.training.classifier.Classifier",
    "medlit.checkpoint.AtomicCheckpointIO": "medlit.training.checkpoint.AtomicCheckpointIO",
    "medlit.finetune.TwoStageFinetuning": "medlit.training.callbacks.TwoStageFinetuning",
    "medlit.throughput.Throughput": "medlit.training.callbacks.Throughput",
}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, syncs it, then renames it.

    A process killed mid-write (pre-emption, OOM killer) leaves the previous checkpoint of that name
    intact: the rename is atomic on a local file system, unlike a copy from a temporary folder elsewhere.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint as tensors and plain Python values only (`weights_only=True`).

    A file that would need to unpickle arbitrary objects, which can run code, is refused with an error
    that names it; so is a missing or truncated file.
    """
    path = Path(path)
    if not path.is_file():
        raise MedlitError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0]
        raise MedlitError(
            f"refusing to load {path}: it holds objects other than tensors and plain values, which could "
            f"run code when unpickled ({reason})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise MedlitError(f"{path} is not a readable checkpoint ({err})") from None


def write_decision_rule(path: str | os.PathLike, threshold: float, temperature: float = 1.0) -> None:
    """Store how a trained Classifier turns logits into decisions in its checkpoint, atomically: the decision
    threshold and the temperature chosen on validation (its `decision_threshold` and `temperature` buffers).

    The checkpoint stays loadable with `weights_only=True`, and a process killed during the write leaves
    the checkpoint as it was.
    """
    checkpoint = load_checkpoint(path)
    checkpoint["state_dict"]["decision_threshold"] = torch.tensor(float(threshold))
    checkpoint["state_dict"]["temperature"] = torch.tensor(float(temperature))
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def restore(model: nn.Module, datamodule: object, checkpoint: dict[str, Any]) -> None:
    """Load a checkpoint's weights (and decision threshold) into `model`, and the data module's saved state
    (e.g. a text vocabulary) into `datamodule`, as Lightning does when it tests a checkpoint."""
    model.load_state_dict(checkpoint["state_dict"])
    restore_data_state(datamodule, checkpoint)


def restore_data_state(datamodule: object, checkpoint: dict[str, Any]) -> None:
    """Load the data module's saved state (e.g. a text vocabulary) from a checkpoint, if it has any."""
    state = checkpoint.get(type(datamodule).__qualname__)
    if state:
        datamodule.load_state_dict(state)


def current_targets(config: Any) -> Any:
    """A stored run configuration (nested dicts and lists) with moved classes named at their new place."""
    if isinstance(config, dict):
        return {
            key: MOVED_TARGETS.get(value, value) if key == "_target_" else current_targets(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [current_targets(item) for item in config]
    return config
