"""The metrics every run reports, the same for binary and multi-class tasks (torchmetrics)."""

from __future__ import annotations

from torchmetrics import (
    AUROC,
    Accuracy,
    ConfusionMatrix,
    F1Score,
    MetricCollection,
    Precision,
    Recall,
    Specificity,
)


def task_args(num_classes: int) -> dict:
    """torchmetrics' task arguments: binary metrics take P(class 1), multi-class ones a probability row."""
    if num_classes == 2:
        return {"task": "binary"}
    return {"task": "multiclass", "num_classes": num_classes}


def classification_metrics(num_classes: int) -> MetricCollection:
    """Accuracy, precision, recall (sensitivity), specificity, F1 and AUROC.

    Multi-class precision, recall, specificity, F1 and AUROC are macro averages (every class counts the
    same, as MedMNIST reports them); accuracy is the plain fraction of correct predictions.
    """
    args = task_args(num_classes)
    macro = {"average": "macro"} if num_classes > 2 else {}
    return MetricCollection(
        {
            "acc": Accuracy(**args, **({"average": "micro"} if num_classes > 2 else {})),
            "precision": Precision(**args, **macro),
            "recall": Recall(**args, **macro),
            "specificity": Specificity(**args, **macro),
            "f1": F1Score(**args, **macro),
            "auroc": AUROC(**args, **macro),
        }
    )


def confusion_matrix(num_classes: int) -> ConfusionMatrix:
    return ConfusionMatrix(**task_args(num_classes))
