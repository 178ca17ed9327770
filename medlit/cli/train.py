"""`medlit train`: train a classifier, select it on validation and test it once.

medlit train                                      # PneumoniaMNIST, custom CNN
medlit train data=organcmnist model=baseline_cnn
medlit train -m optimizer.lr=1e-4,3e-4            # a sweep, one run directory per job
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from medlit.cli.runner import CONFIG_PATH, launch, run_task
from medlit.training.run import train


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    return run_task(train, cfg)


def main() -> None:
    launch(hydra_main)


if __name__ == "__main__":
    main()
