"""`medlit compare`: runs side by side, their differing settings, metrics and ROC curves."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from medlit.cli.compare import main
from medlit.errors import MedlitError
from medlit.evaluation.compare import (
    Run,
    aggregate,
    comparison_table,
    differing_keys,
    load_runs,
    markdown_table,
    summary_markdown,
)
from tests.conftest import FAST, run_train


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


def test_a_three_seed_sweep_is_summarised(tmp_path_factory, medmnist_dir, tmp_path, capsys):
    logs = tmp_path_factory.mktemp("seeds")
    result = run_train(
        "-m", "seed=1,2,3", f"data.data_dir={medmnist_dir}", *FAST, "model=baseline_cnn", "model.filters=8",
        "trainer.max_epochs=1", f"paths.log_dir={logs}", cwd=logs,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (multirun,) = (logs / "train" / "multiruns").iterdir()
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
