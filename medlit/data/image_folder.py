"""A data set laid out as folders: `<root>/{train,val,test}/<class>/<image files>`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medlit.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class FolderSplit:
    """The files of one split, relative to the data set's root, with their class indices."""

    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


def _visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders, minus hidden ones and archive debris such as `__MACOSX`."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def find_root(data_dir: Path, nested: str) -> Path:
    """The folder that holds `train/`: `data_dir` itself, `data_dir/<nested>` or `data_dir/<nested>/<nested>`.

    Archives often wrap the data set in one or two folders of its name (Kaggle's chest X-ray archive
    does both). A folder without `train/` whose sub-folders are classes is returned as it is: it is
    read as a training split alone.
    """
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} not found; set data.data_dir to the folder that holds train/")
    for candidate in (data_dir, data_dir / nested, data_dir / nested / nested):
        if (candidate / "train").is_dir():
            return candidate
    if len(_visible_dirs(data_dir)) >= 2:
        return data_dir
    raise DataError(
        f"{data_dir} has no train/ folder (also looked in {nested}/ and {nested}/{nested}/) and no class "
        f"sub-folders; expected <data_dir>/train/<class>/<images>"
    )


def split_folder(root: Path, split: str) -> Path | None:
    """`root/<split>`, or None when absent; a root without `train/` is itself the training split."""
    if split == "train" and not (root / "train").is_dir():
        return root
    folder = root / split
    return folder if folder.is_dir() else None


def class_folders(folder: Path) -> list[str]:
    """The visible sub-folders of a split folder, in sorted order."""
    return [p.name for p in _visible_dirs(folder)]


def class_names(train_folder: Path) -> list[str]:
    """The classes are the training split's sub-folders, in sorted order (their label indices)."""
    names = class_folders(train_folder)
    if len(names) < 2:
        raise DataError(f"{train_folder} needs a sub-folder per class (at least 2), found {names or 'none'}")
    return names


def list_split(root: Path, folder: Path, classes: list[str]) -> FolderSplit:
    """Every visible file in each class folder of `folder`; a missing or empty class folder is an error.

    Non-image files are listed too: decoding reports them by name rather than skipping them silently.
    """
    split = FolderSplit()
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise DataError(f"class folder {class_dir} not found (the classes are the folders of train/)")
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"class folder {class_dir} is empty")
        split.files += [str(p.relative_to(root)) for p in files]
        split.labels += [label] * len(files)
    return split
