"""`medlit compare`: runs side by side, their differing settings, metrics and ROC curves."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from omegaconf import OmegaConf
from PIL import Image

from medlit.cli.compare import main
from medlit.errors import MedlitError
from medlit.evaluation.compare import (
    Run,
    aggregate,
    compare,
    comparison_table,
    differing_keys,
    load_runs,
    markdown_table,
    roc_overlay,
    summary_markdown,
)
from tests.conftest import FAST, train_in_process


@pytest.mark.slow
def test_a_two_run_sweep_is_compared_with_the_learning_rate_that_differs(two_run_multirun, tmp_path, capsys):
    main([str(two_run_multirun), "-o", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    header, _, first, second = printed.splitlines()[:4]
    assert "| run | optimizer.lr | AUROC |" in header
    assert first.startswith("| 0 | 0.001 | ") and second.startswith("| 1 | 0.003 | ")
    with open(tmp_path / "out" / "comparison.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["run"], row["optimizer.lr"]) for row in rows] == [("0", "0.001"), ("1", "0.003")]
    for row, job in zip(rows, ("0", "1"), strict=True):
        metrics = json.loads((two_run_multirun / job / "metrics.json").read_text())
        assert float(row["AUROC"]) == pytest.approx(metrics["test/auroc"])
        assert float(row["AUROC low"]) == pytest.approx(metrics["test/auroc_ci_low"])
    assert (tmp_path / "out" / "roc_overlay.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "comparison.md").read_text() in printed


@pytest.mark.slow
def test_runs_given_one_by_one_and_a_failed_job_left_out(two_run_multirun, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(two_run_multirun, sweep)
    (sweep / "1" / "metrics.json").unlink()  # as a job that failed
    main([str(sweep), "-o", str(tmp_path / "out")])
    assert "| 0 |" in capsys.readouterr().out
    with open(tmp_path / "out" / "comparison.csv") as handle:
        assert [row["run"] for row in csv.DictReader(handle)] == ["0"]
    with pytest.raises(SystemExit) as exit_:
        main([str(sweep / "1"), str(sweep / "0")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("medlit: error: ") and "1 is neither a run directory (no metrics.json)" in err


def test_only_settings_that_differ_become_columns():
    runs = [
        Run(None, "a", {"optimizer.lr": "0.001", "seed": "1", "model._target_": "X"}, {"test/auroc": 0.9}),
        Run(
            None, "b", {"optimizer.lr": "0.001", "seed": "2", "model._target_": "X", "tags": "[]"}, {"test/auroc": None}
        ),
    ]
    assert differing_keys(runs) == ["seed", "tags"]
    columns, rows = comparison_table(runs)
    assert columns == ["run", "seed", "tags", "AUROC"]
    assert markdown_table(columns, rows).splitlines()[2:] == ["| a | 1 |  | 0.900 |", "| b | 2 | [] | – |"]


def test_a_folder_without_runs_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedlitError, match=r"empty is neither a run directory"):
        load_runs([tmp_path / "empty"])


def _replicate(name: str, lr: str, seed: str, auroc: float | None) -> Run:
    return Run(None, name, {"optimizer.lr": lr, "seed": seed}, {"test/auroc": auroc, "test/acc": 0.5})


def test_runs_differing_only_in_seed_are_summarised_as_mean_and_sd():
    runs = [
        _replicate("0", "0.001", "1", 0.80),
        _replicate("1", "0.001", "2", 0.90),
        _replicate("2", "0.003", "1", 0.70),
        _replicate("3", "0.001", "3", 0.85),
        _replicate("4", "0.003", "2", None),
    ]
    columns, rows = aggregate(runs)
    assert columns == ["optimizer.lr", "runs", "AUROC mean", "AUROC sd", "accuracy mean", "accuracy sd"]
    first, second = rows
    assert (first["optimizer.lr"], first["runs"]) == ("0.001", 3)
    assert first["AUROC mean"] == pytest.approx(0.85) and first["AUROC sd"] == pytest.approx(0.05)
    assert (second["runs"], second["AUROC mean"], second["AUROC sd"]) == (2, pytest.approx(0.70), None)
    assert second["accuracy sd"] == 0.0
    assert summary_markdown(columns, rows).splitlines()[2:] == [
        "| 0.001 | 3 | 0.850 ± 0.050 | 0.500 ± 0.000 |",
        "| 0.003 | 2 | 0.700 | 0.500 ± 0.000 |",
    ]


@pytest.mark.slow
def test_a_three_seed_sweep_is_summarised(tmp_path_factory, medmnist_dir, tmp_path, capsys, monkeypatch):
    logs = tmp_path_factory.mktemp("seeds")
    monkeypatch.chdir(logs)
    train_in_process(
        monkeypatch, "-m", "seed=1,2,3", f"data.data_dir={medmnist_dir}", *FAST, "model=baseline_cnn",
        "model.filters=8", "trainer.max_epochs=1", f"paths.log_dir={logs}",
    )  # fmt: skip
    (multirun,) = (logs / "train" / "multiruns").iterdir()
    capsys.readouterr()
    main([str(multirun), "-o", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    aurocs = [json.loads((multirun / job / "metrics.json").read_text())["test/auroc"] for job in "012"]
    assert len(set(aurocs)) > 1, "different seeds should give different models"
    with open(tmp_path / "out" / "summary.csv") as handle:
        (row,) = csv.DictReader(handle)
    assert row["runs"] == "3"
    assert float(row["AUROC mean"]) == pytest.approx(np.mean(aurocs))
    assert float(row["AUROC sd"]) == pytest.approx(np.std(aurocs, ddof=1))
    assert "Mean ± sd over seed, data.fold:" in printed
    assert (tmp_path / "out" / "summary.md").read_text() in printed


def write_run(job: Path, config: dict, metrics: dict, predictions: list[tuple[int, float]] | None = None) -> Path:
    """A finished run as training leaves it: `.hydra/config.yaml`, metrics.json and predictions_test.csv."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(config))
    (job / "metrics.json").write_text(json.dumps(metrics))
    if predictions is not None:
        rows = "".join(f"{i},{target},{p},{int(p >= 0.5)}\n" for i, (target, p) in enumerate(predictions))
        (job / "predictions_test.csv").write_text("index,target,p_pneumonia,predicted\n" + rows)
    return job


def test_compare_over_the_named_settings_summarises_them_as_replicates(tmp_path, capsys):
    """Four runs: two seeds on each of two validation splits. By default (`--over seed,data.fold`) the two splits
    are two groups; `--over seed,data.split_seed` makes all four replicates of one set-up."""
    sweep = tmp_path / "sweep"
    aurocs = {(1, 0): 0.80, (2, 0): 0.90, (1, 1): 0.70, (2, 1): 0.60}
    for job, ((seed, split), auroc) in enumerate(aurocs.items()):
        config = {"seed": seed, "data": {"split_seed": split}, "optimizer": {"lr": 0.001}}
        write_run(sweep / str(job), config, {"test/auroc": auroc, "test/acc": 0.5 + job / 10})

    main([str(sweep), "-o", str(tmp_path / "default")])
    with open(tmp_path / "default" / "summary.csv") as handle:
        groups = list(csv.DictReader(handle))
    assert [(g["data.split_seed"], g["runs"]) for g in groups] == [("0", "2"), ("1", "2")]
    assert [float(g["AUROC mean"]) for g in groups] == [pytest.approx(0.85), pytest.approx(0.65)]
    assert [float(g["AUROC sd"]) for g in groups] == [pytest.approx(0.0707107), pytest.approx(0.0707107)]

    capsys.readouterr()
    main([str(sweep), "-o", str(tmp_path / "over"), "--over", "seed,data.split_seed"])
    printed = capsys.readouterr().out
    with open(tmp_path / "over" / "summary.csv") as handle:
        (row,) = csv.DictReader(handle)
    assert "data.split_seed" not in row and row["runs"] == "4"
    assert float(row["AUROC mean"]) == pytest.approx(0.75)
    assert float(row["AUROC sd"]) == pytest.approx(0.1290994)  # sqrt((.05² + .15² + .05² + .15²) / 3)
    assert float(row["accuracy mean"]) == pytest.approx(0.65)
    assert "Mean ± sd over seed, data.split_seed:" in printed
    assert "| 4 | 0.750 ± 0.129 | 0.650 ± 0.129 |" in printed


def drawn(line) -> list[tuple[float, float]]:
    return list(zip(line.get_xdata().tolist(), line.get_ydata().tolist(), strict=True))


def test_the_roc_overlay_draws_every_runs_test_curve(tmp_path):
    """Each run's curve through its own ROC points (worked out by hand), labelled with the setting that differs and
    its AUROC, in its own colour in the written PNG."""
    sweep = tmp_path / "sweep"
    overlapping = [(1, 0.9), (0, 0.8), (1, 0.4), (0, 0.3)]  # one positive ranked below a negative: AUROC 3/4
    separated = [(1, 0.9), (0, 0.2), (1, 0.8), (0, 0.1)]
    write_run(sweep / "0", {"optimizer": {"lr": 0.001}}, {"test/auroc": 0.75}, overlapping)
    write_run(sweep / "1", {"optimizer": {"lr": 0.003}}, {"test/auroc": 1.0}, separated)
    figure = roc_overlay(load_runs([sweep]))
    first, second, chance = figure.axes[0].get_lines()
    # ROC points, one per threshold from the highest score down: (false positive rate, true positive rate)
    assert drawn(first) == [(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)]  # every point is a corner
    points, corners = [(0, 0), (0, 0.5), (0, 1), (0.5, 1), (1, 1)], [(0, 0), (0, 1), (1, 1)]
    assert set(corners) <= set(drawn(second)) <= set(points) and drawn(second) == sorted(drawn(second))
    assert first.get_label() == "0: lr=0.001 (AUROC 0.750)" and second.get_label() == "1: lr=0.003 (AUROC 1.000)"
    assert chance.get_xdata().tolist() == [0, 1] and chance.get_linestyle() == "--"

    compare([sweep], tmp_path / "out")
    with Image.open(tmp_path / "out" / "roc_overlay.png") as png:
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3).astype(int)
    for colour in (first.get_color(), second.get_color()):
        rgb = (np.array(to_rgb(colour)) * 255).round()
        assert (np.abs(pixels - rgb).max(axis=1) <= 2).sum() > 200, f"no curve drawn in {colour}"
