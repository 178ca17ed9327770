"""`data.labels=pathogen`: the chest X-rays as normal, bacterial or viral pneumonia, on the two-class task's splits."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate

from medlit.cli.runner import describe
from medlit.data.chest_xray import ChestXrayDataModule
from medlit.errors import DataError
from tests.conftest import compose_config
from tests.synthetic import write_xray_folder


def loaded(data_dir, tmp_path, **kwargs) -> ChestXrayDataModule:
    kwargs = {"image_size": 16, "num_workers": 0, "batch_size": 8, "decode_workers": 1, **kwargs}
    dm = ChestXrayDataModule(str(data_dir), cache_dir=str(tmp_path / "cache"), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def expected_class(file: str) -> str:
    """The class a Kermany file name says, read independently of the data module."""
    name = Path(file).name
    if file.split("/")[1] == "NORMAL":
        return "NORMAL"
    return "BACTERIAL" if "_bacteria_" in name else "VIRAL" if "_virus_" in name else "?"


def test_three_classes_from_the_file_names_on_the_two_class_splits(xray_dir, tmp_path):
    binary = loaded(xray_dir, tmp_path, test_strategy="split")
    dm = loaded(xray_dir, tmp_path, labels="pathogen", test_strategy="split")
    assert dm.class_names == ["NORMAL", "BACTERIAL", "VIRAL"] and dm.num_classes == 3
    assert dm.split_files == binary.split_files, "the same patients in each split as the two-class task"
    for split in ("train", "val", "test"):
        dataset, files = getattr(dm, f"{split}_set"), dm.split_files[split]
        assert [dm.class_names[y] for y in dataset.labels.tolist()] == [expected_class(f) for f in files]
    # the generated folder alternates bacterial and viral patients: all three classes in every split
    assert all(len(set(getattr(dm, f"{s}_set").labels.tolist())) == 3 for s in ("train", "val", "test"))
    assert dm.binary_view.positive == "PNEUMONIA" and dm.binary_view.members == (1, 2)
    assert binary.binary_view is None


def test_the_config_makes_it_a_three_class_task(tmp_path):
    cfg = compose_config(["data=chest_xray", "data.labels=pathogen", "model=custom_cnn"], tmp_path)
    assert cfg.data.num_classes == 3 and cfg.model.num_classes == 3
    assert compose_config(["data=chest_xray"], tmp_path).model.num_classes == 2
    with pytest.raises(Exception) as caught:  # Hydra wraps it; the user sees the one line below
        instantiate(compose_config(["data=chest_xray", "data.labels=species"], tmp_path).data)
    assert describe(caught.value) == ("data.labels=species is not one of folders, pathogen", 1)


def test_a_pneumonia_image_that_does_not_name_its_pathogen_is_named(tmp_path):
    root = write_xray_folder(tmp_path / "xr", bad_files=False)
    first = sorted((root / "train" / "PNEUMONIA").iterdir())[0]
    unnamed = first.with_name("scan-0042.jpeg")
    shutil.move(first, unnamed)
    with pytest.raises(DataError, match=rf"1 pneumonia images do not name their pathogen .*{re.escape(str(unnamed))}"):
        loaded(root, tmp_path, labels="pathogen")


def test_other_class_folders_are_refused(tmp_path):
    root = write_xray_folder(tmp_path / "xr", bad_files=False)
    for split in ("train", "val", "test"):
        shutil.move(root / split / "PNEUMONIA", root / split / "COVID")
    with pytest.raises(DataError, match=r"needs the class folders NORMAL and PNEUMONIA .* has COVID, NORMAL"):
        loaded(root, tmp_path, labels="pathogen")
