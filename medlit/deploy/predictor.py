"""Predictions of a trained checkpoint on new inputs: image files (JPEG, PNG, DICOM) or review texts.

A `Predictor` prepares inputs exactly as the checkpoint's training data was prepared: images are decoded
by the data modules' own function (`medlit.data.decode`: greyscale, squashed to the stored image size,
channels repeated for RGB networks), left as uint8 for the Classifier to normalise with its stored
statistics, and called positive at the stored decision threshold; texts are tokenised by the tokenizer
stored with the checkpoint. Shared by `medlit predict`, `medlit export` and `medlit serve`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from medlit.data.decode import MAX_PIXELS, Source, decode_file
from medlit.deploy.rebuild import RestoredRun, rebuild_classifier
from medlit.errors import ConfigError, UnreadableInput

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One input's class probabilities and predicted class, or why it could not be read."""

    input: str
    probabilities: list[float] | None = None  # one per class (binary: P(negative), P(positive))
    predicted: str | None = None
    error: str | None = None


class Predictor:
    """A checkpoint's classifier with the input preparation and decision rule it was trained with; images
    declaring more than `max_pixels` pixels are refused before they are decoded."""

    def __init__(self, run: RestoredRun, max_pixels: int = MAX_PIXELS) -> None:
        self.run, self.model, self.max_pixels = run, run.model, int(max_pixels)
        self.class_names = [str(name) for name in self.model.class_names]
        self.tokenizer = _stored_tokenizer(run)
        datamodule = run.datamodule
        if self.tokenizer is None:
            self.image_size = int(datamodule.image_size)
            self.in_channels = int(datamodule.in_channels)
            if getattr(datamodule, "info", {}).get("n_channels", 1) != 1:
                raise ConfigError(
                    f"{run.cfg.ckpt_path} was trained on a colour MedMNIST data set; predictions read greyscale "
                    "images only"
                )

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | Path, max_pixels: int = MAX_PIXELS) -> Predictor:
        return cls(rebuild_classifier(OmegaConf.create({"ckpt_path": str(ckpt_path)}), named=[]), max_pixels)

    @property
    def is_text(self) -> bool:
        return self.tokenizer is not None

    @property
    def threshold(self) -> float | None:
        """The decision threshold of a binary model (P(positive) >= it: positive), None for multi-class."""
        return float(self.model.decision_threshold) if self.model.binary else None

    def read_image(self, source: Source, name: str | None = None) -> Tensor:
        """A file (or its bytes) as the uint8 (C, size, size) tensor the model was trained on."""
        grey = decode_file(source, self.image_size, name, self.max_pixels)
        return torch.tensor(grey).unsqueeze(0).expand(self.in_channels, -1, -1)

    def encode(self, texts: Sequence[str]) -> Tensor:
        """Token ids (N, max_len), as the training reviews were encoded."""
        from medlit.data.vocabulary import encode

        return encode(self.tokenizer, texts)

    @torch.no_grad()
    def probabilities(self, inputs: Tensor) -> Tensor:
        """Class probabilities (N, C); binary models: (P(negative), P(positive))."""
        self.model.eval()
        return self.model.class_probabilities(inputs.to(self.model.device)).cpu().double()

    def labels(self, probs: Tensor) -> list[str]:
        """Predicted classes: P(positive) >= the stored threshold (binary), the most probable class otherwise."""
        scores = probs[:, 1] if self.model.binary else probs
        return [self.class_names[i] for i in self.model.predict_labels(scores.to(self.model.device)).tolist()]

    def predict_files(self, paths: Sequence[Path], batch_size: int = 32) -> list[Prediction]:
        """One prediction per file, in order; a file that cannot be read gets its error instead."""
        results: list[Prediction] = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            read, batch = [], []
            for path in chunk:
                prediction = Prediction(str(path))
                try:
                    batch.append(self._read_text_file(path) if self.is_text else self.read_image(path))
                    read.append(prediction)
                except UnreadableInput as err:
                    prediction.error = str(err)
                    log.warning("Skipping: %s", err)
                results.append(prediction)
            if batch:
                self._fill(read, self.encode(batch) if self.is_text else torch.stack(batch))
        return results

    def predict_texts(self, texts: Sequence[str]) -> list[Prediction]:
        predictions = [Prediction(text) for text in texts]
        if texts:
            self._fill(predictions, self.encode(texts))
        return predictions

    def _fill(self, predictions: list[Prediction], inputs: Tensor) -> None:
        probs = self.probabilities(inputs)
        for prediction, row, label in zip(predictions, probs.tolist(), self.labels(probs), strict=True):
            prediction.probabilities, prediction.predicted = row, label

    def _read_text_file(self, path: Path) -> str:
        if not Path(path).is_file():
            raise UnreadableInput(f"{path} not found")
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UnreadableInput(f"{path} is not a readable UTF-8 text file ({err})") from None


def write_predictions(path: Path, predictions: Sequence[Prediction], class_names: Sequence[str]) -> None:
    """`input, p_<class>..., predicted, error`: one row per input, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [f"p_{name}" for name in class_names]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", *columns, "predicted", "error"])
        for p in predictions:
            probs = p.probabilities or [None] * len(columns)
            writer.writerow([p.input, *probs, p.predicted or "", p.error or ""])


def list_inputs(sources: Iterable[str | Path]) -> list[Path]:
    """Files as given and every visible file under folders (recursively, in sorted order).

    A path that does not exist is returned too: reading it reports it by name.
    """
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.is_file())
            files += sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            files.append(path)
    return files


def _stored_tokenizer(run: RestoredRun):
    """The tokenizer stored with a text checkpoint (the data module's saved state), else None."""
    target = str(run.cfg.data.get("_target_", "")) if isinstance(run.cfg.data, DictConfig) else ""
    state = run.checkpoint.get(target.rpartition(".")[2]) or {}
    if "tokenizer" not in state:
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_str(state["tokenizer"])
