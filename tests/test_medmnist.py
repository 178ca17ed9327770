"""The MedMNIST data module: official splits from the npz file, checksums, downloads and clear errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from medlit.data.fetch import md5sum
from medlit.data.medmnist import MedMNISTDataModule
from medlit.errors import DataError
from tests.synthetic import write_medmnist_npz


def make(data_dir, **kwargs) -> MedMNISTDataModule:
    return MedMNISTDataModule(flag=kwargs.pop("flag", "pneumoniamnist"), data_dir=str(data_dir), **kwargs)


def test_loads_official_splits_as_uint8_tensors(medmnist_dir):
    dm = make(medmnist_dir, batch_size=16)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (96, 48, 48)
    assert dm.class_names == ["normal", "pneumonia"]
    assert dm.class_counts.tolist() == [48, 48]
    images, labels = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (16, 1, 28, 28)
    assert labels.dtype == torch.long and set(labels.tolist()) <= {0, 1}


def test_organcmnist_has_eleven_classes(medmnist_dir):
    dm = make(medmnist_dir, flag="organcmnist", num_classes=11)
    dm.setup("fit")
    assert dm.num_classes == 11 and dm.class_names[1] == "femur-left"
    assert dm.class_counts.sum() == 132


def test_three_channels_repeat_the_grey_image(medmnist_dir):
    dm = make(medmnist_dir, in_channels=3)
    dm.setup("fit")
    image, _ = dm.test_set[0]
    assert image.shape == (3, 28, 28)
    assert torch.equal(image[0], image[2])


def test_rgb_file_is_converted_to_grey(tmp_path):
    write_medmnist_npz(tmp_path / "pneumoniamnist.npz", num_classes=2, rgb=True)
    dm = make(tmp_path, in_channels=1)
    dm.setup("fit")
    assert dm.train_set.images.shape[1:] == (1, 28, 28)


def test_training_augmentation_applies_to_train_split_only(medmnist_dir):
    flip = lambda image: image.flip(-1)  # noqa: E731
    dm = make(medmnist_dir, train_transform=flip)
    dm.setup("fit")
    assert torch.equal(dm.train_set[0][0], dm.train_set.images[0].flip(-1))
    assert torch.equal(dm.val_set[0][0], dm.val_set.images[0])


def test_present_file_with_other_md5_is_used_with_a_warning(medmnist_dir, caplog):
    dm = make(medmnist_dir, url="http://127.0.0.1:9/never-contacted.npz")
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
    assert "not the official 28209eda62fecd6e6a2d98b1501bb15f" in caplog.text
    assert str(medmnist_dir / "pneumoniamnist.npz") in caplog.text


def test_download_from_a_mirror_with_checksum(tmp_path, http_server):
    served, base_url = http_server
    source = write_medmnist_npz(served / "pneumoniamnist_64.npz", num_classes=2, size=64)
    target = tmp_path / "data"
    dm = make(
        target,
        size=64,
        url=f"{base_url}/missing.npz",
        mirrors=[f"{base_url}/pneumoniamnist_64.npz"],
        md5=md5sum(source),
    )
    dm.prepare_data()
    assert md5sum(target / "pneumoniamnist_64.npz") == md5sum(source)
    dm.setup("fit")
    assert dm.train_set.images.shape[1:] == (1, 64, 64)


def test_download_with_wrong_checksum_is_rejected_and_leaves_nothing(tmp_path, http_server):
    served, base_url = http_server
    write_medmnist_npz(served / "pneumoniamnist.npz", num_classes=2)
    dm = make(tmp_path / "data", url=f"{base_url}/pneumoniamnist.npz")  # official MD5 expected
    with pytest.raises(DataError, match="does not match the expected 28209eda62fecd6e6a2d98b1501bb15f"):
        dm.prepare_data()
    assert not any((tmp_path / "data").iterdir())


def test_missing_file_without_network_names_file_url_and_override(tmp_path):
    dm = make(tmp_path, url="http://127.0.0.1:9/pneumoniamnist.npz")
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert str(tmp_path / "pneumoniamnist.npz") in message
    assert "http://127.0.0.1:9/pneumoniamnist.npz" in message
    assert "data.data_dir" in message and "data.url" in message


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"flag": "notamnist"}, "unknown MedMNIST 2-D data set 'notamnist'"),
        ({"size": 32}, "data.size=32 is not a MedMNIST size"),
        ({"num_classes": 3}, "data.num_classes=3, but pneumoniamnist has 2 classes"),
    ],
)
def test_bad_settings_are_explained(tmp_path, kwargs, expected):
    with pytest.raises(DataError, match=expected):
        make(tmp_path, **kwargs)


def test_file_of_the_wrong_size_is_explained(medmnist_dir, tmp_path):
    (tmp_path / "pneumoniamnist_64.npz").write_bytes((medmnist_dir / "pneumoniamnist.npz").read_bytes())
    dm = make(tmp_path, size=64)
    with pytest.raises(DataError, match=r"expected uint8 \(N, 64, 64\[, 3\]\) for data.size=64"):
        dm.setup("fit")


def test_corrupt_file_is_explained(tmp_path):
    (tmp_path / "pneumoniamnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="is not a readable MedMNIST file"):
        make(tmp_path).setup("fit")


def test_labels_out_of_range_are_explained(tmp_path):
    path = write_medmnist_npz(tmp_path / "pneumoniamnist.npz", num_classes=3)
    assert np.load(path)["train_labels"].max() == 2
    with pytest.raises(DataError, match=r"train_labels has values outside 0\.\.1"):
        make(tmp_path).setup("fit")
