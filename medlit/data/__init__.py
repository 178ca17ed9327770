"""Data: one LightningDataModule per data set, and what they share (decoding, caches, splits, samplers)."""
