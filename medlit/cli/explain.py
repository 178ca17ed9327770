"""`medlit explain`: explain a trained checkpoint's decisions on chosen examples of its test split.

medlit explain ckpt_path=logs/train/runs/<run>/checkpoints/epoch_007.ckpt
medlit explain ckpt_path=... methods=[gradcam,lime,activations] examples=4 layer=net.features.3.2

Outputs go to `<run dir>/explain/` and its TensorBoard log (see `medlit.interpret.explain`).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from medlit.cli.runner import CONFIG_PATH, launch, run_task
from medlit.errors import ConfigError, require_extra


def explain(cfg: DictConfig) -> None:
    """Explain the configured examples of the checkpoint's run; outputs in the configured directory."""
    require_extra("explain", "captum", "skimage")
    from medlit.deploy.rebuild import rebuild
    from medlit.interpret.explain import explain_examples, write_explanations
    from medlit.training.classifier import Classifier
    from medlit.training.hardware import resolve_device
    from medlit.training.run import instantiate_all

    run = rebuild(cfg)
    if not isinstance(run.model, Classifier):
        raise ConfigError(f"{cfg.ckpt_path} is an ensemble: explain one of its members' checkpoints")
    run.model.to(resolve_device(cfg.device))
    result = explain_examples(
        run.model,
        run.datamodule,
        split=cfg.split,
        methods=list(cfg.methods) if cfg.methods is not None else None,
        examples=cfg.examples,
        indices=list(cfg.indices) if cfg.indices is not None else None,
        layer=cfg.layer,
        activation_channels=cfg.activation_channels,
        lime_segments=cfg.lime.segments,
        lime_samples=cfg.lime.samples,
        ig_steps=cfg.integrated_gradients.steps,
        seed=cfg.seed,
    )
    loggers = instantiate_all(cfg.get("logger"))
    write_explanations(result, Path(cfg.paths.output_dir), loggers, int(run.checkpoint.get("global_step", 0)))


@hydra.main(config_path=CONFIG_PATH, config_name="explain", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    run_task(explain, cfg)


def main() -> None:
    launch(hydra_main)


if __name__ == "__main__":
    main()
