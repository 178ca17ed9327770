"""Training: the `Classifier` LightningModule, its metrics and callbacks, checkpoints, and the run itself."""
