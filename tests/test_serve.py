"""`medlit serve` end to end: the real command, driven in Debian's headless chromium with Playwright."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlit.deploy.predictor import Predictor
from tests.conftest import ROOT, best_checkpoint
from tests.synthetic import POSITIVE_WORDS, write_dicom

pytestmark = pytest.mark.slow  # the real `medlit serve` in a process of its own, driven in a browser

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1000, "height": 1100}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(request, tmp_path):
    """`medlit serve ckpt_path=<the fixture's checkpoint> ...` on a free port; yields its URL."""
    ckpt, *overrides = request.param if isinstance(request.param, tuple) else (request.param,)
    ckpt = best_checkpoint(request.getfixturevalue(ckpt))
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (closed below, after the server)
    process = subprocess.Popen(
        [sys.executable, "-m", "medlit", "serve", f"ckpt_path={ckpt}", f"port={port}", *overrides],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{(tmp_path / 'serve.log').read_text()}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not answer within 120 s:\n{(tmp_path / 'serve.log').read_text()}")
                time.sleep(0.3)
        yield url, ckpt
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def page(tmp_path):
    """A page in Debian's chromium, headless, with a fresh profile and no network but localhost."""
    if not CHROMIUM.is_file():
        missing = f"{CHROMIUM} not found: the browser tests need Debian's chromium (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{missing}; in CI the web app must be proven in a browser")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS, viewport=VIEWPORT
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def shown_probabilities(page, prefix: str) -> dict[str, float]:
    rows = page.locator(f"#{prefix}-probabilities tr").all_inner_texts()
    return {row.split("\t")[0].strip()[2:-1]: float(row.split("\t")[1]) for row in rows}


@pytest.mark.parametrize("server", [("trained_xray_run", "max_upload_mb=0.05")], indirect=True)
def test_an_uploaded_xray_shows_its_probability_and_grad_cam_and_bad_uploads_a_message(
    server, page, xray_dir, tmp_path
):
    url, ckpt = server
    scan = sorted((xray_dir / "test" / "PNEUMONIA").iterdir())[0]
    predictor = Predictor.from_checkpoint(ckpt)
    expected = predictor.predict_files([scan])[0]

    page.goto(url)
    assert page.locator("#text-section").is_hidden()
    page.set_input_files("#image-file", str(scan))
    page.click("#image-submit")
    page.wait_for_selector("#image-result", state="visible", timeout=30_000)
    assert page.inner_text("#image-predicted") == expected.predicted
    shown = shown_probabilities(page, "image")
    assert shown.keys() == {"NORMAL", "PNEUMONIA"}
    assert shown["PNEUMONIA"] == pytest.approx(expected.probabilities[1], abs=5e-5)
    assert f"{predictor.threshold:.4f}" in page.inner_text("#image-threshold")
    page.wait_for_function(
        "() => { const i = document.getElementById('image-overlay'); return i.complete && i.naturalWidth > 0; }"
    )

    screenshot = tmp_path / "page.png"
    page.screenshot(path=str(screenshot))
    box = page.locator("#image-overlay").bounding_box()
    with Image.open(screenshot) as shot:
        assert shot.size == (VIEWPORT["width"], VIEWPORT["height"])
        overlay = np.asarray(shot.convert("RGB").crop((box["x"] + 2, box["y"] + 2, box["x"] + box["width"] - 2,
                                                        box["y"] + box["height"] - 2)), dtype=float)  # fmt: skip
    assert overlay.std() > 10, "the overlay region is blank"
    assert np.abs(overlay[..., 0] - overlay[..., 2]).mean() > 10, "no heat map colours over the grey image"

    dicom = write_dicom(tmp_path / "scan.dcm", np.asarray(Image.open(scan).convert("L")) * 4 + 100, slope=0.25)
    from_file = predictor.predict_files([dicom])[0]
    page.set_input_files("#image-file", str(dicom))
    page.click("#image-submit")
    page.wait_for_selector("#image-result", state="visible", timeout=30_000)
    assert shown_probabilities(page, "image")["PNEUMONIA"] == pytest.approx(from_file.probabilities[1], abs=5e-5)

    notes = tmp_path / "notes.jpeg"
    notes.write_text("not an image")
    page.set_input_files("#image-file", str(notes))
    page.click("#image-submit")
    page.wait_for_function("() => document.getElementById('image-error').textContent.length > 0")
    assert page.inner_text("#image-error").startswith("notes.jpeg is not a readable image (UnidentifiedImageError")
    assert page.locator("#image-result").is_hidden()

    large = tmp_path / "large.png"
    large.write_bytes(os.urandom(100_000))
    page.set_input_files("#image-file", str(large))
    page.click("#image-submit")
    page.wait_for_function("() => document.getElementById('image-error').textContent.includes('large.png')")
    assert page.inner_text("#image-error") == "large.png is larger than the upload limit of 0.05 MB (max_upload_mb)"


@pytest.mark.parametrize("server", ["trained_imdb_run"], indirect=True)
def test_a_pasted_review_shows_its_sentiment_and_the_words_that_drove_it(server, page):
    url, ckpt = server
    review = "The plot was superb and the actors were wonderful, a brilliant film.<br />I loved it."
    expected = Predictor.from_checkpoint(ckpt).predict_texts([review])[0]
    assert expected.predicted == "positive"

    page.goto(url)
    assert page.locator("#image-section").is_hidden()
    page.fill("#text-input", review)
    page.click("#text-submit")
    page.wait_for_selector("#text-result", state="visible", timeout=30_000)
    assert page.inner_text("#text-predicted") == "positive"
    assert shown_probabilities(page, "text")["positive"] == pytest.approx(expected.probabilities[1], abs=5e-5)
    words = page.locator("#text-words span")
    scores = {words.nth(i).inner_text(): float(words.nth(i).get_attribute("title")) for i in range(words.count())}
    assert {"plot", "superb", "wonderful", "brilliant", "loved"} <= scores.keys()
    strongest = max(scores, key=scores.get)
    assert strongest in POSITIVE_WORDS, scores  # the sentiment words, not the filler, drive the prediction

    page.fill("#text-input", "   ")
    page.click("#text-submit")
    page.wait_for_function("() => document.getElementById('text-error').textContent.length > 0")
    assert page.inner_text("#text-error") == "the review is empty"
    assert page.locator("#text-result").is_hidden()
