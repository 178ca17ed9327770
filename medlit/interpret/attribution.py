"""Why a classifier decides what it decides, with captum: Grad-CAM, LIME, layer activations, Integrated Gradients.

Every method explains one class score per example. A binary Classifier has one logit z for the positive
class; it is explained through the scores (-z, z), so class 0 and class 1 are explained alike and the
target of an explanation is always a class index.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from captum.attr import LayerActivation, LayerAttribution, LayerGradCam, LayerIntegratedGradients, Lime
from skimage.segmentation import slic
from sklearn.linear_model import Ridge
from torch import Tensor, nn
from torch.utils.data import DataLoader

from medlit.errors import ConfigError
from medlit.training.classifier import Classifier

MAX_ACTIVATION_LAYERS = 12


class WeightedRidge:
    """LIME's surrogate: a ridge regression of the class score on the superpixels' on/off pattern, each sample
    weighted by its similarity to the image (the `fit`/`representation` interface captum's `Lime` takes)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha
        self.coef: Tensor | None = None

    def fit(self, batches: DataLoader) -> None:
        patterns, scores, weights = (torch.cat(parts).cpu().numpy() for parts in zip(*batches, strict=True))
        ridge = Ridge(alpha=self.alpha).fit(patterns, scores, sample_weight=weights)
        self.coef = torch.as_tensor(ridge.coef_, dtype=torch.float32).reshape(1, -1)

    def representation(self) -> Tensor:
        return self.coef


def class_scores(model: Classifier) -> Callable[[Tensor], Tensor]:
    """The model as a function from inputs to one score per class: (-z, z) for a binary model's logit z."""

    def forward(x: Tensor) -> Tensor:
        logits = model(x)
        return torch.cat([-logits, logits], dim=1) if model.binary else logits

    return forward


@contextlib.contextmanager
def without_inplace(model: nn.Module) -> Iterator[None]:
    """Turn off in-place activations while explaining: a hooked layer's output must survive the layers after it."""
    changed = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for module in changed:
        module.inplace = False
    try:
        yield
    finally:
        for module in changed:
            module.inplace = True


def as_unit_float(images: Tensor) -> Tensor:
    """uint8 0-255 images as float in [0, 1] (the Classifier's other input convention), differentiable."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def conv_layer_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def _feature_stages(model: nn.Module) -> list[str]:
    """The stage outputs a timm backbone declares (`feature_info`), as names within `model`."""
    for prefix, module in model.named_modules():
        info = getattr(module, "feature_info", None)
        modules = [f["module"] for f in info] if isinstance(info, list) and info and isinstance(info[0], dict) else []
        if not modules and info is not None and hasattr(info, "module_name"):
            modules = list(info.module_name())
        if modules:
            return [f"{prefix}.{name}" if prefix else name for name in modules]
    return []


def feature_maps(model: nn.Module, names: list[str], example: Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of the modules `names` in the order one forward pass runs them."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    hooks = []
    for name in names:
        module = model.get_submodule(name)

        def record(module, args, output, name=name):
            if isinstance(output, Tensor):
                seen.append((name, tuple(output.shape)))

        hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad(), without_inplace(model):
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def find_cam_layer(model: Classifier, example: Tensor, name: str | None = None) -> str:
    """The layer Grad-CAM explains: `name` if given, else the network's last convolutional feature map.

    That is the output of the last module, in the order the forward pass runs, that keeps the spatial size
    of the last convolution with more than one output position: the activation after the last convolution
    (ReLU, BatchNorm-activation), before any pooling. For a ResNet it is the last block's output, for
    VGG the ReLU after the last convolution, for DenseNet the final norm's activation.
    """
    modules = dict(model.named_modules())
    if name:
        if name not in modules:
            convs = conv_layer_names(model)
            close = difflib.get_close_matches(name, convs, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; convolutions: {', '.join(convs[-5:])}"
            raise ConfigError(f"layer={name} is not a module of this model{hint}")
        return name
    leaves = [n for n, m in modules.items() if n and not any(True for _ in m.children())]
    maps = [(n, s) for n, s in feature_maps(model, leaves, example) if len(s) == 4 and s[2] * s[3] > 1]
    convs = [i for i, (n, _) in enumerate(maps) if isinstance(modules[n], nn.Conv2d)]
    if not convs:
        raise ConfigError("this model has no convolutional feature map for Grad-CAM (an MLP or text model?)")
    size = maps[convs[-1]][1][2:]
    return [n for n, s in maps[convs[-1] :] if s[2:] == size][-1]


def activation_layers(model: Classifier) -> list[str]:
    """The blocks whose activations are shown: a timm backbone's stages, else every convolution (at most 12,
    spread evenly over the depth)."""
    names = _feature_stages(model) or conv_layer_names(model)
    if len(names) > MAX_ACTIVATION_LAYERS:
        keep = np.linspace(0, len(names) - 1, MAX_ACTIVATION_LAYERS).round().astype(int)
        names = [names[i] for i in sorted(set(keep))]
    return names


def grad_cam(model: Classifier, images: Tensor, target: Tensor, layer: str) -> Tensor:
    """Grad-CAM heat maps (B, H, W) in [0, 1] of class `target` for each image, upsampled to the image size.

    Positive evidence only (ReLU, as in the paper); each map is divided by its maximum, and an image
    without positive evidence gets a map of zeros.
    """
    inputs = as_unit_float(images)
    with without_inplace(model):
        cam = LayerGradCam(class_scores(model), model.get_submodule(layer)).attribute(
            inputs, target=target, relu_attributions=True
        )
    cam = LayerAttribution.interpolate(cam.detach(), tuple(inputs.shape[2:]), interpolate_mode="bilinear")
    cam = cam.squeeze(1).clamp(min=0)
    peak = cam.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    return cam / peak


def lime(
    model: Classifier, image: Tensor, target: int, segments: int = 40, samples: int = 300, seed: int = 0
) -> Tensor:
    """LIME weights (H, W) of class `target` over SLIC superpixels of one image (C, H, W).

    Switched-off superpixels take the image's mean intensity; a ridge regression on `samples` random
    on/off patterns, weighted by their similarity to the image, gives each superpixel's weight (positive:
    evidence for the class, negative: against it).
    """
    inputs = as_unit_float(image.unsqueeze(0))
    pixels = inputs[0].permute(1, 2, 0).cpu().numpy()
    labels = slic(
        pixels, n_segments=segments, compactness=0.1, channel_axis=-1, start_label=0, enforce_connectivity=True
    )
    mask = torch.from_numpy(labels).to(inputs.device).expand_as(inputs[0]).unsqueeze(0)
    explainer = Lime(class_scores(model), interpretable_model=WeightedRidge(alpha=1.0))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        weights = explainer.attribute(
            inputs,
            target=target,
            feature_mask=mask,
            baselines=float(inputs.mean()),
            n_samples=samples,
            perturbations_per_eval=32,
        )
    return weights[0, 0].detach().cpu()


def activations(model: Classifier, image: Tensor, layers: list[str], channels: int = 8) -> list[tuple[str, Tensor]]:
    """The first `channels` feature maps of each layer for one image (C, H, W): (layer, (k, h, w)) pairs."""
    inputs = as_unit_float(image.unsqueeze(0))
    modules = [model.get_submodule(name) for name in layers]
    with torch.no_grad(), without_inplace(model):
        outputs = LayerActivation(class_scores(model), modules).attribute(inputs)
    return [(name, out[0, :channels].detach().cpu()) for name, out in zip(layers, outputs, strict=True)]


def find_embedding(model: Classifier, name: str | None = None) -> str:
    """The token embedding Integrated Gradients interpolates: `name`, or the model's first nn.Embedding.

    It must give one vector per token: a bag of embeddings (nn.EmbeddingBag, as in fastText) pools them
    inside the layer, so it has no per-token output to attribute to.
    """
    modules = dict(model.named_modules())
    embeddings = [n for n, m in modules.items() if isinstance(m, nn.Embedding)]
    if name:
        if name not in modules:
            raise ConfigError(f"layer={name} is not a module of this model; embeddings: {', '.join(embeddings)}")
        return name
    if not embeddings:
        bags = [n for n, m in modules.items() if isinstance(m, nn.EmbeddingBag)]
        if bags:
            raise ConfigError(
                f"{bags[0]} is a bag of embeddings, pooled inside the layer: this model has no per-token "
                "embedding for Integrated Gradients to attribute to"
            )
        raise ConfigError("this model has no token embedding for Integrated Gradients (an image model?)")
    return embeddings[0]


def integrated_gradients(
    model: Classifier, ids: Tensor, target: Tensor, layer: str, pad_id: int, unknown_id: int, steps: int = 50
) -> tuple[Tensor, Tensor]:
    """Per-token attributions (B, L) of class `target` by Integrated Gradients on the embedding `layer`,
    and the convergence deltas (B,).

    The path starts at the review with every word replaced by the unknown-word token: the same length and
    padding, so models that read up to the last word or mask the padding see the same shapes all the way.
    A token's attribution is the sum over its embedding dimensions; they add up (to within the delta) to
    the class score of the review minus that of the all-unknown one.
    """
    explainer = LayerIntegratedGradients(class_scores(model), model.get_submodule(layer))
    baseline = torch.where(ids == pad_id, torch.full_like(ids, pad_id), torch.full_like(ids, unknown_id))
    with without_inplace(model):
        attributions, delta = explainer.attribute(
            ids, baselines=baseline, target=target, n_steps=steps, internal_batch_size=64,
            return_convergence_delta=True,
        )  # fmt: skip
    scores = attributions.sum(dim=-1).detach().cpu()
    # networks that cut a batch to its longest review attribute to that many positions: the rest is padding
    scores = torch.nn.functional.pad(scores, (0, ids.shape[1] - scores.shape[1]))
    return scores, delta.detach().cpu()
