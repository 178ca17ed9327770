"""Text checkpoints: predictions on reviews (files and strings) with the stored tokenizer, and the web app."""

from __future__ import annotations

import csv

import pytest

from medlit.cli.eval import evaluate_checkpoint
from medlit.cli.predict import predict
from medlit.deploy.predictor import Predictor
from medlit.deploy.rebuild import load_run
from tests.conftest import best_checkpoint, compose_config


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_on_review_files_and_strings_matches_eval(trained_imdb_run, imdb_dir, tmp_path):
    ckpt = best_checkpoint(trained_imdb_run)
    assert (trained_imdb_run / "tokenizer.json").is_file()
    evaluate_checkpoint(compose_config([f"ckpt_path={ckpt}", "device=cpu", "bootstrap.resamples=10", "logger=csv"],
                                       tmp_path / "eval", config_name="eval"))  # fmt: skip
    evaluated = read_csv(tmp_path / "eval" / "predictions_test.csv")
    test_files = load_run(ckpt).datamodule.files["test"]
    assert len(test_files) == len(evaluated) == 32

    review = test_files[0].read_text(encoding="utf-8")
    predict(compose_config([f"ckpt_path={ckpt}", f"inputs={imdb_dir / 'aclImdb' / 'test'}", f"text=[{review!r}]"],
                           tmp_path / "predict", config_name="predict"))  # fmt: skip
    rows = read_csv(tmp_path / "predict" / "predictions.csv")
    assert len(rows) == 33 and not any(r["error"] for r in rows)
    by_file = {r["input"]: r for r in rows[:-1]}
    for path, row in zip(test_files, evaluated, strict=True):
        mine = by_file[str(path)]
        assert float(mine["p_positive"]) == pytest.approx(float(row["p_positive"]), abs=1e-6)
        assert mine["predicted"] == ("positive" if int(row["predicted"]) else "negative")
    assert rows[-1]["input"] == review
    assert float(rows[-1]["p_positive"]) == pytest.approx(float(by_file[str(test_files[0])]["p_positive"]), abs=1e-7)


def test_a_review_file_that_is_not_text_is_reported(trained_imdb_run, tmp_path):
    predictor = Predictor.from_checkpoint(best_checkpoint(trained_imdb_run))
    assert predictor.is_text
    (tmp_path / "a.txt").write_text("A superb, moving film.", encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\xfa binary")
    good, bad = predictor.predict_files(sorted(tmp_path.iterdir()))
    assert good.error is None and len(good.probabilities) == 2
    assert bad.probabilities is None and "b.txt is not a readable UTF-8 text file" in bad.error
