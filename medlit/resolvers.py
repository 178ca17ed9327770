"""OmegaConf resolvers the configs use; registered when medlit is imported, before Hydra composes."""

import os
from pathlib import Path

from omegaconf import OmegaConf


def _coalesce(*values):
    """The first value that is not null: `${coalesce:${resume},logs/...}`."""
    return next((value for value in values if value is not None), None)


def _case(value, cases: dict):
    """`${case:${.labels},{folders:2,pathogen:3}}`: the entry of `value` in `cases`, null when it has none (the
    object the config builds then says which values are valid)."""
    return cases.get(value)


def checkpoint_run_dir(ckpt_path: str) -> str:
    """`${checkpoint_run_dir:${ckpt_path}}`: the run directory a checkpoint belongs to
    (`<run>/checkpoints/x.ckpt` -> `<run>`), where `medlit eval`, `explain`, `predict`, ... write their outputs.

    A missing file is reported here, before Hydra creates any directory for it.
    """
    from medlit.errors import MedlitError

    path = Path(ckpt_path)
    if not path.is_file():
        raise MedlitError(f"checkpoint {path} not found")
    folder = path.resolve().parent
    return str(folder.parent if folder.name == "checkpoints" else folder)


def _ensure_dir(path: str) -> str:
    """Create a folder a plugin expects to exist (e.g. the one holding an Optuna SQLite study)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def _if_rank_zero(value):
    """`value` in the first process of a multi-process launch (torchrun, srun), else null."""
    rank = next((os.environ[k] for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK") if k in os.environ), "0")
    return value if rank == "0" else None


def _fastest_precision(accelerator: str = "auto") -> str:
    """`${fastest_precision:${.accelerator}}`: bf16-mixed on CPUs with bf16 instructions, 16-mixed on GPUs."""
    from medlit.training.hardware import fastest_precision

    return fastest_precision(accelerator)


def _default_workers() -> int:
    """`${default_workers:}`: DataLoader workers for this machine's cores."""
    from medlit.training.hardware import default_workers

    return default_workers()


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("coalesce", _coalesce, replace=True)
    OmegaConf.register_new_resolver("case", _case, replace=True)
    OmegaConf.register_new_resolver("checkpoint_run_dir", checkpoint_run_dir, replace=True)
    OmegaConf.register_new_resolver("ensure_dir", _ensure_dir, replace=True)
    OmegaConf.register_new_resolver("if_rank_zero", _if_rank_zero, replace=True)
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True)
    OmegaConf.register_new_resolver("fastest_precision", _fastest_precision, replace=True)
    OmegaConf.register_new_resolver("default_workers", _default_workers, replace=True)
