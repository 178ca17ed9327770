"""The chest X-ray folder data module: layouts, patient-grouped splits, the decode cache and bad files."""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from medlit.data import decode, image_cache
from medlit.data.chest_xray import ChestXrayDataModule
from medlit.data.splits import grouped_split, patient_id
from medlit.errors import DataError
from tests.synthetic import write_xray_folder


@pytest.fixture
def xray(tmp_path):
    """A private copy of the generated Kaggle-layout folder (tests here change files)."""
    return write_xray_folder(tmp_path / "chest_xray")


def make(data_dir, tmp_path, **kwargs) -> ChestXrayDataModule:
    kwargs = {"image_size": 32, "num_workers": 0, "batch_size": 8, "decode_workers": 1, **kwargs}
    kwargs.setdefault("cache_dir", str(tmp_path / "cache"))
    return ChestXrayDataModule(str(data_dir), **kwargs)


def loaded(data_dir, tmp_path, **kwargs) -> ChestXrayDataModule:
    dm = make(data_dir, tmp_path, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person1_virus_6.jpeg", "person1"),
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("IM-0001-0001.jpeg", "IM-0001"),
        ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
        ("scan.png", "scan"),
    ],
)
def test_patient_is_read_from_the_file_name(name, patient):
    assert patient_id(name) == patient


def test_grouped_split_keeps_patients_together_and_class_ratio():
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for patient in range(400):
        label = int(patient % 4 != 0)  # 1:3, like the chest X-rays
        n = int(rng.integers(1, 6))
        groups += [f"p{patient}"] * n
        labels += [label] * n
    keep, held = grouped_split(labels, groups, 0.1, seed=0)
    assert sorted(keep + held) == list(range(len(labels)))
    assert not {groups[i] for i in keep} & {groups[i] for i in held}
    for label in (0, 1):
        share = sum(labels[i] == label for i in held) / sum(lab == label for lab in labels)
        assert share == pytest.approx(0.1, abs=0.02)
    assert grouped_split(labels, groups, 0.1, seed=0) == (keep, held)
    assert grouped_split(labels, groups, 0.1, seed=1) != (keep, held)


def test_kaggle_layout_with_carved_validation(xray, tmp_path):
    dm = loaded(xray, tmp_path, val_fraction=0.2)
    assert dm.class_names == ["NORMAL", "PNEUMONIA"] and dm.num_classes == 2
    patients = {split: {patient_id(f) for f in files} for split, files in dm.split_files.items()}
    assert not patients["train"] & patients["val"]
    assert all(f.startswith("test/") for f in dm.split_files["test"])
    ratio = {split: Counter(f.split("/")[1] for f in dm.split_files[split]) for split in ("train", "val")}
    for split in ("train", "val"):
        assert ratio[split]["PNEUMONIA"] / ratio[split]["NORMAL"] == pytest.approx(2, rel=0.35)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 32, 32)
    assert set(labels.tolist()) <= {0, 1}


def test_five_folds_partition_the_training_patients(tmp_path):
    root = write_xray_folder(
        tmp_path / "xr", patients={"train": (12, 30), "val": (1, 1), "test": (2, 2)}, bad_files=False
    )
    folds = [loaded(root, tmp_path, num_folds=5, fold=fold).split_files for fold in range(5)]
    train_patients = {patient_id(f) for f in folds[0]["train"] + folds[0]["val"]}
    assert len(train_patients) == 42 and len(folds[0]["train"] + folds[0]["val"]) > 42  # several images each
    seen: Counter = Counter()
    for files in folds:
        assert sorted(files["train"] + files["val"]) == sorted(folds[0]["train"] + folds[0]["val"])
        val_patients = {patient_id(f) for f in files["val"]}
        assert not val_patients & {patient_id(f) for f in files["train"]}
        seen.update(val_patients)
    assert set(seen) == train_patients and set(seen.values()) == {1}


def test_official_validation_and_test_folders(xray, tmp_path):
    dm = loaded(xray, tmp_path, val_strategy="official")
    assert {f.split("/")[0] for f in dm.split_files["val"]} == {"val"}
    assert len(dm.val_set) == len(list((xray / "val").rglob("*.jpeg")))


def test_nested_archive_layout_and_rgb_channels(tmp_path):
    write_xray_folder(tmp_path / "download" / "chest_xray" / "chest_xray", bad_files=False)
    dm = loaded(tmp_path / "download", tmp_path, in_channels=3)
    image, _ = dm.test_set[0]
    assert image.shape == (3, 32, 32) and torch.equal(image[0], image[2])


def test_a_folder_of_class_folders_needs_carved_splits(tmp_path):
    write_xray_folder(tmp_path / "xr", patients={"train": (10, 20)}, bad_files=False)
    flat = tmp_path / "flat"
    shutil.move(tmp_path / "xr" / "train", flat)
    with pytest.raises(DataError, match=rf"no test split: {flat / 'test'} not found.*test_strategy=split"):
        loaded(flat, tmp_path)
    dm = loaded(flat, tmp_path, test_strategy="split")
    patients = {split: {patient_id(f) for f in files} for split, files in dm.split_files.items()}
    assert not patients["train"] & patients["test"] and not patients["val"] & patients["test"]
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == len(list(flat.rglob("*.jpeg")))


def test_decodes_once_then_reads_the_cache(xray, tmp_path, monkeypatch):
    first = loaded(xray, tmp_path, decode_workers=2)  # in parallel
    assert first.decoded == len([p for p in xray.rglob("*") if p.is_file()])

    def no_decoding(*args):
        raise AssertionError("a cached image was decoded again")

    monkeypatch.setattr(image_cache, "decode", no_decoding)
    second = loaded(xray, tmp_path, decode_workers=1)
    assert second.decoded == 0
    assert torch.equal(second.train_set.images, first.train_set.images)


def test_a_changed_file_is_decoded_again_and_the_stale_cache_removed(xray, tmp_path):
    loaded(xray, tmp_path)
    (old,) = (tmp_path / "cache").glob("*.pt")
    changed = next((xray / "test" / "NORMAL").iterdir())
    os.utime(changed, ns=(0, changed.stat().st_mtime_ns + 10**9))
    again = loaded(xray, tmp_path)
    assert again.decoded > 0
    (new,) = (tmp_path / "cache").glob("*.pt")
    assert new != old


def test_a_damaged_cache_is_decoded_again(xray, tmp_path, caplog):
    first = loaded(xray, tmp_path)
    (cache,) = (tmp_path / "cache").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        again = loaded(xray, tmp_path)
    assert f"The cache {cache} is unreadable" in caplog.text
    assert again.decoded == first.decoded
    assert torch.equal(again.train_set.images, first.train_set.images)


def test_unreadable_files_are_named_and_skipped(xray, tmp_path, caplog):
    (xray / "train" / "PNEUMONIA" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        dm = loaded(xray, tmp_path)
    assert "2 of" in caplog.text and "are not readable images" in caplog.text
    assert str(xray / "train" / "NORMAL" / "IM-0999-0001.jpeg") in caplog.text
    assert str(xray / "train" / "PNEUMONIA" / "notes.txt") in caplog.text
    files = dm.split_files["train"] + dm.split_files["val"]
    assert "train/PNEUMONIA/person999_virus_1.png" in files, "an RGBA PNG is converted, not skipped"
    assert not any("IM-0999" in f or "notes" in f for f in files)


def test_unreadable_files_fail_the_run_when_asked(xray, tmp_path):
    with pytest.raises(DataError, match=r"1 of \d+ files are not readable.*IM-0999-0001.jpeg.*on_bad_file=skip"):
        loaded(xray, tmp_path, on_bad_file="fail")


def test_odd_formats_are_converted_to_grey(tmp_path):
    deep = np.full((40, 30), 65535 // 2, np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    Image.new("CMYK", (30, 40), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpeg")
    Image.new("RGBA", (30, 40), (255, 255, 255, 128)).save(tmp_path / "rgba.png")
    assert decode.decode_image(str(tmp_path / "deep.png"), 16).tolist() == [[127] * 16] * 16
    assert decode.decode_image(str(tmp_path / "cmyk.jpeg"), 16).min() > 250  # no ink: white
    assert decode.decode_image(str(tmp_path / "rgba.png"), 16).min() == 255


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda root: shutil.rmtree(root), "data folder .* not found.*medlit download chest_xray"),
        (lambda root: [p.unlink() for p in (root / "val" / "NORMAL").iterdir()], r"val/NORMAL is empty"),
        (lambda root: shutil.rmtree(root / "test" / "PNEUMONIA"), r"class folder .*test/PNEUMONIA not found"),
    ],
)
def test_missing_or_empty_folders_are_named(xray, tmp_path, change, message):
    change(xray)
    with pytest.raises(DataError, match=message):
        loaded(xray, tmp_path, val_strategy="official")


def test_missing_official_validation_split_is_named(xray, tmp_path):
    shutil.rmtree(xray / "val")
    with pytest.raises(DataError, match=rf"no val split: {xray / 'val'} not found.*val_strategy=split"):
        make(xray, tmp_path, val_strategy="official").prepare_data()


def test_weighted_sampler_balances_the_classes(xray, tmp_path):
    dm = loaded(xray, tmp_path, sampler="weighted", batch_size=64)
    labels = []
    for epoch in range(20):  # each epoch draws anew from (seed, epoch)
        dm._current_epoch = lambda epoch=epoch: epoch
        labels += [y for _, y in dm.train_dataloader()]
    labels = torch.cat(labels)
    assert dm.class_counts[1] > 1.5 * dm.class_counts[0]
    assert labels.float().mean().item() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_strategy": "random"}, "data.val_strategy=random is not one of official, split"),
        ({"sampler": "balanced"}, "data.sampler=balanced is not one of None, weighted"),
        ({"on_bad_file": "ignore"}, "data.on_bad_file=ignore is not one of skip, fail"),
        ({"val_fraction": 1.5}, "data.val_fraction=1.5 must be between 0 and 1"),
        ({"num_classes": 3}, "data.num_classes=3, but .* has 2 class folders: NORMAL, PNEUMONIA"),
    ],
)
def test_bad_settings_are_explained(xray, tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        make(xray, tmp_path, **kwargs).setup("fit")
