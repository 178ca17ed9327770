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
    """One ROC curve per class (binary tasks: the positive class), where the class has both outcomes."""
    curves = []
    for name, scores, positive in one_vs_rest(probs, target, class_names):
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, scores)
        curves.append(Curve(f"{prefix}{name}", fpr, tpr, auc(fpr, tpr)))
    return curves


def pooled_roc_curve(probs: np.ndarray, target: np.ndarray, label: str) -> Curve:
    """One ROC curve for a whole task: the positive class's, or multi-class one-vs-rest pooled over classes
    (micro average), as a comparison of runs overlays them."""
    if probs.ndim == 1:
        positive, scores = target == 1, probs
    else:
        positive, scores = np.eye(probs.shape[1], dtype=bool)[target].ravel(), probs.ravel()
    fpr, tpr, _ = roc_curve(positive, scores)
    return Curve(label, fpr, tpr, auc(fpr, tpr))


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


def reliability_figure(bins, title: str, judged: str) -> Figure:
    """A reliability diagram: each bin's observed frequency against its mean probability (the diagonal is
    perfect calibration), with the examples per bin below."""
    fig = Figure(figsize=(5.5, 6))
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    filled = bins.count > 0
    top.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    top.plot(bins.confidence[filled], bins.frequency[filled], "o-", lw=1.8, label="this model")
    top.set_ylabel("observed frequency" if judged.startswith("P(") else "accuracy")
    top.set_xlim(-0.01, 1.01)
    top.set_ylim(-0.01, 1.01)
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    edges = np.linspace(0, 1, len(bins.count) + 1)
    bottom.bar(edges[:-1], bins.count, width=np.diff(edges), align="edge", color="tab:blue", alpha=0.6)
    bottom.set_xlabel(judged)
    bottom.set_ylabel("examples")
    fig.tight_layout()
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
