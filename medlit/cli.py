"""Entry-point glue: user mistakes become one-line errors, and a multirun survives a failing job."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from medlit.errors import MedlitError

log = logging.getLogger("medlit")

T = TypeVar("T")


def user_error(err: BaseException) -> MedlitError | None:
    """The MedlitError behind `err`, also when Hydra's instantiate wrapped it in its own exception."""
    while err is not None:
        if isinstance(err, MedlitError):
            return err
        err = err.__cause__ or err.__context__
    return None


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_task(task: Callable[[DictConfig], T], cfg: DictConfig) -> T | float:
    """Run `task(cfg)`; report a MedlitError as one line and exit 1 (or, in a multirun, return NaN).

    In a multirun any failure is logged with its traceback and the job returns NaN, so one failing
    configuration does not end a sweep; sweepers treat NaN as a failed trial.
    """
    output_dir = cfg.get("paths", {}).get("output_dir")
    try:
        return task(cfg)
    except Exception as err:
        problem = user_error(err)
        if _multirun():
            log.error("Job failed: %s", problem or err, exc_info=problem is None)
            return float("nan")
        if problem is None:
            raise
        log.error("%s", problem)
        sys.exit(1)
    finally:
        if output_dir and rank_zero_only.rank == 0:
            log.info("Outputs in %s", output_dir)
