"""`medlit export`: a trained image checkpoint as ONNX or TorchScript, with its preprocessing inside the graph.

medlit export ckpt_path=logs/train/runs/<run>/checkpoints/epoch_007.ckpt             # ONNX
medlit export ckpt_path=... format=torchscript
medlit export ckpt_path=... check_inputs=scans/    # parity with PyTorch on real images too

See `medlit.deploy.export` for what the exported file takes and returns.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from medlit.cli.runner import CONFIG_PATH, launch, run_task
from medlit.deploy.export import FORMATS, export_model
from medlit.deploy.predictor import Predictor
from medlit.deploy.rebuild import rebuild_classifier
from medlit.errors import ConfigError


def export(cfg: DictConfig) -> Path:
    """Write the model, its metadata beside it, and check it against PyTorch; return the model file."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format}; choose one of {', '.join(FORMATS)}")
    path = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / f"model{FORMATS[cfg.format]}"
    predictor = Predictor(rebuild_classifier(cfg), tta=cfg.get("tta"))
    return export_model(predictor, cfg.format, path, cfg.check_inputs, cfg.tolerance, cfg.seed)


@hydra.main(config_path=CONFIG_PATH, config_name="export", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    run_task(export, cfg)


def main() -> None:
    launch(hydra_main)


if __name__ == "__main__":
    main()
