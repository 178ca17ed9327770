"""Both notebooks run top to bottom on generated data and show their figures."""

from __future__ import annotations

import numpy as np
import pytest
from nbclient import NotebookClient
from nbformat import read
from PIL import Image

from tests.conftest import ROOT
from tests.synthetic import write_medmnist_npz

pytestmark = pytest.mark.slow  # each notebook runs in a kernel of its own, a new process


def run_notebook(name: str, cwd) -> list[dict]:
    """Execute `notebooks/<name>` in a fresh kernel; return its code cells' outputs."""
    with open(ROOT / "notebooks" / name) as handle:
        notebook = read(handle, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return [cell.outputs for cell in notebook.cells if cell.cell_type == "code"]


def images_shown(outputs: list[dict]) -> int:
    return sum("image/png" in output.get("data", {}) for output in outputs)


def write_reviews(root, rng: np.random.Generator) -> None:
    for split in ("train", "test"):
        for sentiment, word in (("neg", "awful"), ("pos", "great")):
            folder = root / split / sentiment
            folder.mkdir(parents=True)
            for i in range(6):
                words = " ".join(rng.choice(["film", "plot", word], size=rng.integers(5, 60)))
                (folder / f"{i}_1.txt").write_text(f"A {words}.<br /><br />The end.")


def test_the_eda_notebook(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    write_medmnist_npz(tmp_path / "data" / "medmnist" / "pneumoniamnist.npz", num_classes=2)
    for i, size in enumerate([(40, 30), (64, 64), (50, 80)]):
        folder = tmp_path / "xrays" / ("NORMAL" if i % 2 else "PNEUMONIA")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size[::-1], dtype=np.uint8)).save(folder / f"{i}.png")
    write_reviews(tmp_path / "aclImdb", rng)
    monkeypatch.setenv("MEDLIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDLIT_IMAGE_FOLDER", str(tmp_path / "xrays"))
    monkeypatch.setenv("MEDLIT_IMDB", str(tmp_path / "aclImdb"))
    outputs = run_notebook("01_eda.ipynb", tmp_path)
    assert "pneumoniamnist: classes ['normal', 'pneumonia'], images (1, 28, 28) uint8" in outputs[1][-1]["text"]
    # class distribution, sizes, intensities, samples, augmentation, review lengths: one figure each
    assert [images_shown(cell) for cell in outputs[2:]] == [1, 1, 1, 1, 1, 1]


def test_the_results_notebook(two_run_multirun, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLIT_RUNS", str(two_run_multirun))
    monkeypatch.delenv("MEDLIT_CHECKPOINT", raising=False)
    monkeypatch.delenv("MEDLIT_DATA_DIR", raising=False)
    outputs = run_notebook("02_results.ipynb", tmp_path)
    table = outputs[1][-1]["data"]["text/markdown"]
    assert "| run | optimizer.lr |" in table and "| 0 | 0.001 |" in table and "| 1 | 0.003 |" in table
    assert images_shown(outputs[2]) == 1  # ROC overlay
    assert images_shown(outputs[3]) == 3  # the best run's ROC, precision-recall and confusion matrix
    assert images_shown(outputs[4]) == 1  # Grad-CAM grid


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    """Kernels start without the user's IPython and Jupyter settings."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter"))
