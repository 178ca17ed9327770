"""IMDb validation grouped by film: the archive's urls files, the class ratio, folds, the fallback and bad files."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
import torch

from medlit.data.imdb import IMDBDataModule
from medlit.errors import DataError
from tests.synthetic import write_aclimdb


def make(data_dir: Path, **kwargs) -> IMDBDataModule:
    return IMDBDataModule(data_dir=str(data_dir), url="http://127.0.0.1:9/never-contacted.tar.gz", **kwargs)


def film_of(review: Path) -> str:
    """The film of a review, read the way the archive's README says: line <id> of urls_<class>.txt."""
    return _lines(review.parent.parent / f"urls_{review.parent.name}.txt")[int(review.name.split("_")[0])]


@functools.cache
def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def film_dir(tmp_path_factory) -> Path:
    """400 training reviews per class in 80 films of uneven size, most holding both classes."""
    return write_aclimdb(tmp_path_factory.mktemp("films"), per_class={"train": 400, "test": 20}, films=80)


def test_no_film_is_on_both_sides_and_the_class_ratio_is_kept(film_dir, caplog):
    caplog.set_level(logging.INFO, logger="medlit.data.imdb")
    dm = make(film_dir, val_fraction=0.2, cache_dir=str(film_dir / "cache-split"))
    dm.setup()
    train_films = {film_of(path) for path in dm.files["train"]}
    val_films = {film_of(path) for path in dm.files["val"]}
    assert not train_films & val_films, "a film on both sides"
    assert len(val_films) >= 10 and len(dm.val_set) + len(dm.train_set) == 800
    assert 0.18 <= len(dm.val_set) / 800 <= 0.22
    classes: dict[str, set[str]] = {}
    for path in dm.files["train"] + dm.files["val"]:
        classes.setdefault(film_of(path), set()).add(path.parent.name)
    mixed = [film for film, found in classes.items() if len(found) == 2]
    assert len(mixed) > 40, "the generated films hold both classes, so grouping has a ratio to keep"
    for split in ("train_set", "val_set"):
        positive = getattr(dm, split).labels.float().mean().item()
        assert abs(positive - 0.5) <= 0.01, f"{split}: {positive:.3f} positive against 0.5 in all"
    assert "Validation grouped by film: 80 films in 800 training reviews" in caplog.text
    other = make(film_dir, split_seed=1, cache_dir=str(film_dir / "cache-split"))
    other.setup()
    assert {film_of(path) for path in other.files["val"]} != val_films, "the films held out follow split_seed"


def test_folds_keep_each_film_in_one_validation_fold(film_dir):
    seen: dict[str, int] = {}
    for fold in range(4):
        dm = make(film_dir, num_folds=4, fold=fold, cache_dir=str(film_dir / "cache-folds"))
        dm.setup()
        val_films = {film_of(path) for path in dm.files["val"]}
        assert not val_films & {film_of(path) for path in dm.files["train"]}
        assert abs(dm.val_set.labels.float().mean().item() - 0.5) < 0.05
        for film in val_films:
            assert film not in seen, f"{film} validated in folds {seen[film]} and {fold}"
            seen[film] = fold
    assert len(seen) == 80


def test_without_urls_files_the_split_is_by_review_and_says_so(tmp_path, caplog):
    write_aclimdb(tmp_path, per_class={"train": 40, "test": 4})
    dm = make(tmp_path, val_fraction=0.25)
    dm.setup()
    assert torch.bincount(dm.val_set.labels).tolist() == [10, 10]
    assert f"No {tmp_path / 'aclImdb' / 'train' / 'urls_neg.txt'}" in caplog.text
    assert "a film's reviews may be on both sides" in caplog.text
    caplog.clear()
    make(tmp_path, val_fraction=0.25, group_by_film=False).setup()
    assert "urls_neg.txt" not in caplog.text


def test_grouping_is_part_of_the_cache_key(film_dir):
    grouped = make(film_dir, cache_dir=str(film_dir / "cache-key"))
    grouped.setup()
    by_review = make(film_dir, cache_dir=str(film_dir / "cache-key"), group_by_film=False)
    by_review.setup()
    assert by_review.tokenised and by_review.cache_path != grouped.cache_path
    films = [{film_of(path) for path in dm.files["val"]} & {film_of(path) for path in dm.files["train"]}
             for dm in (grouped, by_review)]  # fmt: skip
    assert not films[0] and films[1], "at random, films fall on both sides"


def test_a_missing_urls_line_or_file_is_named(tmp_path):
    write_aclimdb(tmp_path, per_class={"train": 12, "test": 2}, films=4)
    urls = tmp_path / "aclImdb" / "train" / "urls_pos.txt"
    lines = urls.read_text().splitlines()
    urls.write_text("\n".join(lines[:11]) + "\n")
    with pytest.raises(DataError, match=f"{urls} has no film URL on line 11 for .*/pos/11_\\d+.txt"):
        make(tmp_path).setup()
    urls.unlink()
    with pytest.raises(DataError, match=f"{urls} not found, but .*urls_neg.txt is"):
        make(tmp_path).setup()


def test_a_review_whose_name_has_no_id_is_named(tmp_path):
    write_aclimdb(tmp_path, per_class={"train": 12, "test": 2}, films=4)
    odd = tmp_path / "aclImdb" / "train" / "neg" / "review.txt"
    odd.write_text("awful")
    with pytest.raises(DataError, match=f"{odd}: its film is unknown"):
        make(tmp_path).setup()
