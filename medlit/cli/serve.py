"""`medlit serve`: a web app for live predictions with a trained checkpoint, with the evidence behind each one.

medlit serve ckpt_path=logs/train/runs/<run>/checkpoints/epoch_007.ckpt      # http://127.0.0.1:8000
medlit serve ckpt_path=... host=0.0.0.0 port=8080 max_upload_mb=50

See `medlit.deploy.serve` for the page and its endpoints.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from medlit.cli.runner import CONFIG_PATH, launch, run_task
from medlit.errors import require_extra

log = logging.getLogger(__name__)


def serve(cfg: DictConfig) -> None:
    """Load the checkpoint and serve the page until interrupted."""
    require_extra("serve", "fastapi", "uvicorn", "captum", "skimage")
    import uvicorn

    from medlit.deploy.predictor import Predictor
    from medlit.deploy.rebuild import rebuild_classifier
    from medlit.deploy.serve import Explainer, create_app
    from medlit.training.hardware import resolve_device

    predictor = Predictor(rebuild_classifier(cfg), cfg.max_pixels)
    predictor.model.to(resolve_device(cfg.device))
    explainer = Explainer(predictor, cfg.integrated_gradients.steps)
    title = f"medlit: {Path(cfg.ckpt_path).name}"
    app = create_app(explainer, cfg.max_upload_mb, title, queue=cfg.queue, timeout=cfg.timeout)
    log.info("Serving %s on http://%s:%d", cfg.ckpt_path, cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")


@hydra.main(config_path=CONFIG_PATH, config_name="serve", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    run_task(serve, cfg)


def main() -> None:
    launch(hydra_main)


if __name__ == "__main__":
    main()
