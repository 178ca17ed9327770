"""How many outputs a classifier network has for a task."""


def num_logits(num_classes: int) -> int:
    """Binary tasks use one logit (BCE-with-logits); multi-class tasks one logit per class."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    return 1 if num_classes == 2 else num_classes
