"""OmegaConf resolvers the configs use; registered when medlit is imported, before Hydra composes."""

from omegaconf import OmegaConf


def _coalesce(*values):
    """The first value that is not null: `${coalesce:${resume},logs/...}`."""
    return next((value for value in values if value is not None), None)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("coalesce", _coalesce, replace=True)
