"""A small web app for live predictions with a trained checkpoint, with the evidence behind each one.

Image models: upload an X-ray (JPEG, PNG or DICOM) and see the class probabilities, the predicted class at
the stored decision threshold, and the Grad-CAM heat map of the predicted class over the image as the model
saw it. Text models: paste a review and see its sentiment with each word coloured by its Integrated
Gradients attribution. FastAPI serves one plain HTML page (no external resources: it works offline) and
two JSON endpoints, `POST /api/image` (the file as the request body) and `POST /api/text`.

Uploads come from strangers: every body is capped before it is read, JSON is checked for its type, names are
escaped before they are logged, and decoding and the model run on one worker thread, off the event loop, so
the page keeps answering while an upload is scored. Requests wait for the worker in a bounded queue (a full
queue answers 503, busy) and for at most `timeout` seconds each (then 504).
"""

# Without `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) as objects.
import asyncio
import base64
import html
import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import unquote

import matplotlib
import numpy as np
import torch
from PIL import Image

from medlit.deploy.predictor import Predictor
from medlit.errors import UnreadableInput
from medlit.interpret import attribution
from medlit.interpret.render import token_html

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("serve.html")
OVERLAY_SIZE = 320  # pixels: small models' 28 px inputs are shown enlarged
MAX_TEXT_CHARS = 100_000
# a review's JSON body: every character escaped as \uXXXX takes 6 bytes
MAX_TEXT_BYTES = 6 * MAX_TEXT_CHARS + 1024


class Explainer:
    """A Predictor with its explanations: Grad-CAM for images, Integrated Gradients for reviews.

    One request at a time uses the model (attribution methods hook into its layers).
    """

    def __init__(self, predictor: Predictor, ig_steps: int = 50) -> None:
        self.predictor, self.ig_steps = predictor, ig_steps
        self.lock = threading.Lock()
        model = predictor.model
        if predictor.is_text:
            self.layer = attribution.find_embedding(model)
        else:
            size = predictor.image_size
            example = torch.zeros(1, predictor.in_channels, size, size, dtype=torch.uint8, device=model.device)
            self.layer = attribution.find_cam_layer(model, example)

    def image(self, data: bytes, name: str) -> dict:
        """Probabilities, predicted class and Grad-CAM overlay (a PNG data URL) of an uploaded image."""
        predictor = self.predictor
        image = predictor.read_image(data, name).unsqueeze(0).to(predictor.model.device)
        with self.lock:
            probs = predictor.probabilities(image)
            label = predictor.labels(probs)[0]
            target = torch.tensor([predictor.class_names.index(label)], device=image.device)
            heat = attribution.grad_cam(predictor.model, image, target, self.layer)[0].cpu().numpy()
        return {
            **self._result(probs[0].tolist(), label),
            "overlay": png_data_url(overlay(image[0, 0].cpu().numpy(), heat)),
            "layer": self.layer,
        }

    def text(self, text: str) -> dict:
        """Probabilities, predicted sentiment and the words' Integrated Gradients attributions, as HTML."""
        predictor = self.predictor
        ids = predictor.encode([text]).to(predictor.model.device)
        tokenizer = predictor.tokenizer
        pad_id = int(tokenizer.padding["pad_id"])
        unknown_id = tokenizer.token_to_id(tokenizer.model.unk_token)
        with self.lock:
            probs = predictor.probabilities(ids)
            label = predictor.labels(probs)[0]
            target = torch.tensor([predictor.class_names.index(label)], device=ids.device)
            scores, delta = attribution.integrated_gradients(
                predictor.model, ids, target, self.layer, pad_id, unknown_id, self.ig_steps
            )
        row = ids[0].cpu()
        keep = row != pad_id
        words = [tokenizer.id_to_token(int(i)) for i in row[keep]]
        values = scores[0][keep].numpy()
        heading = f"predicted {label} ({max(probs[0].tolist()):.2f})"
        return {
            **self._result(probs[0].tolist(), label),
            "words": [{"word": w, "score": float(v)} for w, v in zip(words, values, strict=True)],
            "html": token_html(words, values, heading, float(delta[0])) if words else "",
        }

    def _result(self, probs: list[float], label: str) -> dict:
        return {
            "probabilities": dict(zip(self.predictor.class_names, probs, strict=True)),
            "predicted": label,
            "threshold": self.predictor.threshold,
        }


def overlay(grey: np.ndarray, heat: np.ndarray, size: int = OVERLAY_SIZE, alpha: float = 0.45) -> Image.Image:
    """The image (uint8, H x W) under its heat map (in [0, 1]) in the jet colour map, enlarged to `size`."""
    colours = matplotlib.colormaps["jet"](heat)[..., :3] * 255
    blend = (1 - alpha) * grey[..., None].astype(np.float64) + alpha * colours
    image = Image.fromarray(blend.clip(0, 255).round().astype(np.uint8), "RGB")
    return image.resize((size, size), Image.Resampling.BILINEAR)


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class Busy(Exception):
    """Every place in the queue for the model is taken."""


class ModelWorker:
    """One thread that runs the model's work (decoding, predicting, explaining), off the event loop.

    At most `queue` requests wait behind the one being worked on; more are refused at once (`Busy`). A
    request waits at most `timeout` seconds for its result (`TimeoutError`); work that has started cannot
    be stopped, so its place in the queue is given back only when it ends.
    """

    def __init__(self, queue: int = 4, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.places = threading.BoundedSemaphore(queue + 1)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medlit-model")

    async def run(self, work, *args):
        if not self.places.acquire(blocking=False):
            raise Busy
        try:
            future = self.executor.submit(work, *args)
        except RuntimeError:
            self.places.release()
            raise
        future.add_done_callback(lambda _: self.places.release())
        return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def printable(text: str, limit: int = 300) -> str:
    """`text` with control and other unprintable characters escaped (a newline becomes `\\n`) and cut to
    `limit` characters: a name from a request cannot forge lines in the log or run off the page."""
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


async def read_body(request, limit: int) -> bytes | None:
    """The request's body, or None as soon as it is known to be larger than `limit` bytes: from its declared
    length before anything is read, else while it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def create_app(
    explainer: Explainer,
    max_upload_mb: float = 20.0,
    title: str = "medlit",
    queue: int = 4,
    timeout: float = 60.0,
):
    """The FastAPI application: the page and the two prediction endpoints (see the module's docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    predictor = explainer.predictor
    limit = int(max_upload_mb * 1024 * 1024)
    worker = ModelWorker(queue, timeout)

    @asynccontextmanager
    async def lifespan(app):
        yield
        worker.close()

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    page = (
        PAGE.read_text()
        .replace("{{title}}", html.escape(title))
        .replace("{{kind}}", "text" if predictor.is_text else "image")
        .replace("{{classes}}", html.escape(", ".join(predictor.class_names)))
        .replace("{{limit}}", f"{max_upload_mb:g}")
    )

    def error(message: str, status: int, **headers: str) -> JSONResponse:
        log.warning("Refused (%d): %s", status, printable(message, 1000))
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def answer(what: str, extra: dict, work, *args) -> JSONResponse:
        """`work(*args)` run by the worker, its result (with `extra`) as JSON, or why there is none."""
        try:
            result = await worker.run(work, *args)
        except UnreadableInput as err:
            return error(f"{err}. Upload a JPEG, PNG or DICOM image", 400)
        except Busy:
            return error(f"the server is busy ({queue + 1} requests ahead); try {what} again in a moment", 503,
                         **{"Retry-After": "5"})  # fmt: skip
        except TimeoutError:
            return error(f"{what} took longer than {timeout:g} s (timeout)", 504)
        return JSONResponse({**extra, **result})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.error("Failed on %s", request.url.path, exc_info=err)
        return JSONResponse({"error": f"the server failed ({type(err).__name__}); see its log"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.post("/api/image")
    async def image(request: Request) -> JSONResponse:
        name = printable(unquote(request.headers.get("x-filename", "upload")))
        if predictor.is_text:
            return error("this server holds a text model: paste a review instead", 400)
        data = await read_body(request, limit)
        if data is None:
            return error(f"{name} is larger than the upload limit of {max_upload_mb:g} MB (max_upload_mb)", 413)
        if not data:
            return error(f"{name} is empty", 400)
        return await answer(f"scoring {name}", {"filename": name}, explainer.image, data, name)

    @app.post("/api/text")
    async def text(request: Request) -> JSONResponse:
        if not predictor.is_text:
            return error("this server holds an image model: upload an image instead", 400)
        body = await read_body(request, MAX_TEXT_BYTES)
        if body is None:
            return error(f"the request is larger than {MAX_TEXT_BYTES} bytes (reviews up to {MAX_TEXT_CHARS} "
                         "characters)", 413)  # fmt: skip
        try:
            review = _review(body)
        except ValueError as err:
            return error(str(err), 400)
        if not review.strip():
            return error("the review is empty", 400)
        if len(review) > MAX_TEXT_CHARS:
            return error(f"the review is longer than {MAX_TEXT_CHARS} characters", 413)
        return await answer("scoring the review", {}, explainer.text, review)

    return app


def _review(body: bytes) -> str:
    """The review in a `{"text": "..."}` body; a ValueError saying what to send for any other body."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError('send JSON: {"text": "<review>"}') from None
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        raise ValueError('send JSON: {"text": "<review>"}, with the review as a string')
    try:
        payload["text"].encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the review is not valid Unicode: it holds a lone surrogate (e.g. \\ud800)") from None
    return payload["text"]
