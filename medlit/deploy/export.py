"""A trained image model exported as ONNX or TorchScript, with its preprocessing inside the graph.

The exported model takes `image`: uint8 (batch, channels, size, size), 0-255, decoded as
`medlit.deploy.predictor.Predictor.read_image` does (greyscale, squashed to the stored size, repeated for 3
channels), any batch size; it returns `probabilities` (batch, classes). The scaling to [0, 1] and the
normalisation are part of the graph. The class names, the decision threshold and the input size are in the
ONNX metadata (TorchScript: the `metadata.json` extra file) and in `<model>.json` beside the file.
After exporting, the exported model's outputs are compared with PyTorch's on random images (and on
`check_inputs`), with onnxruntime for ONNX; a difference above `tolerance` is an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from medlit.deploy.ensemble import Ensemble
from medlit.deploy.predictor import Predictor, list_inputs
from medlit.errors import ConfigError, MedlitError, UnreadableInput
from medlit.training.classifier import Classifier

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT, OUTPUT = "image", "probabilities"


class ExportedClassifier(nn.Module):
    """uint8 images (N, C, H, W) -> class probabilities (N, C) (binary: P(negative), P(positive)).

    The Classifier's own preprocessing (scaling and normalisation with its stored statistics) runs inside; an
    ensemble exports as one graph, its members and test-time views included.
    """

    def __init__(self, model: Classifier | Ensemble) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model.class_probabilities(image)


def metadata(predictor: Predictor) -> dict:
    """What a user of the exported file needs to prepare inputs and read outputs."""
    size, channels = predictor.image_size, predictor.in_channels
    return {
        "input": f"{INPUT}: uint8 (batch, {channels}, {size}, {size}), 0-255, greyscale resized to {size} x {size}",
        "output": f"{OUTPUT}: float32 (batch, {len(predictor.class_names)}), one column per class",
        "class_names": predictor.class_names,
        "decision_threshold": predictor.threshold,
        "decision_rule": (
            f"{predictor.class_names[1]} when P({predictor.class_names[1]}) >= decision_threshold"
            if predictor.threshold is not None
            else "the most probable class"
        ),
        "image_size": size,
        "in_channels": channels,
        "members": len(predictor.model.members) if isinstance(predictor.model, Ensemble) else 1,
        "views": list(predictor.model.views) if isinstance(predictor.model, Ensemble) else ["identity"],
    }


def export_onnx(module: nn.Module, example: Tensor, path: Path, info: dict) -> None:
    """ONNX through torch.export, with a dynamic batch axis and `info` as metadata properties."""
    try:
        import onnx
    except ImportError:
        raise MedlitError("ONNX export needs the export extra: pip install 'medlit[export]'") from None
    for name in ("onnxscript", "onnx_ir"):  # their step-by-step progress is noise in the run's log
        logging.getLogger(name).setLevel(logging.WARNING)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        module,
        (example,),
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        verbose=False,
    )
    program.save(str(path))
    graph = onnx.load(str(path))
    for key, value in info.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = f"medlit.{key}", json.dumps(value)
    onnx.save(graph, str(path))


def export_torchscript(module: ExportedClassifier, example: Tensor, path: Path, info: dict) -> None:
    """A traced TorchScript module (batch size free: the network has no batch-dependent branches)."""
    module.requires_grad_(False)  # outputs that need no backward pass, as the ONNX graph's
    # what LightningModule.to_torchscript does: the tracer reads every attribute, and `trainer` raises when unset
    classifiers = [m for m in module.modules() if isinstance(m, Classifier)]
    for classifier in classifiers:
        classifier._jit_is_scripting = True
    try:
        with _torchscript():
            traced = torch.jit.trace(module, example)
            torch.jit.save(traced, str(path), _extra_files={"metadata.json": json.dumps(info)})
    finally:
        for classifier in classifiers:
            classifier._jit_is_scripting = False


@contextlib.contextmanager
def _torchscript() -> Iterator[None]:
    """TorchScript is deprecated in favour of torch.export, but still what many C++ runtimes load: asked for by
    name, its deprecation warnings are no news."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        yield


def load_exported(path: Path, fmt: str):
    """A function from uint8 numpy batches to probabilities, running the exported file."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise MedlitError("checking the ONNX export needs the export extra: pip install 'medlit[export]'") from None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda images: session.run([OUTPUT], {INPUT: images})[0]
    with _torchscript():
        loaded = torch.jit.load(str(path))
    return lambda images: loaded(torch.from_numpy(images)).detach().numpy()


def parity(module: nn.Module, exported, batches: list[np.ndarray]) -> float:
    """The largest absolute difference between PyTorch's and the exported model's probabilities."""
    worst = 0.0
    with torch.no_grad():
        for images in batches:
            expected = module(torch.from_numpy(images)).numpy()
            worst = max(worst, float(np.abs(exported(images) - expected).max()))
    return worst


def export_model(
    predictor: Predictor,
    fmt: str,
    path: Path,
    check_inputs: str | None = None,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> Path:
    """Write the predictor's model as `fmt` to `path`, its metadata beside it (`.json`), and check the file's
    probabilities against PyTorch's on random images and on the images of `check_inputs`."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt}; choose one of {', '.join(FORMATS)}")
    if predictor.is_text:
        raise ConfigError(f"{predictor.run.cfg.ckpt_path} is a text model; export takes image models")
    path.parent.mkdir(parents=True, exist_ok=True)
    module = ExportedClassifier(predictor.model).eval()
    size, channels = predictor.image_size, predictor.in_channels
    info = metadata(predictor)
    example = torch.zeros(2, channels, size, size, dtype=torch.uint8)
    (export_onnx if fmt == "onnx" else export_torchscript)(module, example, path, info)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("Exported %s to %s (metadata in %s)", fmt, path, path.with_suffix(".json"))

    rng = np.random.default_rng(seed)
    batches = [rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8) for n in (1, 5)]
    checks = [("random images (batches of 1 and 5)", batches)]
    if check_inputs:
        real = _read_images(predictor, check_inputs)
        checks.append((f"{len(real)} images of {check_inputs} (batches of 1 and {len(real)})", [real[:1], real]))
    exported = load_exported(path, fmt)
    for what, check in checks:
        difference = parity(module, exported, check)
        log.info("Largest |%s - PyTorch| probability difference on %s: %.3g", fmt, what, difference)
        if difference > tolerance:
            raise MedlitError(f"{path} differs from PyTorch by {difference:.3g} > tolerance={tolerance} on {what}")
    return path


def _read_images(predictor: Predictor, source: str) -> np.ndarray:
    images = []
    for path in list_inputs([source]):
        try:
            images.append(predictor.read_image(path).numpy())
        except UnreadableInput as err:
            log.warning("Not checked: %s", err)
    if not images:
        raise MedlitError(f"check_inputs={source}: no readable images")
    return np.stack(images)
