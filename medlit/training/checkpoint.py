"""Reading and writing checkpoints safely: atomic writes with a digest of their content, no unpickling of code on
load, and a clear error for a damaged file or one that does not hold what a checkpoint holds."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO
from torch import nn

from medlit.data.integrity import save_atomically, unseal
from medlit.errors import MedlitError, UntrustedInput

# classes whose module moved since checkpoints were first written: the run configurations stored in older
# checkpoints name them at their old place
MOVED_TARGETS = {
    "medlit.classifier.Classifier": "medlit.training.classifier.Classifier",
    "medlit.checkpoint.AtomicCheckpointIO": "medlit.training.checkpoint.AtomicCheckpointIO",
    "medlit.finetune.TwoStageFinetuning": "medlit.training.callbacks.TwoStageFinetuning",
    "medlit.throughput.Throughput": "medlit.training.callbacks.Throughput",
}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, syncs it, then renames it; reads
    checkpoints as `load_checkpoint` does (tensors and plain values only, the digest checked).

    A process killed mid-write (pre-emption, OOM killer) leaves the previous checkpoint of that name
    intact: the rename is atomic on a local file system, unlike a copy from a temporary folder elsewhere.
    The hidden partial file such a kill leaves is removed at the next write. Each checkpoint carries the
    SHA-256 of its content in the key `medlit_sha256`, which Lightning and `torch.load` pass over.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options=None) -> None:
        save_atomically(checkpoint, Path(path))

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = "cpu", weights_only: Any = None) -> dict:
        return load_checkpoint(path, map_location)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint as tensors and plain Python values only (`weights_only=True`), its digest checked.

    A file that would need to unpickle arbitrary objects, which can run code, is refused with an error
    that names it; so is a missing, truncated or damaged file (content that does not match the digest
    written with it). A checkpoint without a digest (older, or written by other software) is loaded as it is.
    """
    path = Path(path)
    if not path.is_file():
        raise MedlitError(f"checkpoint {path} not found")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0]
        raise UntrustedInput(
            f"refusing to load {path}: it holds objects other than tensors and plain values, which could "
            f"run code when unpickled ({reason})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise MedlitError(f"{path} is not a readable checkpoint ({_first_line(err)})") from None
    content, intact = unseal(content)
    if intact is False:
        raise MedlitError(
            f"{path} is damaged: its content does not match the SHA-256 digest written with it (bytes changed "
            "on disk or in transfer); use another copy"
        )
    return content


def check_layout(checkpoint: Any, path: str | os.PathLike) -> None:
    """Refuse, naming the file, anything but a dict whose `state_dict` maps names to tensors, with
    `hyper_parameters` a dict if it has any: what a Lightning checkpoint of a medlit run holds."""
    if not isinstance(checkpoint, dict):
        raise MedlitError(f"{path} is not a checkpoint: it holds a {type(checkpoint).__name__}, not a dictionary")
    weights = checkpoint.get("state_dict")
    if not isinstance(weights, dict):
        keys = ", ".join(map(str, list(checkpoint)[:8])) or "none"
        raise MedlitError(f"{path} is not a Lightning checkpoint: it has no state_dict of weights (its keys: {keys})")
    wrong = next((key for key, value in weights.items() if not isinstance(value, torch.Tensor)), None)
    if wrong is not None:
        raise MedlitError(f"{path}: state_dict[{wrong!r}] is a {type(weights[wrong]).__name__}, not a tensor")
    if not isinstance(checkpoint.get("hyper_parameters", {}), dict):
        raise MedlitError(f"{path}: hyper_parameters is not a dictionary")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def write_threshold(path: str | os.PathLike, threshold: float) -> None:
    """Store a decision threshold in a checkpoint (the Classifier's `decision_threshold` buffer), atomically.

    The checkpoint stays loadable with `weights_only=True`, and a process killed during the write leaves
    the checkpoint as it was.
    """
    checkpoint = load_checkpoint(path)
    checkpoint["state_dict"]["decision_threshold"] = torch.tensor(float(threshold))
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def restore(model: nn.Module, datamodule: object, checkpoint: dict[str, Any], path: str | None = None) -> None:
    """Load a checkpoint's weights (and decision threshold) into `model`, and the data module's saved state
    (e.g. a text vocabulary) into `datamodule`, as Lightning does when it tests a checkpoint."""
    load_weights(model, checkpoint, path)
    state = checkpoint.get(type(datamodule).__qualname__)
    if state:
        datamodule.load_state_dict(state)


def load_weights(model: nn.Module, checkpoint: dict[str, Any], path: str | None = None) -> None:
    """`checkpoint`'s state_dict into `model`; weights that do not fit it are one error naming the file."""
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise MedlitError(
            f"the weights in {path or 'the checkpoint'} do not fit the model its configuration describes: {detail}"
        ) from None


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
