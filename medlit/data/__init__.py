"""LightningDataModules, one per data set, and what they share."""
