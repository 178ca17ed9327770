"""Images listed in a table (CSV or Parquet): a hospital's own data, one row per image.

Each row names an image file (JPEG, PNG, DICOM, ...; relative to the table's folder or `image_root`, or
absolute) and its label, and optionally its patient and its split. The images are decoded, cached, augmented
and sampled as the chest X-ray folders are (`medlit.data.image_files`); the table's other columns travel into
the predictions tables of the reports.
"""

from __future__ import annotations

import difflib
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from medlit.data.image_files import CARVED, ImageFileDataModule, ImageSplit, Listing, check_choice
from medlit.data.tables import Table, read_table
from medlit.errors import DataError

log = logging.getLogger(__name__)

GIVEN = "given"
STRATEGIES = (GIVEN, CARVED)
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
# the predictions table's own columns, which a kept column of the table may not shadow
RESERVED = ("index", "target", "predicted")


class ImageTableDataModule(ImageFileDataModule):
    """The images a table lists, with their labels, patients and splits.

    Labels are class names or integers. `classes` lists the class names in index order (for a binary task the
    second is the positive class); a label is a class name or, failing that, a class index. Without it, the
    classes are the table's labels in sorted order (numerically when every label is an integer).

    Splits: with `split_column`, each row says train, val (or validation) or test; `val_strategy` and
    `test_strategy` take those rows (`given`) or carve the split out of the training rows (`split`, grouped by
    `patient_column` and stratified by class). A patient whose images are in two given splits is an error
    naming the patient. Without a patient column every image counts as its own patient.

    Rows whose file is missing or unreadable are reported and left out (`on_bad_file="skip"`) or stop the run
    (`"fail"`). `keep_columns` (default: every column but the label and the split) are copied into the
    predictions tables, beside the image's path. The table is read once, its size checked against
    `max_rows` first (see `medlit.data.tables`).
    """

    def __init__(
        self,
        table: str,
        path_column: str = "path",
        label_column: str = "label",
        patient_column: str | None = None,
        split_column: str | None = None,
        classes: Sequence[str] | None = None,
        image_root: str | None = None,
        keep_columns: Sequence[str] | None = None,
        max_rows: int = 1_000_000,
        val_strategy: str = CARVED,
        test_strategy: str = GIVEN,
        **settings,
    ) -> None:
        """`settings`: those of `ImageFileDataModule` (image size, fractions, sampler, cache, ...) and the loaders'."""
        check_choice("data.val_strategy", val_strategy, STRATEGIES)
        check_choice("data.test_strategy", test_strategy, STRATEGIES)
        if max_rows < 1:
            raise DataError(f"data.max_rows={max_rows} must be at least 1")
        super().__init__(val_strategy=val_strategy, test_strategy=test_strategy, **settings)
        self.table = Path(table)
        self.path_column, self.label_column = path_column, label_column
        self.patient_column, self.split_column = patient_column, split_column
        self.classes = [str(name) for name in classes] if classes is not None else None
        self.image_root = Path(image_root) if image_root else None
        self.keep_columns = list(keep_columns) if keep_columns is not None else None
        self.max_rows = max_rows
        self._table: Table | None = None
        self._row_of: dict[str, int] = {}

    def _title(self) -> str:
        return f"Images of {self.table.name}"

    def _cache_source(self) -> Path:
        return self.table

    def _list(self) -> Listing:
        table = self._table = read_table(self.table, self.max_rows)
        self._check_columns(table)
        paths = table.columns[self.path_column]
        self._row_of = _row_of_each_path(table, paths)
        names, labels = class_indices(table, self.label_column, self.classes, paths)
        patients = table.columns[self.patient_column] if self.patient_column else paths
        for i, patient in enumerate(patients):
            if not patient:
                raise DataError(f"{table.where(i)} ({paths[i]}) has no patient (column {self.patient_column!r})")
        splits = self._split_of_rows(table)
        if self.patient_column and self.split_column:
            check_patients_in_one_split(table, patients, splits, self.patient_column)
        rows: dict[str, list[int]] = defaultdict(list)
        for i, split in enumerate(splits):
            rows[split].append(i)
        listed = {}
        for split, indices in rows.items():
            if split != "train" and getattr(self, f"{split}_strategy") == CARVED:
                log.warning(
                    "%d rows of %s are marked %s and left unused: data.%s_strategy=split carves that split out of "
                    "the training rows",
                    len(indices),
                    table.path,
                    split,
                    split,
                )
                continue
            listed[split] = ImageSplit(
                [paths[i] for i in indices], [labels[i] for i in indices], [patients[i] for i in indices]
            )
        self._check_given_splits(listed)
        return Listing(self.image_root or self.table.parent, names, listed)

    def example_columns(self, split: str) -> list[dict[str, str]]:
        """Each example's path and the table's kept columns, in the split's order."""
        columns = self._table.columns
        kept = [self.path_column, *(name for name in self._kept_columns() if name != self.path_column)]
        return [{name: columns[name][self._row_of[path]] for name in kept} for path in self.split_files[split]]

    def _kept_columns(self) -> list[str]:
        if self.keep_columns is not None:
            return self.keep_columns
        return [name for name in self._table.columns if name not in (self.label_column, self.split_column)]

    def _check_columns(self, table: Table) -> None:
        """Every named column is in the table; none that goes into the predictions table shadows one of its own."""
        named = {
            "path_column": self.path_column,
            "label_column": self.label_column,
            "patient_column": self.patient_column,
            "split_column": self.split_column,
        }
        named.update({f"keep_columns[{i}]": name for i, name in enumerate(self.keep_columns or [])})
        for key, name in named.items():
            if name is not None and name not in table.columns:
                close = difflib.get_close_matches(name, list(table.columns), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise DataError(
                    f"table {table.path} has no column {name!r} (data.{key}); {hint}its columns: "
                    f"{', '.join(table.columns)}"
                )
        for name in [self.path_column, *self._kept_columns()]:
            if name in RESERVED or name.startswith("p_"):
                raise DataError(
                    f"column {name!r} of {table.path} would shadow a column of the predictions tables (index, "
                    f"target, predicted, p_<class>); rename it, or list the columns to keep in data.keep_columns"
                )

    def _split_of_rows(self, table: Table) -> list[str]:
        """Each row's split: train, val or test from the split column, else train for every row."""
        if self.split_column is None:
            return ["train"] * len(table)
        splits = []
        for i, value in enumerate(table.columns[self.split_column]):
            split = SPLIT_NAMES.get(value.lower())
            if split is None:
                raise DataError(
                    f"{table.where(i)}: split {value!r} is not one of train, val, test (column {self.split_column!r})"
                )
            splits.append(split)
        return splits

    def _check_given_splits(self, listed: dict[str, ImageSplit]) -> None:
        if "train" not in listed:
            raise DataError(f"no row of {self.table} is in the train split (column {self.split_column!r})")
        for split in ("val", "test"):
            if getattr(self, f"{split}_strategy") == GIVEN and split not in listed:
                where = (
                    f"{self.table} has no split column (data.split_column)"
                    if self.split_column is None
                    else f"no row of {self.table} is marked {split} in its column {self.split_column!r}"
                )
                raise DataError(
                    f"no {split} split: {where}. Set data.{split}_strategy=split to carve one out of the training "
                    f"rows (grouped by patient)"
                )
        carving = any(getattr(self, f"{s}_strategy") == CARVED for s in ("val", "test")) or self.num_folds
        if carving and self.patient_column is None:
            log.warning(
                "%s has no patient column (data.patient_column): the carved splits are drawn image by image, so "
                "a patient with several images may be on both sides",
                self.table,
            )


def _row_of_each_path(table: Table, paths: list[str]) -> dict[str, int]:
    row_of: dict[str, int] = {}
    for i, path in enumerate(paths):
        if not path:
            raise DataError(f"{table.where(i)} has no image path")
        if path in row_of:
            raise DataError(
                f"{table.where(row_of[path])} and {table.unit} {table.locations[i]} name the same image {path}"
            )
        row_of[path] = i
    return row_of


def class_indices(
    table: Table, column: str, classes: list[str] | None, paths: list[str]
) -> tuple[list[str], list[int]]:
    """The class names and each row's class index.

    With `classes`, a label is a class name or else an integer index into them; an unknown label is an error
    naming its row. Without, the classes are the labels in sorted order, numerically when all are integers.
    """
    labels = table.columns[column]
    for i, label in enumerate(labels):
        if not label:
            raise DataError(f"{table.where(i)} has no label (column {column!r})")
    if classes is None:
        found = set(labels)
        classes = sorted(found, key=int) if all(_is_integer(x) for x in found) else sorted(found)
        if len(classes) < 2:
            raise DataError(f"table {table.path} has one label, {classes[0]!r}: a classifier needs at least 2 classes")
    if len(set(classes)) != len(classes):
        raise DataError(f"data.classes names a class twice: {', '.join(classes)}")
    index = {name: i for i, name in enumerate(classes)}
    indices = []
    for i, label in enumerate(labels):
        if label in index:
            indices.append(index[label])
        elif _is_integer(label) and 0 <= int(label) < len(classes):
            indices.append(int(label))
        else:
            raise DataError(
                f"{table.where(i)} ({paths[i]}): label {label!r} is not one of the classes {', '.join(classes)} "
                f"(data.classes), nor an index of one"
            )
    return list(classes), indices


def _is_integer(text: str) -> bool:
    return text.lstrip("-").isdigit()


def check_patients_in_one_split(table: Table, patients: list[str], splits: list[str], column: str) -> None:
    """Refuse given splits that put a patient's images on two sides, naming the patient and the rows."""
    sides: dict[str, dict[str, int]] = defaultdict(dict)
    for i, (patient, split) in enumerate(zip(patients, splits, strict=True)):
        sides[patient].setdefault(split, i)
    mixed = [patient for patient, seen in sides.items() if len(seen) > 1]
    if not mixed:
        return
    patient = mixed[0]
    where = "; ".join(f"{split} at {table.unit} {table.locations[i]}" for split, i in sides[patient].items())
    more = f" ({len(mixed) - 1} more patients too)" if len(mixed) > 1 else ""
    raise DataError(
        f"patient {patient!r} (column {column!r}) has images in more than one split of {table.path}: {where}{more}. "
        "Every image of a patient must be in one split"
    )
