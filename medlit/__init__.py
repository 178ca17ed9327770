"""medlit: train, compare and explain chest X-ray and IMDb sentiment classifiers."""

__version__ = "0.1.0"
