"""The figures of evaluation reports and comparisons: confusion matrices, ROC and precision-recall curves.

Each function returns a matplotlib `Figure`, so a report can save it as PNG, send it to TensorBoard and a
notebook can show it, from one drawing. Figures are made without pyplot: no global figure list to leak
into, and no GUI backend, in a training job or a notebook alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve


@dataclass
class Curve:
    """One labelled curve: (x, y) points and the area that summarises it."""

    label: str
    x: np.ndarray
    y: np.ndarray
    area: float


def one_vs_rest(probs: np.ndarray, target: np.ndarray, class_names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(name, is-this-class) and its scores, per class; binary tasks have the positive class only."""
    if probs.ndim == 1:
        return [(str(class_names[1]), probs, target == 1)]
    return [(str(name), probs[:, c], target == c) for c, name in enumerate(class_names)]


def roc_curves(probs: np.ndarray, target: np.ndarray, class_names: Sequence[str], prefix: str = "") -> list[Curve]:
    curves = []
    for name, scores, positive in one_vs_rest(probs, target, class_names):
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, scores)
        curves.append(Curve(f"{prefix}{name}", fpr, tpr, auc(fpr, tpr)))
    return curves


def pr_curves(probs: np.ndarray, target: np.ndarray, class_names: Sequence[str]) -> list[Curve]:
    curves = []
    for name, scores, positive in one_vs_rest(probs, target, class_names):
        if not positive.any():
            continue
        precision, recall, _ = precision_recall_curve(positive, scores)
        curves.append(Curve(name, recall, precision, average_precision_score(positive, scores)))
    return curves


def colours(count: int) -> list:
    """Distinct line colours: matplotlib's ten, or twenty for more curves (OrganCMNIST's eleven classes)."""
    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def roc_figure(curves: Sequence[Curve], title: str, point: tuple[float, float] | None = None) -> Figure:
    """ROC curves with their AUROC in the legend; `point` marks the operating point (FPR, TPR)."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for curve, colour in zip(curves, colours(len(curves)), strict=True):
        ax.plot(curve.x, curve.y, lw=1.8, color=colour, label=f"{curve.label} (AUROC {curve.area:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    if point is not None:
        ax.plot(*point, "o", c="black", ms=7, label=f"threshold (sens {point[1]:.2f}, spec {1 - point[0]:.2f})")
    _axes(ax, "false positive rate (1 - specificity)", "true positive rate (sensitivity)", title)
    return fig


def pr_figure(
    curves: Sequence[Curve], title: str, prevalence: float | None = None, point: tuple[float, float] | None = None
) -> Figure:
    """Precision-recall curves with their average precision; `prevalence` draws a binary task's chance line."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for curve, colour in zip(curves, colours(len(curves)), strict=True):
        ax.plot(curve.x, curve.y, lw=1.8, color=colour, label=f"{curve.label} (AP {curve.area:.3f})")
    if prevalence is not None:
        ax.axhline(prevalence, ls="--", c="grey", lw=1, label=f"chance (prevalence {prevalence:.2f})")
    if point is not None:
        ax.plot(*point, "o", c="black", ms=7, label=f"threshold (recall {point[0]:.2f}, precision {point[1]:.2f})")
    _axes(ax, "recall (sensitivity)", "precision", title)
    return fig


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Counts with each row's share of its true class; rows are true classes, columns predictions."""
    n = len(class_names)
    size = max(4.0, 0.55 * n + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    small = n > 4
    for i in range(n):
        for j in range(n):
            text = f"{matrix[i, j]}" if small else f"{matrix[i, j]}\n{shares[i, j]:.1%}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7 if small else 11,
                    color="white" if shares[i, j] > 0.5 else "black")  # fmt: skip
    names = [str(c) for c in class_names]
    ax.set_xticks(range(n), names, rotation=45 if small else 0, ha="right" if small else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _axes(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if "positive" in xlabel else "lower left", fontsize=8)
    ax.figure.tight_layout()


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _grey(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(H, W) greyscale or (H, W, 3) colour image in [0, 1] and the colour map to show it with."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return image, ("gray" if image.ndim == 2 else None)


def explanation_grid(
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    titles: Sequence[str],
    columns: int,
    title: str,
    diverging: bool = False,
) -> Figure:
    """Each example as a pair of panels, the image and its explanation map over it, `columns` pairs a row.

    Heat maps in [0, 1] use a sequential colour map; `diverging` maps (LIME weights) are shown in red
    (against the class) and green (for it), more opaque the stronger they are.
    """
    count = len(images)
    rows = max(1, -(-count // columns))
    fig = Figure(figsize=(3.2 * columns, 1.9 * rows + 0.6))
    axes = np.atleast_2d(fig.subplots(rows, 2 * columns, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    limit = max((float(np.abs(m).max()) for m in maps), default=1.0) or 1.0
    for i, (image, heat, label) in enumerate(zip(images, maps, titles, strict=True)):
        left, right = axes[i // columns, 2 * (i % columns)], axes[i // columns, 2 * (i % columns) + 1]
        shown, cmap = _grey(image)
        left.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        left.set_title(label, fontsize=8, loc="left")
        right.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        if diverging:
            right.imshow(_signed_overlay(heat, limit), interpolation="nearest")
        else:
            right.imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=0.45, interpolation="bilinear")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _signed_overlay(weights: np.ndarray, limit: float) -> np.ndarray:
    """RGBA: green where `weights` > 0, red where < 0, opaque in proportion to |weight| / limit."""
    strength = np.clip(np.abs(weights) / limit, 0, 1)
    rgba = np.zeros((*weights.shape, 4))
    rgba[..., :3] = np.where((weights > 0)[..., None], (0.1, 0.6, 0.2), (0.85, 0.15, 0.1))
    rgba[..., 3] = 0.75 * strength
    return rgba


def activation_figure(layers: Sequence[tuple[str, np.ndarray]], title: str) -> Figure:
    """One row per layer: its first feature maps (k, h, w), each scaled to its own range."""
    channels = max(len(maps) for _, maps in layers)
    fig = Figure(figsize=(1.3 * channels + 1.5, 1.35 * len(layers) + 0.6))
    axes = np.atleast_2d(fig.subplots(len(layers), channels, squeeze=False))
    for row, (name, maps) in enumerate(layers):
        for col in range(channels):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(maps):
                ax.imshow(maps[col], cmap="viridis", interpolation="nearest")
            else:
                ax.axis("off")
            if col == 0:
                height, width = maps.shape[1:]
                ax.set_ylabel(f"{name}\n{width}×{height}", fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
