"""Reviews as HTML, each word on a background from red (against the predicted class) to green (for it).

Written by `medlit explain` for Integrated Gradients and shown by the web app.
"""

from __future__ import annotations

import html

import numpy as np


def token_html(tokens: list[str], scores: np.ndarray, heading: str, delta: float) -> str:
    """One review as HTML: each token on a background from red (against the predicted class) to green (for it)."""
    limit = float(np.abs(scores).max()) or 1.0
    spans = []
    for token, score in zip(tokens, scores, strict=True):
        alpha = min(1.0, abs(float(score)) / limit)
        colour = f"rgba(26,152,80,{alpha:.2f})" if score > 0 else f"rgba(215,48,39,{alpha:.2f})"
        spans.append(f'<span style="background:{colour}" title="{score:+.4f}">{html.escape(token)}</span>')
    return (
        f"<section><h2>{html.escape(heading)}</h2>"
        f"<p class='note'>convergence delta {delta:+.4f}</p><p>{' '.join(spans)}</p></section>"
    )


def html_page(title: str, sections: list[str]) -> str:
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.9}"
        "span{padding:1px 2px;border-radius:3px}.note{color:#666;font-size:85%}"
    )
    legend = "<p class='note'>green: evidence for the predicted class; red: against it; hover a word for its score</p>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{legend}{''.join(sections)}</body></html>\n"
    )
