"""Train a classifier, select it on validation and test it once.

python train.py                                   # PneumoniaMNIST, custom CNN
python train.py data=organcmnist model=baseline_cnn
python train.py -m optimizer.lr=1e-4,3e-4         # a sweep, one run directory per job
"""

import hydra
from omegaconf import DictConfig

from medlit.cli import launch, run_task
from medlit.training import train


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_task(train, cfg)


if __name__ == "__main__":
    launch(main)
