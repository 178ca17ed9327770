"""Finished runs side by side: what differs in their configurations, their test metrics, their ROC curves.

`medlit compare` prints a Markdown table (one row per run: the configuration values that differ between the
runs, then the test metrics with their bootstrap intervals) and writes it with a CSV version and one ROC overlay plot to
the output folder. Runs that differ only in their seed or cross-validation fold (`--over`) are replicates:
a second table (summary.md, summary.csv) gives each group's number of runs and the mean ± standard
deviation of every metric. Loading (`load_runs`), tabulating (`comparison_table`) and rendering (`markdown_table`,
`write_csv`, `roc_overlay`) are separate steps, so rows can be grouped (e.g. over seeds) in between.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from medlit.errors import MedlitError
from medlit.evaluation.plots import colours, pooled_roc_curve, save_figure
from medlit.evaluation.predictions import read_predictions

log = logging.getLogger(__name__)

# (metrics.json key, column title); intervals are shown where metrics.json has them
METRICS = (
    ("test/auroc", "AUROC"),
    ("test/acc", "accuracy"),
    ("test/recall", "sensitivity"),
    ("test/specificity", "specificity"),
    ("test/precision", "precision"),
    ("test/f1", "F1"),
    ("test/ap", "AP"),
    ("test/threshold", "threshold"),
    ("val/auroc", "val AUROC"),
)
# settings whose runs are replicates of one experiment: grouped, with mean ± sd, by `aggregate`
REPLICATE_KEYS = ("seed", "data.fold")


@dataclass
class Run:
    """A finished run: its directory, name, flattened configuration and metrics."""

    path: Path
    name: str
    config: dict[str, str]
    metrics: dict[str, float | None]
    predictions: Path | None = field(default=None)


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Run directories from run and multirun directories; a multirun's failed jobs are left out with a warning.

    A run directory holds `metrics.json`; a multirun directory holds run directories (Hydra's numbered jobs).
    """
    found = []
    for path in paths:
        if not path.is_dir():
            raise MedlitError(f"{path} is not a directory")
        if (path / "metrics.json").is_file():
            found.append(path)
            continue
        jobs = sorted((p for p in path.iterdir() if (p / ".hydra").is_dir()), key=_job_order)
        if not jobs:
            raise MedlitError(
                f"{path} is neither a run directory (no metrics.json) nor a multirun directory (no run directories)"
            )
        for job in jobs:
            if (job / "metrics.json").is_file():
                found.append(job)
            else:
                log.warning("Leaving out %s: it has no metrics.json (the job failed or is still running)", job)
    if not found:
        raise MedlitError(f"no finished runs (with metrics.json) in {', '.join(map(str, paths))}")
    return found


def _job_order(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (sys.maxsize, path.name)


def read_run(path: Path, name: str) -> Run:
    """A run's metrics.json and its composed configuration (`.hydra/config.yaml`), flattened to dotted keys."""
    try:
        metrics = json.loads((path / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MedlitError(f"{path / 'metrics.json'} is not readable JSON ({err})") from None
    config_file = path / ".hydra" / "config.yaml"
    config = _flatten(OmegaConf.to_container(OmegaConf.load(config_file))) if config_file.is_file() else {}
    predictions = path / "predictions_test.csv"
    return Run(path, name, config, metrics, predictions if predictions.is_file() else None)


def load_runs(paths: Sequence[Path]) -> list[Run]:
    """Every run under `paths`, named by its path relative to the folder they share."""
    dirs = find_run_dirs([Path(p) for p in paths])
    resolved = [d.resolve() for d in dirs]
    common = Path(*_common_parts([d.parts for d in resolved]))
    names = [str(d.relative_to(common)) if d != common else d.name for d in resolved]
    return [read_run(d, name) for d, name in zip(dirs, names, strict=True)]


def _common_parts(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    common = []
    for values in zip(*parts, strict=False):
        if len(set(values)) != 1:
            break
        common.append(values[0])
    return tuple(common)


def _flatten(node: object, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        flat = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: json.dumps(node) if isinstance(node, (list, type(None), bool)) else str(node)}


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Configuration keys whose values are not the same in every run (a key missing from a run differs)."""
    keys = sorted({key for run in runs for key in run.config})
    return [key for key in keys if len({run.config.get(key) for run in runs}) > 1]


def comparison_table(runs: Sequence[Run]) -> tuple[list[str], list[dict]]:
    """Column names and one row per run: run name, differing configuration values, test metrics.

    Metric cells are floats; `<title> low` / `<title> high` columns hold the interval where there is one.
    """
    diff = differing_keys(runs)
    metrics = [(key, title) for key, title in METRICS if any(key in run.metrics for run in runs)]
    columns = ["run", *diff]
    for key, title in metrics:
        columns.append(title)
        if any(f"{key}_ci_low" in run.metrics for run in runs):
            columns += [f"{title} low", f"{title} high"]
    rows = []
    for run in runs:
        row: dict = {"run": run.name, **{key: run.config.get(key, "") for key in diff}}
        for key, title in metrics:
            row[title] = run.metrics.get(key)
            if f"{title} low" in columns:
                row[f"{title} low"], row[f"{title} high"] = (
                    run.metrics.get(f"{key}_ci_low"),
                    run.metrics.get(f"{key}_ci_high"),
                )
        rows.append(row)
    return columns, rows


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    """The table as Markdown, intervals shown next to their values: `0.912 (0.881–0.940)`."""
    shown = [c for c in columns if not c.endswith((" low", " high"))]
    lines = ["| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
    for row in rows:
        cells = []
        for column in shown:
            value = row.get(column)
            cell = _number(value) if isinstance(value, float) or value is None else str(value)
            if f"{column} low" in row and row[f"{column} low"] is not None:
                cell += f" ({_number(row[f'{column} low'])}–{_number(row[f'{column} high'])})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def aggregate(runs: Sequence[Run], over: Sequence[str] = REPLICATE_KEYS) -> tuple[list[str], list[dict]]:
    """Runs grouped by every differing setting except those in `over`: one row per group, in order of first
    appearance, with the group's settings, its number of runs and each metric's mean and sample standard
    deviation (`<title> mean`, `<title> sd`; sd is None for a single run). Missing and NaN values are left
    out of a metric's statistics."""
    settings = [key for key in differing_keys(runs) if key not in over]
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.config.get(key, "") for key in settings), []).append(run)
    metrics = [title for key, title in METRICS if any(key in run.metrics for run in runs)]
    columns = [*settings, "runs", *(f"{title} {stat}" for title in metrics for stat in ("mean", "sd"))]
    rows = []
    for values, members in groups.items():
        row: dict = {**dict(zip(settings, values, strict=True)), "runs": len(members)}
        for key, title in METRICS:
            if title not in metrics:
                continue
            found = np.array([m.metrics[key] for m in members if m.metrics.get(key) is not None], dtype=float)
            found = found[~np.isnan(found)]
            row[f"{title} mean"] = float(found.mean()) if found.size else None
            row[f"{title} sd"] = float(found.std(ddof=1)) if found.size > 1 else None
        rows.append(row)
    return columns, rows


def summary_markdown(columns: list[str], rows: list[dict]) -> str:
    """The grouped table as Markdown, each metric shown as `mean ± sd`."""
    shown = [c for c in columns if not c.endswith(" sd")]
    titles = [c.removesuffix(" mean") for c in shown]
    lines = ["| " + " | ".join(titles) + " |", "|" + " --- |" * len(shown)]
    for row in rows:
        cells = []
        for column in shown:
            value = row.get(column)
            if not column.endswith(" mean"):
                cells.append(str(value))
                continue
            spread = row.get(column.removesuffix("mean") + "sd")
            cells.append(_number(value) + (f" ± {_number(spread)}" if spread is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def roc_overlay(runs: Sequence[Run]) -> Figure:
    """Every run's test ROC curve on one plot (multi-class runs: micro-averaged one-vs-rest)."""
    diff = differing_keys(runs)
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    for run, colour in zip(runs, colours(len(runs)), strict=True):
        if run.predictions is None:
            log.warning("%s has no predictions_test.csv: left out of the ROC overlay", run.path)
            continue
        predictions = read_predictions(run.predictions)
        settings = ", ".join(f"{key.rpartition('.')[2]}={run.config.get(key, '')}" for key in diff)
        curve = pooled_roc_curve(
            predictions.probs, predictions.target, f"{run.name}: {settings}" if settings else run.name
        )
        ax.plot(curve.x, curve.y, lw=1.8, color=colour, label=f"{curve.label} (AUROC {curve.area:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("Test ROC curve" if len(runs) == 1 else f"Test ROC curves of {len(runs)} runs")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def compare(paths: Sequence[Path], output: Path, over: Sequence[str] = REPLICATE_KEYS) -> str:
    """Load the runs, write comparison.md, comparison.csv and roc_overlay.png to `output`, and where some runs
    are replicates (differ only in `over`), summary.md and summary.csv; return the table(s) as Markdown."""
    runs = load_runs(paths)
    columns, rows = comparison_table(runs)
    table = markdown_table(columns, rows)
    output.mkdir(parents=True, exist_ok=True)
    (output / "comparison.md").write_text(table)
    write_csv(output / "comparison.csv", columns, rows)
    save_figure(roc_overlay(runs), output / "roc_overlay.png")
    summary_columns, summary_rows = aggregate(runs, over)
    if len(summary_rows) < len(runs):
        summary = summary_markdown(summary_columns, summary_rows)
        (output / "summary.md").write_text(summary)
        write_csv(output / "summary.csv", summary_columns, summary_rows)
        table += f"\nMean ± sd over {', '.join(over)}:\n\n{summary}"
    else:  # no replicates: a summary left by an earlier comparison in this folder would mislead
        for stale in ("summary.md", "summary.csv"):
            (output / stale).unlink(missing_ok=True)
    return table
