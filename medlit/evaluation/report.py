"""The evaluation report of a trained classifier on one split, shared by `medlit train` and `medlit eval`.

A report is computed from the model's predictions on every example of the split, in one process: point
metrics at the decision threshold, 95 % bootstrap intervals, a per-class classification report (multi-class
tasks: each class's precision, recall, specificity, F1 and AUROC with intervals, and their macro average), the
confusion matrix and ROC and precision-recall curves. A multi-class task whose data pools its classes into a
two-class one (`BinaryView`, e.g. pneumonia against normal from a normal/bacterial/viral network) gets that
task's metrics too. It is written to a run directory (Markdown, CSV, PNG, a predictions table that keeps
what identifies each example, such as its file) and to TensorBoard.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    precision_score,
)
from torch import nn

from medlit.data.base import BinaryView
from medlit.evaluation import bootstrap, plots
from medlit.evaluation.calibration import reliability
from medlit.evaluation.predictions import Predictions, predict, predicted_labels, prediction_rows

log = logging.getLogger(__name__)

# the splits a trained model is reported on and explained on
SPLITS = ("test", "val")


@dataclass
class PooledReport:
    """The two-class task a multi-class one pools into (see `BinaryView`), at P(positive) >= 0.5."""

    view: BinaryView
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]

    @property
    def key(self) -> str:
        return f"{self.view.positive}_vs_{self.view.negative}".lower().replace(" ", "_")


@dataclass
class Report:
    """Everything reported about one split; `flat()` is what metrics.json and TensorBoard receive."""

    split: str
    class_names: list[str]
    threshold: float | None
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    level: float
    per_class: list[dict]
    confusion: np.ndarray
    predictions: Predictions
    pooled: PooledReport | None = None
    columns: list[dict[str, str]] | None = None  # per example, in order: what identifies it (its file, ...)

    @property
    def binary(self) -> bool:
        return self.predictions.probs.ndim == 1

    def flat(self) -> dict[str, float]:
        """`<split>/<metric>`, `<split>/<metric>_ci_low|_ci_high` and `<split>/threshold` (binary tasks);
        multi-class tasks also `<split>/<metric>/<class>` (and its interval) for `bootstrap.PER_CLASS`, and
        `<split>/<positive>_vs_<negative>/<metric>` for a pooled two-class view."""
        split = self.split
        values = _with_intervals(split, self.metrics, self.intervals)
        if self.threshold is not None:
            values[f"{split}/threshold"] = self.threshold
        if not self.binary:
            for row in self.per_class[: len(self.class_names)]:
                name = row["class"].replace(" ", "_")
                for metric in bootstrap.PER_CLASS:
                    values[f"{split}/{metric}/{name}"] = row[metric]
                    values[f"{split}/{metric}/{name}_ci_low"] = row[f"{metric}_ci_low"]
                    values[f"{split}/{metric}/{name}_ci_high"] = row[f"{metric}_ci_high"]
        if self.pooled is not None:
            values.update(_with_intervals(f"{split}/{self.pooled.key}", self.pooled.metrics, self.pooled.intervals))
        return values


def _with_intervals(prefix: str, metrics: dict[str, float], intervals: dict[str, tuple[float, float]]) -> dict:
    values = {f"{prefix}/{name}": value for name, value in metrics.items()}
    for name, (low, high) in intervals.items():
        values[f"{prefix}/{name}_ci_low"], values[f"{prefix}/{name}_ci_high"] = low, high
    return values


def build_report(
    predictions: Predictions,
    class_names: list[str],
    split: str,
    threshold: float | None = 0.5,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    binary_view: BinaryView | None = None,
) -> Report:
    """Metrics, intervals, per-class table and confusion matrix of `predictions` at `threshold`.

    Binary precision, recall (sensitivity), specificity and F1 are those of the positive class;
    multi-class ones are macro averages, as in training, and each class's come with intervals in the
    per-class table. `threshold` is ignored for multi-class tasks. `binary_view` adds the pooled two-class
    task of a multi-class one.
    """
    probs, target = predictions.probs, predictions.target
    binary = probs.ndim == 1
    threshold = threshold if binary else None
    cut = 0.5 if threshold is None else threshold
    predicted = predicted_labels(probs, cut)
    labels = list(range(len(class_names)))
    core = {k: float(v[0]) for k, v in bootstrap.metric_values(probs, target, cut, np.ones((1, len(target)))).items()}
    average = "binary" if binary else "macro"
    metrics = {
        "acc": core["acc"],
        "precision": float(precision_score(target, predicted, average=average, labels=labels, zero_division=0)),
        "recall": core["recall"],
        "specificity": core["specificity"],
        "f1": float(f1_score(target, predicted, average=average, labels=labels, zero_division=0)),
        "auroc": core["auroc"],
        "ap": _average_precision(probs, target, labels),
        "loss": predictions.loss,
        "ece": core["ece"],
        "brier": core["brier"],
    }
    precision, recall, f1, support = precision_recall_fscore_support(target, predicted, labels=labels, zero_division=0)
    per_class = [
        {"class": str(name), "precision": p, "recall": r, "f1": f, "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
    ]
    for label, weights in (("macro avg", None), ("weighted avg", support)):
        row = {"class": label, "support": int(support.sum())}
        for key, values in (("precision", precision), ("recall", recall), ("f1", f1)):
            row[key] = float(np.average(values, weights=weights)) if support.sum() else 0.0
        per_class.append(row)
    intervals = bootstrap.confidence_intervals(probs, target, cut, resamples, level, seed)
    if not binary:
        intervals = _per_class_intervals(per_class, core, intervals)
    return Report(
        split=split,
        class_names=[str(c) for c in class_names],
        threshold=threshold,
        metrics=metrics,
        intervals=intervals,
        level=level,
        per_class=per_class,
        confusion=confusion_matrix(target, predicted, labels=labels),
        predictions=predictions,
        pooled=None if binary or binary_view is None else _pooled(predictions, binary_view, resamples, level, seed),
    )


def _per_class_intervals(
    per_class: list[dict], core: dict[str, float], intervals: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """Each class's `bootstrap.PER_CLASS` metrics with their intervals (`<metric>/<class index>` in `core` and
    `intervals`) into its row of `per_class`, the macro ones into the macro row; the intervals of the
    whole-task metrics are returned."""
    macro = per_class[-2]
    macro["specificity"], macro["auroc"] = core["specificity"], core["auroc"]
    for index, row in enumerate([*per_class[:-2], macro]):
        key = "" if row is macro else f"/{index}"
        filled = {"class": row["class"]}
        for metric in bootstrap.PER_CLASS:
            filled[metric] = row[metric] if row is macro else core[metric + key]
            filled[f"{metric}_ci_low"], filled[f"{metric}_ci_high"] = intervals[metric + key]
        filled["support"] = row["support"]
        row.clear()
        row.update(filled)
    return {name: value for name, value in intervals.items() if "/" not in name}


def _pooled(predictions: Predictions, view: BinaryView, resamples: int, level: float, seed: int) -> PooledReport:
    """The two-class view: P(positive) is the members' probabilities summed; positive at >= 0.5."""
    probs = predictions.probs[:, list(view.members)].sum(axis=1)
    target = np.isin(predictions.target, view.members).astype(np.int64)
    point = bootstrap.metric_values(probs, target, 0.5, np.ones((1, len(target))))
    metrics = {name: float(value[0]) for name, value in point.items()}
    metrics["ap"] = _average_precision(probs, target, [0, 1])
    return PooledReport(view, metrics, bootstrap.confidence_intervals(probs, target, 0.5, resamples, level, seed))


def _average_precision(probs: np.ndarray, target: np.ndarray, labels: list[int]) -> float:
    """Area under the precision-recall curve (macro over classes for multi-class tasks)."""
    if probs.ndim == 1:
        return float(average_precision_score(target, probs)) if (target == 1).any() else math.nan
    present = [c for c in labels if (target == c).any()]
    return float(np.mean([average_precision_score(target == c, probs[:, c]) for c in present]))


def evaluate(
    model: nn.Module,
    datamodule,
    split: str,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Report:
    """Predict every example of `split` of a set-up data module and report on it at the model's decision
    threshold (`model` as `predict` takes it, with `class_names` and `decision_threshold`). The data module's
    `binary_view` and `example_columns(split)` (what identifies each example), where it has them, go in too."""
    predictions = predict(model, datamodule.evaluation_dataloader(split))
    threshold = float(model.decision_threshold) if model.binary else None
    view = getattr(datamodule, "binary_view", None)
    report = build_report(predictions, list(model.class_names), split, threshold, resamples, level, seed, view)
    if hasattr(datamodule, "example_columns"):
        report.columns = datamodule.example_columns(split)
    return report


def figures(report: Report) -> dict[str, Figure]:
    """The confusion matrix, ROC, precision-recall and reliability figures of a report, by name."""
    probs, target, names = report.predictions.probs, report.predictions.target, report.class_names
    split = {"val": "validation"}.get(report.split, report.split)
    at = f" at threshold {report.threshold:.3f}" if report.threshold is not None else ""
    roc_point = pr_point = prevalence = None
    if report.threshold is not None:
        m = report.metrics
        roc_point = (1 - m["specificity"], m["recall"])
        pr_point = (m["recall"], m["precision"])
        prevalence = float((target == 1).mean())
    return {
        "confusion_matrix": plots.confusion_figure(report.confusion, names, f"{split} split{at}"),
        "roc": plots.roc_figure(plots.roc_curves(probs, target, names), f"ROC, {split} split", roc_point),
        "pr": plots.pr_figure(
            plots.pr_curves(probs, target, names), f"Precision-recall, {split} split", prevalence, pr_point
        ),
        "reliability": plots.reliability_figure(
            reliability(probs, target),
            f"Reliability, {split} split (ECE {report.metrics['ece']:.3f})",
            f"P({names[1]})" if probs.ndim == 1 else "confidence (top class)",
        ),
    }


def markdown(report: Report) -> str:
    """The report as Markdown: metrics with intervals, the classification report, the confusion matrix (and the
    pooled two-class view of a multi-class task)."""
    pct = f"{report.level:.0%}"
    lines = [f"# Evaluation on the {report.split} split ({len(report.predictions.target)} examples)", ""]
    if report.threshold is not None:
        lines += [f"Decision threshold: P({report.class_names[1]}) >= {report.threshold:.4f}", ""]
    lines += _metric_table(report.metrics, report.intervals, pct)
    lines += ["", "## Classification report", "", *_class_table(report, pct)]
    lines += ["", "## Confusion matrix (rows: true class, columns: predicted)", ""]
    lines += ["| | " + " | ".join(report.class_names) + " |", "| --- " * (len(report.class_names) + 1) + "|"]
    for name, row in zip(report.class_names, report.confusion, strict=True):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    if report.pooled is not None:
        view = report.pooled.view
        summed = " + ".join(f"P({report.class_names[c]})" for c in view.members)
        lines += ["", f"## {view.positive} against {view.negative}", ""]
        lines += [f"From the same network: P({view.positive}) = {summed}, {view.positive} when >= 0.5.", ""]
        lines += _metric_table(report.pooled.metrics, report.pooled.intervals, pct)
    return "\n".join(lines) + "\n"


def _metric_table(metrics: dict[str, float], intervals: dict[str, tuple[float, float]], pct: str) -> list[str]:
    lines = [f"| metric | value | {pct} bootstrap interval |", "| --- | --- | --- |"]
    names = {
        "acc": "accuracy",
        "recall": "sensitivity (recall)",
        "ap": "average precision",
        "loss": "log loss",
        "ece": "expected calibration error",
        "brier": "Brier score",
    }
    for key, value in metrics.items():
        interval = intervals.get(key)
        shown = f"{interval[0]:.4f} – {interval[1]:.4f}" if interval else ""
        lines.append(f"| {names.get(key, key)} | {value:.4f} | {shown} |")
    return lines


def _class_table(report: Report, pct: str) -> list[str]:
    """Binary: precision, recall, F1 per class. Multi-class: each class's metrics with their intervals."""
    if report.binary:
        lines = ["| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
        for row in report.per_class:
            scores = " | ".join(f"{row[key]:.4f}" for key in ("precision", "recall", "f1"))
            lines.append(f"| {row['class']} | {scores} | {row['support']} |")
        return lines
    lines = [
        f"Each value with its {pct} bootstrap interval; recall is sensitivity; one class against the rest.",
        "",
        "| class | precision | recall | specificity | F1 | AUROC | support |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report.per_class:
        if "auroc" not in row:  # the weighted average: precision, recall and F1 only
            scores = [f"{row[key]:.4f}" if key in row else "" for key in bootstrap.PER_CLASS]
        else:
            scores = [f"{row[k]:.4f} ({row[f'{k}_ci_low']:.3f}–{row[f'{k}_ci_high']:.3f})" for k in bootstrap.PER_CLASS]
        lines.append(f"| {row['class']} | {' | '.join(scores)} | {row['support']} |")
    return lines


def write_report(report: Report, out_dir: Path, loggers: Iterable = (), step: int = 0, tag: str | None = None) -> None:
    """Write a report's files into `out_dir`, its scalars to every logger, its figures and text to TensorBoard.

    Files: `report_<split>.md`, `classification_report_<split>.csv`, `predictions_<split>.csv` and
    `figures/{confusion_matrix,roc,pr,reliability}_<split>.png`. Logged under `<tag>/...` (default: the split's
    name; a training run's final validation report goes under `val_selected/`, apart from the epochs' `val/`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    split = report.split
    tag = tag or split
    (out_dir / f"report_{split}.md").write_text(markdown(report))
    _write_csv(out_dir / f"classification_report_{split}.csv", report.per_class)
    rows = prediction_rows(report.predictions, report.class_names, report.threshold, report.columns)
    _write_csv(out_dir / f"predictions_{split}.csv", rows)
    tensorboards = [logger for logger in loggers if isinstance(logger, TensorBoardLogger)]
    for name, fig in figures(report).items():
        plots.save_figure(fig, out_dir / "figures" / f"{name}_{split}.png")
        for logger in tensorboards:
            logger.experiment.add_figure(f"{tag}/{name}", fig, global_step=step)
    scalars = {tag + k.removeprefix(split): v for k, v in report.flat().items() if math.isfinite(v)}
    for logger in loggers:
        logger.log_metrics(scalars, step=step)
    for logger in tensorboards:
        logger.experiment.add_text(f"{tag}/report", markdown(report), global_step=step)
        logger.experiment.flush()
    log.info("Report on the %s split written to %s", split, out_dir / f"report_{split}.md")


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_metrics(path: Path, results: dict[str, float | str]) -> None:
    """metrics.json: sorted keys, NaN written as null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in sorted(results.items())}
    path.write_text(json.dumps(clean, indent=2) + "\n")
    log.info("Metrics written to %s", path)
