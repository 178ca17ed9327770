"""`data=image_table`: images listed in a CSV or Parquet table, with labels, patients, splits and extra columns."""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.make_manifest import write_manifest
from medlit.cli.eval import evaluate_checkpoint
from medlit.data.chest_xray import ChestXrayDataModule
from medlit.data.image_table import ImageTableDataModule
from medlit.errors import DataError
from medlit.training.run import train
from tests.conftest import FAST, best_checkpoint, compose_config
from tests.synthetic import blob_images, write_dicom, write_xray_folder

CLASSES = ("normal", "bacterial", "viral")
COLUMNS = ["path", "diagnosis", "patient", "split", "site"]


def image_rows(folder: Path, patients: dict[str, int] | None = None, size: int = 20, seed: int = 0) -> list[dict]:
    """PNG images of the three classes (a bright square where the class says), one to three per patient, under
    `folder/images/`; rows with the path relative to `folder`, the class name, the patient, the split and a site.
    """
    rng = np.random.default_rng(seed)
    rows, patient = [], 0
    for split, count in (patients or {"train": 18, "val": 6, "test": 6}).items():
        for _ in range(count):
            label = patient % 3
            images = blob_images(np.full(1 + patient % 3, label), size, 3, rng)
            for k, image in enumerate(images):
                path = Path("images") / f"p{patient:03d}_{k}.png"
                (folder / path).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(folder / path)
                site = "north" if patient % 2 else "south"
                rows.append(
                    {"path": str(path), "diagnosis": CLASSES[label], "patient": f"P{patient:03d}", "split": split,
                     "site": site}
                )  # fmt: skip
            patient += 1
    return rows


def write_csv(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({c: [row[c] for row in rows] for c in columns}), path)
    return path


def module(table: Path, tmp_path: Path, **kwargs) -> ImageTableDataModule:
    settings = {
        "label_column": "diagnosis", "patient_column": "patient", "split_column": "split", "val_strategy": "given",
        "image_size": 16, "num_workers": 0, "batch_size": 8, "decode_workers": 1, "cache_dir": str(tmp_path / "cache"),
    }  # fmt: skip
    return ImageTableDataModule(str(table), **{**settings, **kwargs})


def loaded(table: Path, tmp_path: Path, **kwargs) -> ImageTableDataModule:
    dm = module(table, tmp_path, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_relative_and_absolute_paths_in_a_csv_or_parquet_table(fmt, tmp_path):
    rows = image_rows(tmp_path / "data")
    for row in rows[::2]:  # every other row absolute
        row["path"] = str(tmp_path / "data" / row["path"])
    table = (write_csv if fmt == "csv" else write_parquet)(tmp_path / "data" / f"labels.{fmt}", rows)
    dm = loaded(table, tmp_path)
    assert dm.class_names == ["bacterial", "normal", "viral"] and dm.num_classes == 3
    for split in ("train", "val", "test"):
        expected = [r for r in rows if r["split"] == split]
        dataset = getattr(dm, f"{split}_set")
        assert dm.split_files[split] == [r["path"] for r in expected]
        assert [dm.class_names[y] for y in dataset.labels.tolist()] == [r["diagnosis"] for r in expected]
        first = np.asarray(Image.open(tmp_path / "data" / expected[0]["path"]).resize((16, 16), Image.BICUBIC))
        assert np.abs(dataset.images[0, 0].numpy().astype(int) - first).max() <= 1
    test_rows = [r for r in rows if r["split"] == "test"]
    assert dm.example_columns("test") == [
        {"path": r["path"], "patient": r["patient"], "site": r["site"]} for r in test_rows
    ]


def test_integer_labels_name_classes_in_order_or_index_the_given_names(tmp_path):
    rows = image_rows(tmp_path)
    for row in rows:
        row["diagnosis"] = {"normal": "1", "bacterial": "2", "viral": "10"}[row["diagnosis"]]
    table = write_csv(tmp_path / "t.csv", rows)
    assert loaded(table, tmp_path).class_names == ["1", "2", "10"], "sorted as numbers, not as text"
    for row in rows:
        row["diagnosis"] = {"1": "0", "2": "1", "10": "2"}[row["diagnosis"]]
    table = write_csv(tmp_path / "u.csv", rows)
    dm = loaded(table, tmp_path, classes=list(CLASSES))
    assert [CLASSES[int(r["diagnosis"])] for r in rows if r["split"] == "val"] == [
        dm.class_names[y] for y in dm.val_set.labels.tolist()
    ]


def test_an_unknown_label_is_named_with_its_line_and_file(tmp_path):
    rows = image_rows(tmp_path)
    rows[5]["diagnosis"] = "fungal"
    table = write_csv(tmp_path / "t.csv", rows)
    message = rf"{re.escape(str(table))} line 7 \({rows[5]['path']}\): label 'fungal' is not one of the classes"
    with pytest.raises(DataError, match=message):
        loaded(table, tmp_path, classes=list(CLASSES))


def test_a_patient_on_two_sides_of_the_given_splits_is_refused_by_name(tmp_path):
    rows = image_rows(tmp_path)
    moved = next(i for i, r in enumerate(rows) if r["split"] == "test")
    rows[moved]["patient"] = rows[0]["patient"]  # P000 is in train
    table = write_csv(tmp_path / "t.csv", rows)
    with pytest.raises(
        DataError, match=rf"patient 'P000' .* in more than one split .*: train at line 2; test at line {moved + 2}"
    ):
        loaded(table, tmp_path)


def test_a_missing_file_is_named_and_left_out_or_stops_the_run(tmp_path, caplog):
    rows = image_rows(tmp_path)
    (tmp_path / rows[3]["path"]).unlink()
    table = write_csv(tmp_path / "t.csv", rows)
    with caplog.at_level(logging.WARNING):
        dm = loaded(table, tmp_path)
    assert f"1 of {len(rows)} files are not readable images: {tmp_path / rows[3]['path']} (not found)" in caplog.text
    assert rows[3]["path"] not in dm.split_files["train"] and len(dm.train_set) == 35
    with pytest.raises(DataError, match=rf"{re.escape(rows[3]['path'])} \(not found\).*on_bad_file=skip"):
        loaded(table, tmp_path, on_bad_file="fail")


def test_a_dicom_row_is_read_as_the_file_says(tmp_path):
    """A MONOCHROME1 DICOM (low values bright) whose left half is stored low reads bright on the left."""
    rows = image_rows(tmp_path)
    pixels = np.full((40, 40), 3000, np.uint16)
    pixels[:, :20] = 100
    write_dicom(tmp_path / "images" / "scan.dcm", pixels, photometric="MONOCHROME1")
    rows.append({**rows[-1], "path": "images/scan.dcm", "patient": "P999"})
    dm = loaded(write_csv(tmp_path / "t.csv", rows), tmp_path)
    assert dm.split_files["test"][-1] == "images/scan.dcm"
    image = dm.test_set.images[-1, 0].float()
    assert image[:, :6].mean() > 240 and image[:, -6:].mean() < 15


def test_splits_carved_by_patient_when_the_table_gives_none(tmp_path, caplog):
    rows = image_rows(tmp_path, patients={"train": 60})
    table = write_csv(tmp_path / "t.csv", rows, ["path", "diagnosis", "patient"])
    with pytest.raises(DataError, match=r"no test split: .* has no split column .*test_strategy=split"):
        loaded(table, tmp_path, split_column=None, val_strategy="split")
    dm = loaded(table, tmp_path, split_column=None, val_strategy="split", test_strategy="split", val_fraction=0.2)
    patient = {r["path"]: r["patient"] for r in rows}
    sides = {split: {patient[f] for f in files} for split, files in dm.split_files.items()}
    assert not sides["train"] & sides["val"] and not sides["train"] & sides["test"] and not sides["val"] & sides["test"]
    assert sum(map(len, dm.split_files.values())) == len(rows)
    assert len(dm.val_set) == pytest.approx(0.2 * 0.9 * len(rows), abs=6)
    with caplog.at_level(logging.WARNING):
        loaded(table, tmp_path, split_column=None, patient_column=None, val_strategy="split", test_strategy="split")
    assert "has no patient column" in caplog.text


@pytest.mark.parametrize(
    ("change", "settings", "message"),
    [
        (
            None,
            {"label_column": "diagnosys"},
            r"has no column 'diagnosys' \(data.label_column\); did you mean 'diagnosis'",
        ),
        (None, {"keep_columns": ["target"]}, r"has no column 'target' \(data.keep_columns\[0\]\)"),
        ("rename site target", {}, r"column 'target' of .* would shadow a column of the predictions tables"),
        ("split 4 dev", {}, r"line 6: split 'dev' is not one of train, val, test"),
        ("duplicate 3", {}, r"line 5 and line 6 name the same image"),
        ("no label 2", {}, r"line 4 has no label \(column 'diagnosis'\)"),
        (None, {"max_rows": 10}, r"more than 10 rows, more than data.max_rows=10 allows"),
        (None, {"num_classes": 2}, r"data.num_classes=2, but the data has 3 classes: bacterial, normal, viral"),
    ],
)
def test_table_mistakes_are_named(tmp_path, change, settings, message):
    rows, columns = image_rows(tmp_path), list(COLUMNS)
    if change:
        what, *args = change.split()
        if what == "rename":
            columns[columns.index(args[0])] = args[1]
            for row in rows:
                row[args[1]] = row.pop(args[0])
        elif what == "split":
            rows[int(args[0])]["split"] = args[1]
        elif what == "duplicate":
            rows[int(args[0]) + 1]["path"] = rows[int(args[0])]["path"]
        elif what == "no":
            rows[int(args[1])]["diagnosis"] = ""
    with pytest.raises(DataError, match=message):
        loaded(write_csv(tmp_path / "t.csv", rows, columns), tmp_path, **settings)


def test_a_parquet_table_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    table = write_parquet(tmp_path / "t.parquet", image_rows(tmp_path))
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("the table was read"))
    with pytest.raises(DataError, match=r"has 60 rows, more than data.max_rows=50 allows"):
        module(table, tmp_path, max_rows=50).setup("fit")


def test_parquet_without_pyarrow_says_which_extra_to_install(tmp_path, monkeypatch):
    table = write_parquet(tmp_path / "t.parquet", image_rows(tmp_path, patients={"train": 3}))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(DataError, match=r"needs pyarrow: pip install 'medlit\[tables\]'"):
        module(table, tmp_path).setup("fit")


def test_a_manifest_of_a_folder_gives_the_folder_modules_splits_and_images(tmp_path):
    root = write_xray_folder(tmp_path / "chest_xray")  # with a truncated JPEG and an RGBA PNG
    for table in (root / "manifest.csv", tmp_path / "elsewhere" / "manifest.csv"):  # relative and absolute paths
        assert write_manifest(root, table) == sum(1 for p in root.rglob("*") if p.is_file() and p.suffix != ".csv")
        folder = ChestXrayDataModule(str(root), image_size=16, num_workers=0, decode_workers=1, test_strategy="split")
        folder.setup("fit")
        listed = ImageTableDataModule(
            str(table), patient_column="patient", split_column="split", test_strategy="split",
            image_size=16, num_workers=0, decode_workers=1,
        )  # fmt: skip
        listed.setup("fit")
        for split in ("train", "val", "test"):
            files = [str((table.parent / f).resolve().relative_to(root)) for f in listed.split_files[split]]
            assert files == folder.split_files[split], split
            assert torch.equal(getattr(listed, f"{split}_set").images, getattr(folder, f"{split}_set").images)
            assert torch.equal(getattr(listed, f"{split}_set").labels, getattr(folder, f"{split}_set").labels)


@pytest.fixture(scope="module")
def trained_table_run(tmp_path_factory) -> Path:
    """Two epochs of the baseline CNN on a generated three-class table (CSV, given splits, a site column)."""
    folder = tmp_path_factory.mktemp("table")
    table = write_csv(folder / "labels.csv", image_rows(folder))
    run = folder / "run"
    overrides = [
        "data=image_table", f"data.table={table}", "data.label_column=diagnosis", "data.patient_column=patient",
        "data.split_column=split", "data.val_strategy=given", "data.image_size=16", "data.decode_workers=1",
        f"data.cache_dir={folder / 'cache'}", *FAST, "data.batch_size=8", "model=baseline_cnn", "model.filters=8",
        "trainer.max_epochs=2", "bootstrap.resamples=50", "logger=csv",
    ]  # fmt: skip
    train(compose_config(overrides, run))
    return run


def test_a_run_on_a_table_keeps_its_classes_and_the_tables_columns(trained_table_run):
    checkpoint = torch.load(best_checkpoint(trained_table_run), weights_only=True)
    stored = checkpoint["hyper_parameters"]["run_config"]["data"]
    assert stored["classes"] == ["bacterial", "normal", "viral"] and stored["num_classes"] == 3
    assert checkpoint["hyper_parameters"]["num_classes"] == 3
    with open(trained_table_run / "predictions_test.csv", newline="") as handle:
        predicted = list(csv.DictReader(handle))
    assert list(predicted[0]) == [
        "index", "path", "patient", "site", "target", "p_bacterial", "p_normal", "p_viral", "predicted"
    ]  # fmt: skip
    assert Counter(r["site"] for r in predicted) == {"north": 6, "south": 6}
    assert all(r["path"].startswith("images/p0") for r in predicted)
    metrics = json.loads((trained_table_run / "metrics.json").read_text())
    assert {"test/recall/viral", "test/auroc/normal_ci_low"} <= set(metrics)

    # evaluated again from its checkpoint alone: the table is read with the stored classes
    ckpt = best_checkpoint(trained_table_run)
    out = trained_table_run / "eval"
    evaluate_checkpoint(compose_config([f"ckpt_path={ckpt}", "bootstrap.resamples=50", "logger=csv"], out, "eval"))
    assert json.loads((out / "metrics.json").read_text())["test/auroc"] == pytest.approx(metrics["test/auroc"])
