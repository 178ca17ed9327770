"""`python -m medlit.compare`: runs side by side, their differing settings, metrics and ROC curves."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from medlit.compare import Run, comparison_table, differing_keys, load_runs, main, markdown_table
from medlit.errors import MedlitError


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
