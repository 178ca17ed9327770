"""`medlit download chest_xray`: fetch an archive, verify it, unpack it safely, report where."""

from __future__ import annotations

import io
import sys
import tarfile
import zipfile

import pytest

from medlit.cli.download import download as main
from medlit.data.chest_xray import ChestXrayDataModule
from medlit.data.fetch import md5sum
from tests.synthetic import write_xray_folder


def zip_folder(folder, archive, prefix="chest_xray/"):
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            handle.write(path, prefix + str(path.relative_to(folder)))
        handle.writestr("__MACOSX/._IM-0001-0001.jpeg", b"resource fork")
    return archive


def test_download_verify_and_unpack_from_a_mirror(tmp_path, http_server, capsys):
    served, base_url = http_server
    source = write_xray_folder(tmp_path / "source", bad_files=False)
    archive = zip_folder(source, served / "ChestXRay.zip")
    data_dir = tmp_path / "data"
    args = ["chest_xray", "--data-dir", str(data_dir), "--url", f"{base_url}/missing.zip"]
    assert main([*args, "--mirror", f"{base_url}/ChestXRay.zip", "--md5", md5sum(archive)]) == 0
    out = capsys.readouterr().out
    root = data_dir / "chest_xray" / "chest_xray"
    assert f"Chest X-rays are in {root}" in out
    assert "train: {'NORMAL': 24, 'PNEUMONIA': 48} (the official release has" in out
    assert not (data_dir / "ChestXRay.zip").exists(), "the archive is removed once unpacked"
    dm = ChestXrayDataModule(str(data_dir / "chest_xray"), image_size=32, cache_dir=None, decode_workers=1)
    dm.setup("fit")
    assert len(dm.test_set) == 12

    assert main([*args]) == 0, "data in place is not fetched again"
    assert f"Chest X-rays are in {root}" in capsys.readouterr().out


def test_wrong_checksum_is_refused(tmp_path, http_server, capsys):
    served, base_url = http_server
    zip_folder(write_xray_folder(tmp_path / "source", bad_files=False), served / "x.zip")
    code = main(["chest_xray", "--data-dir", str(tmp_path / "data"), "--url", f"{base_url}/x.zip", "--md5", "0" * 32])
    assert code == 1
    assert "does not match the expected 00000000" in capsys.readouterr().err
    assert not (tmp_path / "data" / "chest_xray").exists()


def _tar_with_link(archive):
    with tarfile.open(archive, "w:gz") as handle:
        link = tarfile.TarInfo("chest_xray/train/NORMAL/link.jpeg")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../../etc/passwd"
        handle.addfile(link)


def _zip_with_parent_path(archive):
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("chest_xray/train/NORMAL/a.jpeg", b"x")
        handle.writestr("../escaped.txt", b"x")


def _tar_with_absolute_path(archive):
    with tarfile.open(archive, "w") as handle:
        info = tarfile.TarInfo("/tmp/escaped.txt")
        info.size = 1
        handle.addfile(info, io.BytesIO(b"x"))


@pytest.mark.parametrize(
    ("name", "build", "message"),
    [
        ("link.tar.gz", _tar_with_link, "link 'chest_xray/train/NORMAL/link.jpeg' points outside"),
        ("parent.zip", _zip_with_parent_path, "member '../escaped.txt' would be written outside"),
        ("absolute.tar", _tar_with_absolute_path, "member '/tmp/escaped.txt' would be written outside"),
    ],
)
def test_archive_members_escaping_the_target_are_refused(tmp_path, http_server, capsys, name, build, message):
    served, base_url = http_server
    build(served / name)
    data_dir = tmp_path / "data"
    assert main(["chest_xray", "--data-dir", str(data_dir), "--url", f"{base_url}/{name}"]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(p.name for p in data_dir.iterdir()) == [name], "nothing unpacked, the archive kept"


def test_kaggle_without_kagglehub_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kagglehub", None)
    assert main(["chest_xray", "--data-dir", str(tmp_path)]) == 1
    assert "pip install 'medlit[kaggle]'" in capsys.readouterr().err
