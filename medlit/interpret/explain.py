"""Explanations of a trained model's decisions on chosen examples of a split (what `medlit explain` writes).

Images: Grad-CAM heat maps (of the predicted class, and for multi-class tasks of every class side by side),
LIME superpixel weights and the first feature maps of each convolutional block.
Text: Integrated Gradients token attributions as highlighted HTML. The examples are the most confident true
and false positives and negatives (binary tasks) or right and wrong predictions (multi-class), or the
`indices` given. Outputs go to `<run dir>/explain/` and its TensorBoard log.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from medlit.errors import ConfigError
from medlit.evaluation.plots import save_figure
from medlit.evaluation.predictions import Predictions, predict
from medlit.evaluation.report import SPLITS
from medlit.interpret import attribution, figures
from medlit.interpret.render import html_page, token_html
from medlit.training.classifier import Classifier

log = logging.getLogger(__name__)

IMAGE_METHODS = ("gradcam", "lime", "activations")
TEXT_METHODS = ("integrated_gradients",)
GROUP_NAMES = {
    "tp": "true positive",
    "fp": "false positive",
    "tn": "true negative",
    "fn": "false negative",
    "right": "right",
    "wrong": "wrong",
}


@dataclass
class Example:
    """One explained example: its index in the split, group, true and predicted class, and confidence."""

    index: int
    group: str
    target: int
    predicted: int
    probability: float  # of the predicted class

    def title(self, class_names: list[str]) -> str:
        return (
            f"{GROUP_NAMES[self.group]} #{self.index}: {class_names[self.target]}\n"
            f"predicted {class_names[self.predicted]} ({self.probability:.2f})"
        )


def choose_examples(
    predictions: Predictions, threshold: float, per_group: int, indices: list[int] | None = None
) -> list[Example]:
    """The `per_group` most confident examples of each group, or the examples at `indices`.

    Binary tasks: true positives, false positives, true negatives, false negatives (the confidently wrong
    ones are the instructive ones). Multi-class tasks: right and wrong predictions.
    """
    probs, target = predictions.probs, predictions.target
    binary = probs.ndim == 1
    predicted = (probs >= threshold).astype(int) if binary else probs.argmax(axis=1)
    confidence = np.where(predicted == 1, probs, 1 - probs) if binary else probs.max(axis=1)

    def group(i: int) -> str:
        if binary:
            return ("t" if predicted[i] == target[i] else "f") + ("p" if predicted[i] == 1 else "n")
        return "right" if predicted[i] == target[i] else "wrong"

    if indices is not None:
        bad = [i for i in indices if not 0 <= i < len(target)]
        if bad:
            raise ConfigError(f"indices {bad} are outside the split's {len(target)} examples")
        chosen = list(indices)
    else:
        order = np.argsort(-confidence, kind="stable")
        groups = ("tp", "fp", "tn", "fn") if binary else ("right", "wrong")
        chosen = [i for name in groups for i in [j for j in order if group(j) == name][:per_group]]
    return [Example(int(i), group(i), int(target[i]), int(predicted[i]), float(confidence[i])) for i in chosen]


def methods_for(requested: list[str] | None, is_text: bool) -> list[str]:
    """The methods to run: those requested, checked against the kind of model, or its defaults."""
    valid = TEXT_METHODS if is_text else IMAGE_METHODS
    if requested is None:
        return list(TEXT_METHODS if is_text else ("gradcam", "activations"))
    wrong = [m for m in requested if m not in valid]
    if wrong:
        kind = "a text model" if is_text else "an image model"
        raise ConfigError(f"methods {wrong} do not apply to {kind}; choose from {', '.join(valid)}")
    return list(requested)


@dataclass
class Explanations:
    """Figures by name (`gradcam`, `lime`, `activations`, `gradcam/<group>_<index>` per example and, for
    multi-class tasks, `gradcam_per_class`), the Integrated Gradients page for text, and a Markdown summary of
    it for TensorBoard."""

    examples: list[Example]
    figures: dict[str, Figure] = field(default_factory=dict)
    html: str | None = None
    summary: str | None = None


def explain_examples(
    model: Classifier,
    datamodule,
    split: str = "test",
    methods: list[str] | None = None,
    examples: int = 2,
    indices: list[int] | None = None,
    layer: str | None = None,
    activation_channels: int = 8,
    lime_segments: int = 40,
    lime_samples: int = 300,
    ig_steps: int = 50,
    seed: int = 0,
) -> Explanations:
    """Explain the chosen examples of `split` of a set-up data module with `methods` (see `IMAGE_METHODS`,
    `TEXT_METHODS`)."""
    if split not in SPLITS:
        raise ConfigError(f"split={split}; choose one of {', '.join(SPLITS)}")
    dataset = getattr(datamodule, f"{split}_set")
    first = dataset[0][0]
    methods = methods_for(methods, is_text=not first.is_floating_point() and first.dtype != torch.uint8)
    predictions = predict(model, datamodule.evaluation_dataloader(split))
    chosen = choose_examples(predictions, float(model.decision_threshold), examples, indices)
    if not chosen:
        raise ConfigError(f"the {split} split has no examples to explain")
    inputs = torch.stack([dataset[e.index][0] for e in chosen]).to(model.device)
    targets = torch.tensor([e.predicted for e in chosen], device=model.device)
    names = [str(c) for c in model.class_names]
    titles = [e.title(names) for e in chosen]
    result = Explanations(chosen)
    if "gradcam" in methods:
        name = attribution.find_cam_layer(model, inputs[:1], layer)
        heat = attribution.grad_cam(model, inputs, targets, name).cpu().numpy()
        result.figures["gradcam"] = _pairs(inputs, heat, titles, f"Grad-CAM ({name}) of the predicted class")
        for example, image, example_heat, title in zip(chosen, _images(inputs), heat, titles, strict=True):
            fig = figures.explanation_grid([image], [example_heat], [title], 1, "Grad-CAM")
            result.figures[f"gradcam/{example.group}_{example.index}"] = fig
        if not model.binary:
            probs = predictions.probs[[e.index for e in chosen]]
            result.figures["gradcam_per_class"] = _cam_per_class(model, inputs, name, titles, names, probs)
    if "lime" in methods:
        weights = [
            attribution.lime(model, image, example.predicted, lime_segments, lime_samples, seed).numpy()
            for example, image in zip(chosen, inputs, strict=True)
        ]
        what = "LIME superpixels: green for, red against the predicted class"
        result.figures["lime"] = _pairs(inputs, weights, titles, what, diverging=True)
    if "activations" in methods:
        maps = attribution.activations(model, inputs[0], attribution.activation_layers(model), activation_channels)
        result.figures["activations"] = figures.activation_figure(
            [(name, m.numpy()) for name, m in maps], f"First feature maps of each block: {titles[0].splitlines()[0]}"
        )
    if "integrated_gradients" in methods:
        result.html, result.summary = _explain_text(model, datamodule, inputs, targets, chosen, names, layer, ig_steps)
    return result


def write_explanations(result: Explanations, output_dir: Path, loggers: list = (), step: int = 0) -> None:
    """PNGs (`<name>.png`), `integrated_gradients.html`, `examples.csv`; grids and text to TensorBoard."""
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_examples(output_dir / "examples.csv", result.examples)
    tensorboards = [logger for logger in loggers if isinstance(logger, TensorBoardLogger)]
    for name, fig in result.figures.items():
        save_figure(fig, output_dir / f"{name}.png")
        if "/" not in name:
            for logger in tensorboards:
                logger.experiment.add_figure(f"explain/{name}", fig, global_step=step)
    if result.html is not None:
        (output_dir / "integrated_gradients.html").write_text(result.html)
        for logger in tensorboards:
            logger.experiment.add_text("explain/integrated_gradients", result.summary, global_step=step)
    for logger in tensorboards:
        logger.finalize("success")
    log.info("Explanations of %d examples written to %s", len(result.examples), output_dir)


def _cam_per_class(
    model: Classifier, inputs: Tensor, layer: str, titles: list[str], names: list[str], probs: np.ndarray
) -> Figure:
    """Every example's Grad-CAM of every class side by side: where the network finds evidence for each."""
    per_class = [
        attribution.grad_cam(model, inputs, torch.full((len(inputs),), c, device=inputs.device), layer).cpu().numpy()
        for c in range(len(names))
    ]
    maps = [[heat[i] for heat in per_class] for i in range(len(inputs))]
    cells = [[f"{name} ({p:.2f})" for name, p in zip(names, row, strict=True)] for row in probs]
    return figures.class_map_grid(_images(inputs), maps, titles, cells, f"Grad-CAM ({layer}) of each class")


def _images(inputs: Tensor) -> list[np.ndarray]:
    return [image.permute(1, 2, 0).cpu().numpy() for image in attribution.as_unit_float(inputs)]


def _pairs(inputs: Tensor, maps, titles: list[str], title: str, **kwargs) -> Figure:
    columns = min(4, len(titles))
    return figures.explanation_grid(_images(inputs), list(maps), titles, columns, title, **kwargs)


def _explain_text(model, datamodule, ids, targets, examples, names, layer, steps) -> tuple[str, str]:
    """The Integrated Gradients page and its TensorBoard summary (strongest words for and against)."""
    tokenizer = getattr(datamodule, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError(f"{type(datamodule).__name__} has no tokenizer to show the reviews' words with")
    pad_id = int(tokenizer.padding["pad_id"])
    unknown_id = tokenizer.token_to_id(tokenizer.model.unk_token)
    layer = attribution.find_embedding(model, layer)
    scores, deltas = attribution.integrated_gradients(model, ids, targets, layer, pad_id, unknown_id, steps)
    sections, lines = [], []
    for example, row, score, delta in zip(examples, ids.cpu(), scores, deltas, strict=True):
        keep = row != pad_id
        words = [tokenizer.id_to_token(int(i)) for i in row[keep]]
        values = score[keep].numpy()
        heading = example.title(names).replace("\n", ", ")
        sections.append(token_html(words, values, heading, float(delta)))
        order = np.argsort(values)
        top, bottom = ", ".join(words[i] for i in order[::-1][:5]), ", ".join(words[i] for i in order[:5])
        lines.append(f"**{heading}**: for: {top}; against: {bottom}")
    return html_page(f"Integrated Gradients ({layer})", sections), "\n\n".join(lines)


def _write_examples(path: Path, examples: list[Example]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "index", "target", "predicted", "confidence"])
        for e in examples:
            writer.writerow([e.group, e.index, e.target, e.predicted, f"{e.probability:.4f}"])
