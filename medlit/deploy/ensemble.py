"""Class probabilities averaged over several trained classifiers and over fixed views of each input.

An ensemble (several checkpoints: seeds, folds or different networks) and test-time augmentation (one network,
several views of each image) are the same operation: the mean of `class_probabilities` over members and views.
`Ensemble` is an `nn.Module` with the Classifier's prediction interface (`class_probabilities`,
`predict_labels`, `decision_threshold`, `class_names`, `binary`), so evaluation, `medlit predict`, the web app
and the ONNX export take it as they take one Classifier, and it exports as one graph. Each member keeps its
own temperature, so the average is of calibrated probabilities; an ensemble has its own decision threshold,
chosen on validation.

Views work on uint8 images (B, C, H, W), so the members see them as they see any input, and are written with
operations torch.export and ONNX take (flips, crops and resizing of a fixed size, padding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medlit.errors import ConfigError

ENSEMBLE_KEY = "medlit_ensemble"


def _zoom(images: Tensor, factor: float) -> Tensor:
    """The centre of each image enlarged by `factor` > 1 (a crop, resized back), or shrunk into a black frame."""
    height, width = images.shape[-2:]
    if factor > 1:
        h, w = round(height / factor), round(width / factor)
        top, left = (height - h) // 2, (width - w) // 2
        crop = images[..., top : top + h, left : left + w].float()
        resized = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
        return resized.round().clamp(0, 255).to(images.dtype)
    h, w = round(height * factor), round(width * factor)
    small = F.interpolate(images.float(), size=(h, w), mode="bilinear", align_corners=False)
    top, left = (height - h) // 2, (width - w) // 2
    framed = F.pad(small, (left, width - w - left, top, height - h - top))
    return framed.round().clamp(0, 255).to(images.dtype)


VIEWS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda images: images,
    "hflip": lambda images: images.flip(-1),
    "zoom_in": lambda images: _zoom(images, 1.1),
    "zoom_out": lambda images: _zoom(images, 0.9),
}


def check_views(views: Sequence[str]) -> list[str]:
    """The views, known and at least one; a clear error naming the unknown ones otherwise."""
    views = list(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ConfigError(f"tta={views}: choose one or more of {', '.join(VIEWS)}")
    return views


class Ensemble(nn.Module):
    """The weighted mean of `members`' class probabilities over `views` of each input.

    One member and several views is test-time augmentation; several members and `identity` a plain ensemble.
    Members must be classifiers of the same classes that take the same inputs. Views apply to images only.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        views: Sequence[str] = ("identity",),
        weights: Sequence[float] | None = None,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        first = members[0]
        for index, member in enumerate(members[1:], start=1):
            if list(member.class_names) != list(first.class_names):
                names, expected = list(member.class_names), list(first.class_names)
                raise ConfigError(f"member {index} predicts the classes {names}, member 0 {expected}")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"ensemble weights {weights}: one non-negative weight per member, not all zero")
        self.members = nn.ModuleList(members)
        self.views = check_views(views)
        self.register_buffer("weights", torch.tensor(weights) / sum(weights))
        self.register_buffer("decision_threshold", torch.tensor(float(threshold)))
        self.class_names = list(first.class_names)
        self.num_classes, self.binary = first.num_classes, first.binary

    @property
    def device(self) -> torch.device:
        return self.weights.device

    def class_probabilities(self, x: Tensor) -> Tensor:
        """(B, C): the weighted mean over members and views of each member's class probabilities."""
        if self.views != ["identity"] and not x.is_floating_point() and x.dtype != torch.uint8:
            raise ConfigError("test-time augmentation applies to images; this model reads token ids")
        total = 0
        for weight, member in zip(self.weights, self.members, strict=True):
            for view in self.views:
                total = total + weight * member.class_probabilities(VIEWS[view](x))
        return total / len(self.views)

    def predict_labels(self, probs: Tensor) -> Tensor:
        """Binary: P(positive) >= the ensemble's decision threshold; multi-class: the most probable class."""
        return (probs >= self.decision_threshold).long() if self.binary else probs.argmax(dim=1)


def with_views(model: nn.Module, views: Sequence[str] | None) -> nn.Module:
    """`model` predicting over `views` of each input (test-time augmentation), or `model` itself for None.

    A single classifier keeps its own decision threshold; an ensemble takes the views in place of its own.
    """
    if not views:
        return model
    if isinstance(model, Ensemble):
        return Ensemble(list(model.members), views, model.weights.tolist(), float(model.decision_threshold))
    return Ensemble([model], views, threshold=float(model.decision_threshold))


def ensemble_checkpoint(
    members: Sequence[dict], views: Sequence[str], weights: Sequence[float], threshold: float
) -> dict:
    """An ensemble as one checkpoint file: each member's own checkpoint (weights, configuration, data state),
    the views, weights and the ensemble's decision threshold. Loads with `torch.load(weights_only=True)`."""
    first = members[0]
    return {
        ENSEMBLE_KEY: {"views": list(views), "weights": [float(w) for w in weights]},
        "members": [_essentials(member) for member in members],
        "state_dict": {"decision_threshold": torch.tensor(float(threshold))},
        "hyper_parameters": first["hyper_parameters"],
        **{key: value for key, value in first.items() if key.endswith("DataModule")},
    }


def _essentials(checkpoint: dict) -> dict:
    """What a member needs to be rebuilt: no optimiser state, loops or callbacks."""
    return {key: value for key, value in checkpoint.items() if key in ("state_dict", "hyper_parameters")
            or key.endswith("DataModule")}  # fmt: skip
