"""Predictions of a trained checkpoint on new inputs: image files (JPEG, PNG, DICOM) or review texts.

A `Predictor` prepares inputs exactly as the checkpoint's training data was prepared: images are decoded
by the chest X-ray data module's own function (greyscale, squashed to the stored image size, channels
repeated for RGB networks), left as uint8 for the Classifier to normalise with its stored statistics, and
called positive at the stored decision threshold; texts are tokenised by the tokenizer stored with the
checkpoint. Shared by `python -m medlit.predict`, `medlit.export` and `medlit.serve`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from pydicom.errors import InvalidDicomError
from torch import Tensor

from medlit.data.image_cache import decode_image, grey_square
from medlit.errors import ConfigError
from medlit.rebuild import RestoredRun, rebuild_classifier

log = logging.getLogger(__name__)

# what decoding may raise when a file is not what it should be (the chest X-ray data module's list)
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# and what pydicom may raise for a damaged or unsupported DICOM file (e.g. a compression it cannot decode)
DICOM_ERRORS = (*READ_ERRORS, EOFError, InvalidDicomError, RuntimeError, NotImplementedError, AttributeError, KeyError)


class UnreadableInput(Exception):
    """An input that cannot be read; the message says which and why."""


@dataclass
class Prediction:
    """One input's class probabilities and predicted class, or why it could not be read."""

    input: str
    probabilities: list[float] | None = None  # one per class (binary: P(negative), P(positive))
    predicted: str | None = None
    error: str | None = None


class Predictor:
    """A checkpoint's classifier with the input preparation and decision rule it was trained with."""

    def __init__(self, run: RestoredRun) -> None:
        self.run, self.model = run, run.model
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
    def from_checkpoint(cls, ckpt_path: str | Path) -> Predictor:
        return cls(rebuild_classifier(OmegaConf.create({"ckpt_path": str(ckpt_path)}), named=[]))

    @property
    def is_text(self) -> bool:
        return self.tokenizer is not None

    @property
    def threshold(self) -> float | None:
        """The decision threshold of a binary model (P(positive) >= it: positive), None for multi-class."""
        return float(self.model.decision_threshold) if self.model.binary else None

    def read_image(self, source: str | Path | bytes, name: str | None = None) -> Tensor:
        """A file (or its bytes) as the uint8 (C, size, size) tensor the model was trained on."""
        name = name or str(source)
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise UnreadableInput(f"{name} not found")
        if is_dicom(source):
            try:
                grey = grey_square(dicom_image(source), self.image_size)
            except DICOM_ERRORS as err:
                raise UnreadableInput(f"{name} is not a readable DICOM image ({type(err).__name__}: {err})") from None
        else:
            try:
                grey = decode_image(io.BytesIO(source) if isinstance(source, bytes) else str(source), self.image_size)
            except READ_ERRORS as err:
                reason = str(err).split(" <_io.BytesIO")[0]  # an upload has no file name for PIL to show
                raise UnreadableInput(f"{name} is not a readable image ({type(err).__name__}: {reason})") from None
        return torch.tensor(grey).unsqueeze(0).expand(self.in_channels, -1, -1)

    def encode(self, texts: Sequence[str]) -> Tensor:
        """Token ids (N, max_len), as the training reviews were encoded."""
        from medlit.data.vocabulary import encode

        return encode(self.tokenizer, texts)

    @torch.no_grad()
    def probabilities(self, inputs: Tensor) -> Tensor:
        """Class probabilities (N, C); binary models: (P(negative), P(positive))."""
        probs = self.model.probabilities(self.model(inputs.to(self.model.device))).cpu().double()
        return torch.stack([1 - probs, probs], dim=1) if self.model.binary else probs

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
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UnreadableInput(f"{path} is not a readable UTF-8 text file ({err})") from None


def is_dicom(source: str | Path | bytes) -> bool:
    """Whether a file (or bytes) holds DICOM: the `DICM` marker after the 128-byte preamble."""
    if isinstance(source, bytes):
        return source[128:132] == b"DICM"
    from pydicom.misc import is_dicom as has_marker

    try:
        return has_marker(str(source))
    except OSError:
        return False


def dicom_image(source: str | Path | bytes) -> Image.Image:
    """A DICOM image as 8-bit greyscale, displayed as its file says it should be.

    pydicom applies the modality LUT (rescale slope and intercept) and the VOI LUT or window (centre and
    width) stored in the file; the result is stretched to 0-255 and inverted for MONOCHROME1, where low
    values are bright, so bone is white as in the JPEGs the models are trained on.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    if "PixelData" not in dataset:
        raise ValueError("the DICOM file holds no image (no PixelData)")
    pixels = dataset.pixel_array
    if pixels.ndim != 2:
        raise ValueError(f"expected one greyscale frame, got pixel data of shape {pixels.shape}")
    values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float64)
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 255 - scaled
    return Image.fromarray(scaled.round().astype(np.uint8))


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
