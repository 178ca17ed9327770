"""A small web app for live predictions with a trained checkpoint, with the evidence behind each one.

Image models: upload an X-ray (JPEG, PNG or DICOM) and see the class probabilities, the predicted class at
the stored decision threshold, and the Grad-CAM heat map of the predicted class over the image as the model
saw it. Text models: paste a review and see its sentiment with each word coloured by its Integrated
Gradients attribution. FastAPI serves one plain HTML page (no external resources: it works offline) and
two JSON endpoints, `POST /api/image` (the file as the request body) and `POST /api/text`.
"""

# Without `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) as objects.
import base64
import html
import io
import logging
import threading
from pathlib import Path
from urllib.parse import unquote

import matplotlib
import numpy as np
import torch
from PIL import Image

from medlit.deploy.ensemble import Ensemble
from medlit.deploy.predictor import Predictor
from medlit.errors import UnreadableInput
from medlit.interpret import attribution
from medlit.interpret.render import token_html

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("serve.html")
OVERLAY_SIZE = 320  # pixels: small models' 28 px inputs are shown enlarged
MAX_TEXT_CHARS = 100_000


class Explainer:
    """A Predictor with its explanations: Grad-CAM for images, Integrated Gradients for reviews.

    One request at a time uses the model (attribution methods hook into its layers).
    """

    def __init__(self, predictor: Predictor, ig_steps: int = 50) -> None:
        self.predictor, self.ig_steps = predictor, ig_steps
        self.lock = threading.Lock()
        # an ensemble's evidence is its members' evidence, weighted as their probabilities are
        model = predictor.model
        members = [(1.0, model)]
        if isinstance(model, Ensemble):
            members = list(zip(model.weights.tolist(), model.members, strict=True))
        if predictor.is_text:
            self.explained = [(w, m, attribution.find_embedding(m)) for w, m in members]
        else:
            size = predictor.image_size
            example = torch.zeros(1, predictor.in_channels, size, size, dtype=torch.uint8, device=model.device)
            self.explained = [(w, m, attribution.find_cam_layer(m, example)) for w, m in members]
        self.layer = ", ".join(dict.fromkeys(layer for _, _, layer in self.explained))

    def image(self, data: bytes, name: str) -> dict:
        """Probabilities, predicted class and Grad-CAM overlay (a PNG data URL) of an uploaded image."""
        predictor = self.predictor
        image = predictor.read_image(data, name).unsqueeze(0).to(predictor.model.device)
        with self.lock:
            probs = predictor.probabilities(image)
            label = predictor.labels(probs)[0]
            target = torch.tensor([predictor.class_names.index(label)], device=image.device)
            heat = sum(w * attribution.grad_cam(m, image, target, layer)[0] for w, m, layer in self.explained)
            heat = heat.cpu().numpy()
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
            scores, delta = 0, 0
            for w, member, layer in self.explained:
                s, d = attribution.integrated_gradients(member, ids, target, layer, pad_id, unknown_id, self.ig_steps)
                scores, delta = scores + w * s, delta + w * d
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


def create_app(explainer: Explainer, max_upload_mb: float = 20.0, title: str = "medlit"):
    """The FastAPI application: the page and the two prediction endpoints."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    predictor = explainer.predictor
    limit = int(max_upload_mb * 1024 * 1024)
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    page = (
        PAGE.read_text()
        .replace("{{title}}", html.escape(title))
        .replace("{{kind}}", "text" if predictor.is_text else "image")
        .replace("{{classes}}", html.escape(", ".join(predictor.class_names)))
        .replace("{{limit}}", f"{max_upload_mb:g}")
    )

    def error(message: str, status: int) -> JSONResponse:
        log.warning("Refused (%d): %s", status, message)
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.post("/api/image")
    async def image(request: Request) -> JSONResponse:
        name = unquote(request.headers.get("x-filename", "upload"))
        if predictor.is_text:
            return error("this server holds a text model: paste a review instead", 400)
        too_large = f"{name} is larger than the upload limit of {max_upload_mb:g} MB (max_upload_mb)"
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return error(too_large, 413)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                return error(too_large, 413)
        if not data:
            return error(f"{name} is empty", 400)
        try:
            return JSONResponse({"filename": name, **explainer.image(bytes(data), name)})
        except UnreadableInput as err:
            return error(f"{err}. Upload a JPEG, PNG or DICOM image", 400)

    @app.post("/api/text")
    async def text(request: Request) -> JSONResponse:
        if not predictor.is_text:
            return error("this server holds an image model: upload an image instead", 400)
        try:
            review = str((await request.json()).get("text", ""))
        except (ValueError, AttributeError):
            return error('send JSON: {"text": "<review>"}', 400)
        if not review.strip():
            return error("the review is empty", 400)
        if len(review) > MAX_TEXT_CHARS:
            return error(f"the review is longer than {MAX_TEXT_CHARS} characters", 413)
        return JSONResponse(explainer.text(review))

    return app
