"""`medlit predict`: the checkpoint's own preprocessing and threshold, DICOM, and unreadable inputs."""

from __future__ import annotations

import csv
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from medlit.cli.eval import evaluate_checkpoint
from medlit.cli.predict import hydra_main as predict_main
from medlit.cli.predict import predict
from medlit.data.decode import dicom_image
from medlit.deploy.predictor import Predictor, list_inputs
from medlit.deploy.rebuild import load_run
from medlit.errors import ConfigError, DataError, UnreadableInput
from tests.conftest import best_checkpoint, compose_config, launch_in_process
from tests.synthetic import blob_images, write_dicom


def predict_probabilities(model, images) -> list[float]:
    with torch.no_grad():
        return model.probabilities(model(images)).tolist()


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def predict_config(run, tmp_path, *overrides):
    ckpt = best_checkpoint(run)
    return compose_config([f"ckpt_path={ckpt}", *overrides], tmp_path / "predict", config_name="predict")


def test_predict_matches_eval_on_the_same_files_and_reports_unreadable_ones(trained_xray_run, xray_dir, tmp_path):
    """The probabilities of images read from their files equal those of the evaluation on the decoded test split."""
    ckpt = best_checkpoint(trained_xray_run)
    eval_cfg = compose_config([f"ckpt_path={ckpt}", "device=cpu", "bootstrap.resamples=10", "logger=csv"],
                              tmp_path / "eval", config_name="eval")  # fmt: skip
    evaluate_checkpoint(eval_cfg)
    evaluated = read_csv(tmp_path / "eval" / "predictions_test.csv")
    test_files = load_run(ckpt).datamodule.split_files["test"]
    assert len(test_files) == len(evaluated) == 12

    inputs = tmp_path / "inputs"
    shutil.copytree(xray_dir / "test", inputs / "test")
    (inputs / "test" / "NORMAL" / "notes.jpeg").write_text("not an image")
    predict(predict_config(trained_xray_run, tmp_path, f"inputs={inputs}"))
    rows = read_csv(tmp_path / "predict" / "predictions.csv")
    assert [r["input"] for r in rows] == [str(p) for p in list_inputs([inputs])]
    assert len(rows) == 13

    (bad,) = [r for r in rows if r["error"]]
    assert bad["input"].endswith("notes.jpeg") and "is not a readable image" in bad["error"]
    assert bad["p_PNEUMONIA"] == "" and bad["predicted"] == ""
    good = {r["input"]: r for r in rows if not r["error"]}
    threshold = float(load_run(ckpt).model.decision_threshold)
    assert threshold != 0.5  # chosen by Youden's J on validation and stored in the checkpoint
    for name, row in zip(test_files, evaluated, strict=True):
        mine = good[str(inputs / name)]
        assert float(mine["p_PNEUMONIA"]) == pytest.approx(float(row["p_PNEUMONIA"]), abs=1e-6)
        assert float(mine["p_NORMAL"]) == pytest.approx(1 - float(row["p_PNEUMONIA"]), abs=1e-6)
        assert mine["predicted"] == ("PNEUMONIA" if int(row["predicted"]) else "NORMAL")
        assert (float(mine["p_PNEUMONIA"]) >= threshold) == (mine["predicted"] == "PNEUMONIA")


def test_dicom_is_displayed_as_its_modality_and_voi_luts_and_photometry_say(tmp_path):
    rng = np.random.default_rng(0)
    image = blob_images(np.array([1]), 48, 2, rng)[0]
    image[0, 0], image[0, 1] = 0, 255  # the full range, so the stretch to 0-255 is the identity
    stored = 1000 + 8 * (255 - image.astype(np.int64))  # MONOCHROME1: high values are dark
    # modality LUT: 0.5 * stored - 100 = 400 + 4 * (255 - image), in [400, 1420]
    common = {"slope": 0.5, "intercept": -100, "photometric": "MONOCHROME1"}
    whole = write_dicom(tmp_path / "whole.dcm", stored, window=(910, 1020), **common)
    assert np.abs(np.asarray(dicom_image(whole), dtype=int) - image).max() <= 1

    narrow = write_dicom(tmp_path / "narrow.dcm", stored, window=(910, 510), **common)
    expected = np.clip(2 * image.astype(float) - 127.5, 0, 255)  # the window clips the darkest and brightest
    assert np.abs(np.asarray(dicom_image(narrow), dtype=float) - expected).max() <= 1


def test_dicom_with_a_voi_lut_table_is_displayed_through_the_table(tmp_path):
    """A VOI LUT Sequence (a table, not a window): stored values through the modality LUT (2 s - 100), then looked
    up in a 256-entry 12-bit table starting at 100 (values below take its first entry, above its last), then
    stretched to 0-255. The table is a parabola, so no window could give the same image."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset

    stored = np.arange(256).reshape(16, 16)
    table = np.round(4095 * (np.arange(256) / 255) ** 2).astype(int)
    path = write_dicom(tmp_path / "lut.dcm", stored, slope=2.0, intercept=-100)
    dataset = dcmread(path)
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [256, 100, 12])  # entries, first value mapped, bits per entry
    lut.add_new("LUTData", "US", table.tolist())
    dataset.VOILUTSequence = [lut]
    dataset.save_as(path)

    looked_up = table[np.clip(2 * stored - 100 - 100, 0, 255)]
    expected = looked_up / 4095 * 255  # the table spans 0-4095 here, so the stretch is a scaling
    with warnings.catch_warnings():  # pydicom warns about float input; 2 s - 100 is integer-valued here
        warnings.filterwarnings("ignore", "Applying a VOI LUT on a float input array")
        decoded = np.asarray(dicom_image(path), dtype=float)
    assert np.abs(decoded - expected).max() <= 0.5
    assert (decoded[stored <= 100] == 0).all() and (decoded[stored >= 228] == 255).all()  # clipped to the ends
    assert decoded[8, 0] == round(table[56] / 4095 * 255)  # stored 128: modality 156, entry 56


def test_a_dicom_file_predicts_as_the_same_image_in_png(trained_xray_run, tmp_path):
    predictor = Predictor.from_checkpoint(best_checkpoint(trained_xray_run))
    rng = np.random.default_rng(1)
    image = blob_images(np.array([1]), 48, 2, rng)[0]
    image[0, 0], image[0, 1] = 0, 255
    Image.fromarray(image).save(tmp_path / "scan.png")
    write_dicom(tmp_path / "scan.dcm", 200 + image.astype(np.int64) * 3, slope=2.0, intercept=-50)
    png, dcm = predictor.predict_files(list_inputs([tmp_path]))[::-1]  # sorted: scan.dcm, scan.png
    assert png.input.endswith("scan.png") and dcm.input.endswith("scan.dcm")
    assert dcm.probabilities == pytest.approx(png.probabilities, abs=1e-6)
    assert (predictor.read_image(tmp_path / "scan.dcm") == predictor.read_image(tmp_path / "scan.png")).all()


def test_damaged_dicom_and_missing_files_are_named(trained_xray_run, tmp_path):
    predictor = Predictor.from_checkpoint(best_checkpoint(trained_xray_run))
    whole = write_dicom(tmp_path / "scan.dcm", np.full((8, 8), 100)).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(whole[: len(whole) - 60])
    with pytest.raises(UnreadableInput, match=r"cut\.dcm is not a readable DICOM image"):
        predictor.read_image(tmp_path / "cut.dcm")
    with pytest.raises(UnreadableInput, match=r"gone\.png not found"):
        predictor.read_image(tmp_path / "gone.png")


def test_predict_with_no_readable_input_writes_the_table_and_exits_non_zero(
    trained_xray_run, tmp_path, monkeypatch, capsys
):
    (tmp_path / "a.png").write_bytes(b"\x89PNG broken")
    output = tmp_path / "out" / "p.csv"
    argv = ["medlit.predict", f"ckpt_path={best_checkpoint(trained_xray_run)}",
                      f"inputs=[{tmp_path / 'a.png'},{tmp_path / 'missing.jpeg'}]", f"output={output}"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        launch_in_process(monkeypatch, predict_main, argv)
    assert exit_.value.code == 1
    assert f"none of the 2 inputs could be read (see {output})" in capsys.readouterr().err
    rows = read_csv(output)
    assert [r["error"].split(" ", 1)[1] for r in rows] == [
        f"is not a readable image (UnidentifiedImageError: cannot identify image file '{tmp_path / 'a.png'}')",
        "not found",
    ]


def test_predict_refuses_text_for_an_image_model_and_an_empty_request(trained_xray_run, tmp_path):
    with pytest.raises(ConfigError, match=r"text=\.\.\. needs a text model"):
        predict(predict_config(trained_xray_run, tmp_path, "text=[a fine film]"))
    with pytest.raises(ConfigError, match="nothing to predict: give inputs="):
        predict(predict_config(trained_xray_run, tmp_path))
    with pytest.raises(DataError, match="no files in"):
        (tmp_path / "empty").mkdir()
        predict(predict_config(trained_xray_run, tmp_path, f"inputs={tmp_path / 'empty'}"))


def test_images_saved_from_pneumoniamnist_predict_as_in_its_evaluation(trained_run, tmp_path):
    """A 28 px MedMNIST checkpoint: PNGs of its test images give the evaluation's probabilities."""
    run = load_run(best_checkpoint(trained_run))
    images, _ = next(iter(run.datamodule.evaluation_dataloader("test")))
    expected = predict_probabilities(run.model, images[:4])
    for i, image in enumerate(images[:4]):
        Image.fromarray(image[0].numpy()).save(tmp_path / f"{i}.png")
    predictor = Predictor.from_checkpoint(best_checkpoint(trained_run))
    assert (predictor.image_size, predictor.in_channels) == (28, 1)
    found = predictor.predict_files(list_inputs([tmp_path]))
    assert [p.probabilities[1] for p in found] == pytest.approx(expected, abs=1e-6)
