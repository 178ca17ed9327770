"""OmegaConf resolvers the configs use; registered when medlit is imported, before Hydra composes."""

from omegaconf import OmegaConf


def _coalesce(*values):
    """The first value that is not null: `${coalesce:${resume},logs/...}`."""
    return next((value for value in values if value is not None), None)


def _checkpoint_run_dir(ckpt_path: str) -> str:
    """`${checkpoint_run_dir:${ckpt_path}}`: where `medlit.eval` and `medlit.explain` write their outputs."""
    from medlit.rebuild import checkpoint_run_dir  # the resolver is registered before torch is imported

    return checkpoint_run_dir(ckpt_path)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("coalesce", _coalesce, replace=True)
    OmegaConf.register_new_resolver("checkpoint_run_dir", _checkpoint_run_dir, replace=True)
