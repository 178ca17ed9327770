"""Validation splits carved from training data: stratified by class, grouped by patient or film, seeded.

The seed is the data's split seed, not the run's, so repeated seeds train and validate on the same split.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from pathlib import PurePath

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from medlit.errors import ConfigError

# Kermany et al.'s file names: person1_virus_6 -> person1; IM-0001-0001 -> IM-0001;
# NORMAL2-IM-1427-0001 -> NORMAL2-IM-1427 (the last number counts the patient's images)
_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_IMAGE_NUMBER = re.compile(r"^(.+)-\d+$")
_SCHEME_NUMBER = re.compile(r"^(.*?)(\d+)$")


def patient_id(filename: str) -> str:
    """The patient a chest X-ray belongs to, read from its file name (the name itself when unknown)."""
    stem = PurePath(filename).stem
    match = _PERSON.match(stem) or _IMAGE_NUMBER.match(stem)
    return match.group(1) if match else stem


def grouped_split(
    labels: Sequence[int], groups: Sequence[Hashable], fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Indices (kept, held out): about `fraction` of each class held out, whole groups at a time.

    A group (patient) goes with the class most of its images have; per class, groups are drawn in a
    seeded random order until the held-out share is reached, so the split is the same on every run and
    independent of the training seed.
    """
    rng = random.Random(seed)

    def shuffled(names: list[Hashable]) -> list[Hashable]:
        names = sorted(names)
        rng.shuffle(names)
        return names

    return _hold_out_groups(labels, groups, fraction, stratum=lambda majority, group: majority, order=shuffled)


def _hold_out_groups(labels, groups, fraction, stratum, order) -> tuple[list[int], list[int]]:
    """Indices (kept, held out): per stratum (`stratum(majority class, group)`), whole groups in `order`'s order
    held out until about `fraction` of the stratum's examples are."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    strata: dict[Hashable, list[Hashable]] = defaultdict(list)
    for group, indices in members.items():
        majority = Counter(labels[i] for i in indices).most_common(1)[0][0]
        strata[stratum(majority, group)].append(group)
    held: list[int] = []
    for key in sorted(strata):
        names = order(strata[key])
        target = max(1, round(fraction * sum(len(members[g]) for g in names)))
        taken = 0
        for group in names:
            if taken >= target:
                break
            held += members[group]
            taken += len(members[group])
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def patient_number(patient: str) -> tuple[str, int]:
    """(naming scheme, number) of a patient id: person1 -> ("person", 1), NORMAL2-IM-1427 -> ("NORMAL2-IM-", 1427);
    ids without a number sort after every numbered one of their scheme."""
    match = _SCHEME_NUMBER.match(patient)
    return (match.group(1), int(match.group(2))) if match else (patient, 1 << 62)


def earliest_split(labels: Sequence[int], groups: Sequence[str], fraction: float) -> tuple[list[int], list[int]]:
    """Indices (kept, held out): about `fraction` of each class held out, the patients with the lowest numbers.

    Within each class and naming scheme (Kermany's `IM-`, `NORMAL2-IM-`, `person`), patients are taken in
    order of their number until the scheme's share is held out, so the held-out patients are the earliest
    numbered of every scheme: a validation cohort apart from the training one in the order the data set
    numbers its patients, as a test cohort of earlier (or later) patients would be.
    """
    return _hold_out_groups(
        labels,
        groups,
        fraction,
        stratum=lambda majority, group: (majority, patient_number(group)[0]),
        order=lambda names: sorted(names, key=patient_number),
    )


def mixed_grouped_split(
    labels: Sequence[int], groups: Sequence[Hashable], fraction: float, seed: int = 0, passes: int = 10
) -> tuple[list[int], list[int]]:
    """Indices (kept, held out): whole groups held out until about `fraction` of each class is, where a group
    may hold examples of several classes (a film's positive and negative reviews).

    The distance from the target is the sum over classes of |held out - `fraction` x all|. Groups are visited
    in a seeded random order, and each is held out if that shortens the distance; then, for up to `passes`
    more rounds in the same order, a group moves to the other side whenever that shortens it. Both sides
    keep the class ratio of `labels` to within a few examples when groups are many and small.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    classes = sorted(set(labels))
    totals = Counter(labels)
    target = np.array([fraction * totals[c] for c in classes])
    names = sorted(members, key=str)
    random.Random(seed).shuffle(names)
    counts = {g: np.array([sum(labels[i] == c for i in members[g]) for c in classes]) for g in names}

    def distance(held: np.ndarray) -> float:
        return float(np.abs(held - target).sum())

    held_out: set[Hashable] = set()
    held = np.zeros(len(classes))
    for group in names:
        if distance(held + counts[group]) < distance(held):
            held_out.add(group)
            held = held + counts[group]
    for _ in range(passes):
        moved = False
        for group in names:
            after = held - counts[group] if group in held_out else held + counts[group]
            if distance(after) < distance(held):
                held_out ^= {group}
                held, moved = after, True
        if not moved:
            break
    held_indices = sorted(i for group in held_out for i in members[group])
    chosen = set(held_indices)
    return [i for i in range(len(labels)) if i not in chosen], held_indices


def stratified_split(labels: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (kept, held out): about `fraction` of each class held out, every example its own group."""
    return grouped_split(labels, range(len(labels)), fraction, seed)


def cross_validation_fold(
    labels: Sequence[int] | np.ndarray,
    num_folds: int,
    fold: int,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of fold `fold` of `num_folds` stratified folds.

    With `groups` (patient ids), every group falls in exactly one validation fold, so no patient is on
    both sides. `seed` fixes the folds.
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
