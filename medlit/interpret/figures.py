"""The figures of explanations: images beside their heat maps or superpixel weights, and feature-map grids.

Each function returns a matplotlib `Figure` (drawn without pyplot), which an explanation run saves as PNG,
sends to TensorBoard and a notebook can show.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


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


def class_map_grid(
    images: Sequence[np.ndarray],
    maps: Sequence[Sequence[np.ndarray]],
    row_titles: Sequence[str],
    cell_titles: Sequence[Sequence[str]],
    title: str,
) -> Figure:
    """One row per example: the image, then one heat map in [0, 1] over it per class (`maps[i][c]`), each panel
    titled by `cell_titles[i][c]`."""
    rows, classes = len(images), max(len(m) for m in maps)
    fig = Figure(figsize=(1.9 * (classes + 1), 2.0 * rows + 0.6))
    axes = np.atleast_2d(fig.subplots(rows, classes + 1, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, heats) in enumerate(zip(images, maps, strict=True)):
        shown, cmap = _grey(image)
        axes[i, 0].imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        axes[i, 0].set_title(row_titles[i], fontsize=7, loc="left")
        for c, heat in enumerate(heats):
            ax = axes[i, c + 1]
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=0.45, interpolation="bilinear")
            ax.set_title(cell_titles[i][c], fontsize=7)
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
