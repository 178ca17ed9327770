"""The web app's endpoints under hostile requests, against the app object (and one real server): bodies are capped
before they are read, JSON is checked, names are escaped in the log, and the model works off the event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from medlit.data.vocabulary import build_vocabulary
from medlit.deploy.predictor import Predictor
from medlit.deploy.serve import MAX_TEXT_BYTES, Explainer, create_app
from tests.crafted import write_checkpoint, write_png
from tests.test_serve import free_port


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("image") / "run" / "checkpoints" / "image.ckpt")


@pytest.fixture(scope="module")
def image_explainer(image_checkpoint) -> Explainer:
    return Explainer(Predictor.from_checkpoint(image_checkpoint))


@pytest.fixture(scope="module")
def text_explainer(tmp_path_factory) -> Explainer:
    reviews = ["a superb moving film", "a dull boring waste", "the plot was great", "awful acting and dull plot"]
    tokenizer = build_vocabulary(reviews, 40, 16)
    state = {"IMDBDataModule": {"tokenizer": tokenizer.to_str()}}
    ckpt = write_checkpoint(
        tmp_path_factory.mktemp("text") / "text.ckpt", None, "data=imdb", "model=bilstm", "data.vocab_size=40",
        "data.max_len=16", "model.embed_dim=8", "model.hidden=8", "model.hidden2=4", extra=state,
    )  # fmt: skip
    return Explainer(Predictor.from_checkpoint(ckpt), ig_steps=8)


@pytest.fixture
def scan(tmp_path) -> bytes:
    pixels = (np.arange(48 * 48).reshape(48, 48) * 20).astype(np.uint16)
    return write_png(tmp_path / "scan.png", pixels).read_bytes()


async def call(app, path: str, headers: dict[str, str], chunks) -> tuple[int, dict, int]:
    """POST `chunks` (an iterable of bytes) to the ASGI `app` as a server would stream them; the status, the JSON
    answer, and how many bytes of the body the app pulled."""
    pulled, body = 0, iter(chunks)

    async def receive() -> dict:
        nonlocal pulled
        chunk = next(body, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "server": ("test", 80),
        "client": ("test", 1), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(answer), pulled


def test_a_220_mb_text_body_is_refused_before_it_is_read(text_explainer):
    app = create_app(text_explainer)
    megabyte = b"x" * (1 << 20)
    declared = {"content-type": "application/json", "content-length": str(220 << 20)}
    status, answer, pulled = asyncio.run(call(app, "/api/text", declared, (megabyte for _ in range(220))))
    assert status == 413 and pulled == 0
    assert answer["error"] == f"the request is larger than {MAX_TEXT_BYTES} bytes (reviews up to 100000 characters)"
    # sent in chunks without a length: reading stops at the cap, not at the end of the body
    status, answer, pulled = asyncio.run(call(app, "/api/text", {}, (megabyte for _ in range(220))))
    assert status == 413 and pulled == 1 << 20


def test_an_oversized_upload_is_refused_before_it_is_read(image_explainer):
    app = create_app(image_explainer, max_upload_mb=1)
    headers = {"content-length": str(50 << 20), "x-filename": "huge.png"}
    status, answer, pulled = asyncio.run(call(app, "/api/image", headers, (b"\0" * 65536 for _ in range(800))))
    assert (status, pulled) == (413, 0)
    assert answer["error"] == "huge.png is larger than the upload limit of 1 MB (max_upload_mb)"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"null", 'send JSON: {"text": "<review>"}, with the review as a string'),
        (b'{"text": null}', 'send JSON: {"text": "<review>"}, with the review as a string'),
        (b'["a fine film"]', 'send JSON: {"text": "<review>"}, with the review as a string'),
        (
            b'{"text": "\\ud800 a fine film"}',
            "the review is not valid Unicode: it holds a lone surrogate (e.g. \\ud800)",
        ),
        (b'{"text": "\xff\xfe"}', 'send JSON: {"text": "<review>"}'),
        (b"[" * 50_000, 'send JSON: {"text": "<review>"}'),
        (b'{"text": "   "}', "the review is empty"),
    ],
    ids=["null", "text-null", "list", "lone-surrogate", "not-utf8", "deep", "blank"],
)
def test_a_review_must_be_a_json_string_of_unicode(body, message, text_explainer):
    response = TestClient(create_app(text_explainer)).post("/api/text", content=body)
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    assert response.json() == {"error": message}


def test_a_review_is_scored_and_explained(text_explainer):
    response = TestClient(create_app(text_explainer)).post("/api/text", json={"text": "a superb moving film"})
    assert response.status_code == 200
    result = response.json()
    assert sum(result["probabilities"].values()) == pytest.approx(1)
    assert [w["word"] for w in result["words"]] == ["a", "superb", "moving", "film"]


def test_an_upload_is_scored_and_a_pixel_bomb_refused_from_its_header(image_explainer, scan, tmp_path):
    client = TestClient(create_app(image_explainer))
    scored = client.post("/api/image", content=scan, headers={"x-filename": "scan.png"})
    assert scored.status_code == 200 and scored.json()["overlay"].startswith("data:image/png;base64,")
    bomb = write_png(tmp_path / "bomb.png", shape=(12000, 12000)).read_bytes()
    refused = client.post("/api/image", content=bomb, headers={"x-filename": "bomb.png"})
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "bomb.png is too large to decode: it declares 12000 x 12000 pixels (144.0 M), more than the limit of 36.0 M "
        "(max_pixels). Upload a JPEG, PNG or DICOM image"
    )


def test_a_file_name_cannot_forge_a_log_line(image_explainer, caplog):
    forged = "scan.png%0A[2026-01-01 00:00:00][medlit][INFO] all clear%1B[2J"
    with caplog.at_level(logging.WARNING, logger="medlit.deploy.serve"):
        response = TestClient(create_app(image_explainer)).post(
            "/api/image", content=b"not an image", headers={"x-filename": forged}
        )
    assert response.status_code == 400
    (record,) = [r for r in caplog.records if r.getMessage().startswith("Refused (400)")]
    logged = record.getMessage()
    assert "\n" not in logged and "\x1b" not in logged
    assert "scan.png\\n[2026-01-01 00:00:00][medlit][INFO] all clear\\x1b[2J is not a readable image" in logged
    assert response.json()["error"].startswith("scan.png\\n[2026")


def slow(seconds: float, gate: threading.Event | None = None):
    """Model work that takes `seconds` (or until `gate` opens), blocking its thread as decoding does."""

    def work(data: bytes, name: str) -> dict:
        if gate is not None:
            gate.wait(10)
        else:
            time.sleep(seconds)
        return {"probabilities": {"NORMAL": 0.5, "PNEUMONIA": 0.5}, "predicted": "PNEUMONIA"}

    return work


def test_the_page_answers_while_an_upload_is_scored(image_explainer, monkeypatch):
    monkeypatch.setattr(image_explainer, "image", slow(1.5))
    app = create_app(image_explainer)

    async def scenario() -> tuple[float, bool, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://medlit") as client:
            upload = asyncio.create_task(client.post("/api/image", content=b"scan"))
            await asyncio.sleep(0.3)  # the upload is with the worker now
            start = time.perf_counter()
            page = await client.get("/")
            waited = time.perf_counter() - start
            scoring = not upload.done()
            return waited, scoring and page.status_code == 200, (await upload).status_code

    waited, answered_during_scoring, scored = asyncio.run(scenario())
    assert answered_during_scoring and waited < 0.2 and scored == 200


def test_a_full_queue_answers_busy_and_a_slow_request_times_out(image_explainer, monkeypatch):
    gate = threading.Event()
    monkeypatch.setattr(image_explainer, "image", slow(0, gate))
    app = create_app(image_explainer, queue=1)

    async def three_uploads() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://medlit") as client:
            first = asyncio.create_task(client.post("/api/image", content=b"a"))
            second = asyncio.create_task(client.post("/api/image", content=b"b"))
            await asyncio.sleep(0.2)
            third = await client.post("/api/image", content=b"c", headers={"x-filename": "c.png"})
            gate.set()
            return [await first, await second, third]

    first, second, third = asyncio.run(three_uploads())
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 503)
    assert third.json()["error"] == "the server is busy (2 requests ahead); try scoring c.png again in a moment"
    assert third.headers["retry-after"] == "5"

    monkeypatch.setattr(image_explainer, "image", slow(1.0))
    late = TestClient(create_app(image_explainer, timeout=0.2)).post("/api/image", content=b"x")
    assert late.status_code == 504 and late.json()["error"] == "scoring upload took longer than 0.2 s (timeout)"


@pytest.mark.slow
def test_a_real_server_answers_the_page_within_200_ms_while_scoring_a_large_upload(image_explainer, tmp_path):
    """uvicorn serving the app on a socket while it scores a 4000 x 4000 16-bit PNG (decoding takes about a
    second): the page keeps answering in under 200 ms."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(image_explainer), port=free_port(), log_level="warning"))
    running = threading.Thread(target=server.run, daemon=True)
    running.start()
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert running.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        large = write_png(tmp_path / "large.png", shape=(4000, 4000)).read_bytes()
        scored = {}

        def upload() -> None:
            start = time.perf_counter()
            request = urllib.request.Request(f"{url}/api/image", data=large, headers={"X-Filename": "large.png"})
            with urllib.request.urlopen(request, timeout=60) as response:
                scored["status"], scored["seconds"] = response.status, time.perf_counter() - start

        thread = threading.Thread(target=upload)
        thread.start()
        waits = []
        while thread.is_alive():
            start = time.perf_counter()
            urllib.request.urlopen(url, timeout=5).close()
            waits.append(time.perf_counter() - start)
            time.sleep(0.05)
        thread.join()
        slowest = max(waits) * 1e3
        print(f"upload scored in {scored['seconds']:.2f} s; {len(waits)} pages meanwhile, slowest {slowest:.0f} ms")
        assert scored["status"] == 200 and len(waits) >= 3
        assert max(waits) < 0.2
    finally:
        server.should_exit = True
        running.join(timeout=30)
