"""Validation splits carved from training data: stratified by class, grouped (e.g. by patient), seeded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from medlit.errors import ConfigError


def cross_validation_fold(
    labels: Sequence[int] | np.ndarray,
    num_folds: int,
    fold: int,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of fold `fold` of `num_folds` stratified folds.

    With `groups` (patient ids), every group falls in exactly one validation fold, so no patient is on
    both sides. `seed` fixes the folds; it is the data's split seed, not the run's, so repeated seeds
    train on the same folds.
    """
    if num_folds < 2:
        raise ConfigError(f"data.num_folds={num_folds}: cross-validation needs at least 2 folds")
    if not 0 <= fold < num_folds:
        raise ConfigError(f"data.fold={fold} is not one of 0..{num_folds - 1} (data.num_folds={num_folds})")
    labels = np.asarray(labels)
    if groups is None:
        splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        folds = splitter.split(np.zeros(len(labels)), labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        folds = splitter.split(np.zeros(len(labels)), labels, groups=np.asarray(groups))
    for index, (train, val) in enumerate(folds):
        if index == fold:
            return train, val
    raise AssertionError("unreachable: fold was checked against num_folds")
