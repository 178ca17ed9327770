"""Train named variants of a recipe one after another and tabulate their validation figures and wall times.

    python benchmarks/study.py --out /tmp/study --base "experiment=xray_best data.data_dir=/data/chest_xray_224 \
        data.test_strategy=split data.val_strategy=earliest" --variant "base=" --variant "128px=data.image_size=128"

Each variant is `python train.py <base> <variant overrides>` in its own process, logging to
`<out>/<name, letters and digits only>/`; a variant whose metrics.json exists is not run again. The table
(`<out>/study.md`) gives each variant's validation figures of its selected checkpoint (AUROC, accuracy,
balanced accuracy, sensitivity and specificity at the threshold the run chose, expected calibration error, log
loss) and its wall time; every figure comes from the validation split, which is what recipes are chosen on.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (
    ("val/auroc", "AUROC"),
    ("val/acc", "accuracy"),
    ("balanced", "balanced accuracy"),
    ("val/recall", "sensitivity"),
    ("val/specificity", "specificity"),
    ("val/threshold", "threshold"),
    ("val/ece", "ECE"),
    ("val/loss", "log loss"),
)


def run(name: str, overrides: list[str], out: Path) -> dict:
    """Train one variant (unless it finished before) and return its metrics with its wall time."""
    folder = out / "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            str(ROOT / "train.py"),
            *overrides,
            f"hydra.run.dir={folder}",
            "callbacks.rich_progress_bar=null",
        ]
        start = time.perf_counter()
        with open(folder / "stdout.log", "w") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=out)
        seconds = time.perf_counter() - start
        if code != 0:
            print(f"{name}: failed with exit code {code}, see {folder / 'stdout.log'}", file=sys.stderr)
            return {}
        (folder / "wall_time.txt").write_text(f"{seconds:.1f}\n{os.getloadavg()[0]:.2f}\n")
    metrics = json.loads(metrics_file.read_text())
    wall, load = (folder / "wall_time.txt").read_text().split()
    metrics["wall_time"], metrics["load"] = float(wall), float(load)
    if "val/recall" in metrics and "val/specificity" in metrics:
        metrics["balanced"] = (metrics["val/recall"] + metrics["val/specificity"]) / 2
    return metrics


def table(rows: dict[str, dict]) -> str:
    header = "| variant | " + " | ".join(title for _, title in COLUMNS) + " | wall time | load at the end |"
    lines = [header, "|" + " --- |" * (len(COLUMNS) + 3)]
    for name, metrics in rows.items():
        cells = [f"{metrics[key]:.3f}" if metrics.get(key) is not None else "–" for key, _ in COLUMNS]
        minutes, seconds = divmod(round(metrics.get("wall_time", 0)), 60)
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {minutes} min {seconds:02d} s | {metrics.get('load', 0):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a folder for the variants' runs and the table")
    parser.add_argument("--base", default="", help="overrides every variant shares")
    parser.add_argument("--variant", action="append", required=True, help="name=overrides (may be empty)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for spec in args.variant:
        name, _, extra = spec.partition("=")
        metrics = run(name, shlex.split(args.base) + shlex.split(extra), args.out.resolve())
        if metrics:
            rows[name] = metrics
            (args.out / "study.md").write_text(table(rows))
            print(table(rows), flush=True)


if __name__ == "__main__":
    main()
