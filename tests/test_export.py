"""`medlit export`: ONNX and TorchScript files that give PyTorch's probabilities for any batch size."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from medlit.cli.export import export
from medlit.deploy.predictor import Predictor, list_inputs
from medlit.errors import ConfigError, MedlitError
from tests.conftest import best_checkpoint, compose_config


def export_config(run, tmp_path, *overrides):
    ckpt = best_checkpoint(run)
    return compose_config([f"ckpt_path={ckpt}", *overrides], tmp_path / "export", config_name="export")


def inputs(predictor: Predictor, folder) -> list[np.ndarray]:
    """Random uint8 images in batches of 1 and 4, and the generated X-rays as the predictor reads them."""
    rng = np.random.default_rng(3)
    shape = (predictor.in_channels, predictor.image_size, predictor.image_size)
    real = np.stack([predictor.read_image(path).numpy() for path in list_inputs([folder])])
    return [rng.integers(0, 256, (n, *shape), dtype=np.uint8) for n in (1, 4)] + [real[:1], real]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_gives_pytorchs_probabilities_with_its_metadata(fmt, trained_xray_run, xray_dir, tmp_path):
    test_images = xray_dir / "test"
    path = export(export_config(trained_xray_run, tmp_path, f"format={fmt}", f"check_inputs={test_images}"))
    assert path == tmp_path / "export" / ("model.onnx" if fmt == "onnx" else "model.pt")
    predictor = Predictor.from_checkpoint(best_checkpoint(trained_xray_run))
    expected = {
        "class_names": ["NORMAL", "PNEUMONIA"],
        "decision_threshold": pytest.approx(predictor.threshold),
        "image_size": 32,
        "in_channels": 1,
    }
    assert json.loads(path.with_suffix(".json").read_text()).items() >= expected.items()
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (image,) = session.get_inputs()
        assert image.name == "image" and image.type == "tensor(uint8)" and image.shape[1:] == [1, 32, 32]
        stored = {
            p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props if p.key.startswith("medlit.")
        }
        assert stored["medlit.class_names"] == expected["class_names"]
        assert stored["medlit.decision_threshold"] == pytest.approx(predictor.threshold)

        def run(batch):
            return session.run(["probabilities"], {"image": batch})[0]
    else:
        files = {"metadata.json": ""}
        with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export
            warnings.simplefilter("ignore", FutureWarning)
            loaded = torch.jit.load(str(path), _extra_files=files)
        assert json.loads(files["metadata.json"])["image_size"] == 32

        def run(batch):
            return loaded(torch.from_numpy(batch)).numpy()

    for batch in inputs(predictor, test_images):
        probs = run(batch)
        assert probs.shape == (len(batch), 2)
        assert np.abs(probs - predictor.probabilities(torch.from_numpy(batch)).numpy()).max() <= 1e-4


def test_export_refuses_an_unknown_format_and_reports_a_failed_check(trained_xray_run, tmp_path):
    with pytest.raises(ConfigError, match="format=tflite; choose one of onnx, torchscript"):
        export(export_config(trained_xray_run, tmp_path, "format=tflite"))
    with pytest.raises(MedlitError, match=r"model\.pt differs from PyTorch by 0 > tolerance=-1"):
        export(export_config(trained_xray_run, tmp_path, "format=torchscript", "tolerance=-1"))


def test_export_refuses_a_text_checkpoint(trained_imdb_run, tmp_path):
    with pytest.raises(ConfigError, match="is a text model; export takes image models"):
        export(export_config(trained_imdb_run, tmp_path))
