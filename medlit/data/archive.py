"""Unpack downloaded data archives without trusting their member names."""

from __future__ import annotations

import os
import shutil
import tarfile
import zlib
from pathlib import Path

from medlit.errors import DataError


def extract_tar(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract the tar archive `archive` (any compression) into `dest`; return its top-level entries.

    A data archive holds folders and regular files only, so every other member (symbolic and hard links,
    devices, FIFOs) is refused, and so is a member whose path would land outside `dest` (`../x`, `/x` is
    kept inside by `tarfile.data_filter`). Members are unpacked into a staging folder inside `dest` and
    moved into place only when the whole archive has been read, so a refused or corrupt archive leaves
    `dest` as it was; an entry that already exists in `dest` is never replaced.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".{archive.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter=_data_members_of(archive))
        entries = sorted(staging.iterdir())
        clashes = [entry.name for entry in entries if (dest / entry.name).exists()]
        if clashes:
            raise DataError(f"{archive}: {', '.join(clashes)} already exist in {dest}; not replacing them")
        for entry in entries:
            os.replace(entry, dest / entry.name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataError(f"could not extract {archive} into {dest}: {err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [dest / entry.name for entry in entries]


def _data_members_of(archive: Path):
    """A tarfile extraction filter: regular files and folders inside the destination, nothing else."""

    def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        if not (member.isfile() or member.isdir()):
            kind = "a link" if member.issym() or member.islnk() else "a special file"
            raise DataError(f"{archive}: member {member.name!r} is {kind}; refusing to extract the archive")
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError as err:
            raise DataError(
                f"{archive}: member {member.name!r} is unsafe ({err}); refusing to extract"
            ) from None

    return check
