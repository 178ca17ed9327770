"""Evaluation: predictions of a model on a split, reports with intervals, thresholds, figures, run comparisons."""
