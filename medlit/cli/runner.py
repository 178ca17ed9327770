"""What every command shares: mistakes become one line on stderr, and a multirun survives a failing job."""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.utilities import rank_zero_only

from medlit.errors import ConfigError, MedlitError

log = logging.getLogger("medlit")

T = TypeVar("T")

# Set by `launch` so Hydra raises errors to us instead of printing them (inherited by DDP workers).
_ONE_LINE = "MEDLIT_ONE_LINE_ERRORS"
# where every command finds its configs: the top-level conf/ folder, shipped inside the package as medlit.conf
CONFIG_PATH = "pkg://medlit.conf"


def user_error(err: BaseException | None) -> MedlitError | None:
    """The MedlitError behind `err`, also when Hydra's instantiate wrapped it in its own exception."""
    while err is not None:
        if isinstance(err, MedlitError):
            return err
        err = err.__cause__ or err.__context__
    return None


def describe(err: BaseException) -> tuple[str, int] | None:
    """A one-line message and exit code for a mistake in the configuration, the data or the files.

    None for anything else, which is a bug and keeps its traceback.
    """
    if problem := user_error(err):
        return str(problem), 2 if isinstance(problem, ConfigError) else 1
    if isinstance(err, MissingConfigException) and err.options is not None:
        group = (err.missing_cfg_file or "").rpartition("/")[0]
        return f"no config {err.missing_cfg_file!r}; choose {group}= one of {', '.join(err.options)}", 2
    if isinstance(err, ConfigCompositionException) and "Could not override" in str(err):
        return _unknown_key(err), 2
    if isinstance(err, (ConfigCompositionException, OverrideParseException, OmegaConfBaseException)):
        return _one_line(str(err)), 2
    if isinstance(err, InstantiationException):
        return f"cannot build an object from the configuration: {_one_line(str(err))}", 2
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror}", 1
    return None


def _unknown_key(err: ConfigCompositionException) -> str:
    cause = err.__cause__
    key, node = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    if not key or node is None:
        return _one_line(str(err))
    name = key.rpartition(".")[2]
    valid = [k for k in node if not str(k).startswith("_")]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {key.rpartition('.')[0] + '.' if '.' in key else ''}{close[0]}? " if close else ""
    return f"unknown key {key!r}; {hint}valid keys here: {', '.join(map(str, valid))} (add a new key with +{key}=...)"


def _one_line(text: str) -> str:
    text = text.split("\nConfig search path")[0]
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def launch(main: Callable[[], object]) -> None:
    """Call a `@hydra.main` function; report mistakes as one `medlit: error:` line and a non-zero exit.

    Exit code 2 means the configuration is wrong, 1 that data, files or training failed. Set
    HYDRA_FULL_ERROR=1 to see Hydra's own report with the traceback instead.
    """
    if os.environ.get("HYDRA_FULL_ERROR") and not os.environ.get(_ONE_LINE):
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = os.environ[_ONE_LINE] = "1"
    try:
        main()
    except Exception as err:
        explained = describe(err)
        if explained is None:
            raise
        fail(*explained)


def fail(message: str, code: int) -> NoReturn:
    print(f"medlit: error: {message}", file=sys.stderr)
    sys.exit(code)


def _drop_file_handlers() -> None:
    """DDP workers other than rank zero log to the console only: rank zero alone writes files."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


def _log_to_files(message: str) -> None:
    """Record an error in the run's log file without repeating it on the console."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_task(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run `task(cfg)` inside a Hydra job and say where its outputs went.

    In a multirun a failure is logged (with its traceback if it is a bug) and raised to the sweeper, which
    records the job as failed and goes on with the others: Hydra's basic sweeper runs every job and then
    exits non-zero, the Optuna sweeper marks the trial FAIL and continues the search. In a single run a
    mistake is written to the run's log and reported as one line; a bug keeps its traceback.
    """
    output_dir = cfg.get("paths", {}).get("output_dir")
    if rank_zero_only.rank != 0:
        _drop_file_handlers()
    try:
        return task(cfg)
    except Exception as err:
        explained = describe(err)
        if _multirun():
            log.error("Job failed: %s", explained[0] if explained else err, exc_info=explained is None)
            raise
        if explained is None:
            raise
        _log_to_files(explained[0])
        fail(*explained)
    finally:
        if output_dir and rank_zero_only.rank == 0:
            log.info("Outputs in %s", output_dir)
