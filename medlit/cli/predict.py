"""`medlit predict`: a trained checkpoint's predictions on new images (JPEG, PNG, DICOM) or reviews.

medlit predict ckpt_path=logs/train/runs/<run>/checkpoints/epoch_007.ckpt inputs=scans/
medlit predict ckpt_path=... inputs=[a.jpeg,b.dcm] output=predictions.csv
medlit predict ckpt_path=... 'text=["A moving film, superbly acted."]' inputs=reviews/

Prints a table and writes a CSV: one row per input with its class probabilities, the predicted class and,
for an input that cannot be read, the reason. Exits non-zero only when no input could be read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.table import Table

from medlit.cli.runner import CONFIG_PATH, launch, run_task
from medlit.deploy.predictor import Prediction, Predictor, list_inputs, write_predictions
from medlit.deploy.rebuild import rebuild_classifier
from medlit.errors import ConfigError, DataError
from medlit.training.hardware import resolve_device

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> list[Prediction]:
    """Predict every input of `cfg`; write the CSV and print the table."""
    sources, texts = _as_list(cfg.inputs), _as_list(cfg.text)
    if not sources and not texts:
        raise ConfigError("nothing to predict: give inputs=<files or folders> (or text=[...] for a text model)")
    predictor = Predictor(rebuild_classifier(cfg), cfg.max_pixels)
    if texts and not predictor.is_text:
        raise ConfigError(f"text=... needs a text model; {cfg.ckpt_path} is an image model")
    predictor.model.to(resolve_device(cfg.device))
    files = list_inputs(sources)
    if sources and not files:
        raise DataError(f"no files in {', '.join(sources)}")
    predictions = predictor.predict_files(files, cfg.batch_size) + predictor.predict_texts(texts)
    output = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / "predictions.csv"
    write_predictions(output, predictions, predictor.class_names)
    print_table(predictions, predictor.class_names, predictor.threshold)
    log.info("Predictions for %d inputs written to %s", len(predictions), output)
    failed = [p for p in predictions if p.error]
    if len(failed) == len(predictions):
        raise DataError(f"none of the {len(predictions)} inputs could be read (see {output})")
    if failed:
        log.warning("%d of %d inputs could not be read", len(failed), len(predictions))
    return predictions


def print_table(predictions: Sequence[Prediction], class_names: Sequence[str], threshold: float | None) -> None:
    title = f"decision threshold {threshold:.4f} on P({class_names[1]})" if threshold is not None else None
    table = Table(title=title)
    table.add_column("input", overflow="fold")
    for name in class_names:
        table.add_column(f"P({name})", justify="right")
    table.add_column("predicted")
    for p in predictions:
        shown = p.input if len(p.input) <= 80 else p.input[:77] + "..."
        if p.error:
            table.add_row(shown, *[""] * len(class_names), f"[red]unreadable[/red]: {p.error}")
        else:
            table.add_row(shown, *(f"{v:.4f}" for v in p.probabilities), p.predicted)
    Console(width=max(120, Console().width)).print(table)


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (ListConfig, list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


@hydra.main(config_path=CONFIG_PATH, config_name="predict", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    run_task(predict, cfg)


def main() -> None:
    launch(hydra_main)


if __name__ == "__main__":
    main()
