"""medlit: train, compare and explain chest X-ray and IMDb sentiment classifiers."""

from medlit.config import register_resolvers

__version__ = "0.1.0"

register_resolvers()
