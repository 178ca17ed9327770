"""Unpack zip and tar archives without letting any member land outside the target folder."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from medlit.errors import DataError


def _outside(name: str, dest: Path) -> bool:
    if PurePosixPath(name).is_absolute() or Path(name).is_absolute():
        return True
    target = (dest / name).resolve()
    return not target.is_relative_to(dest.resolve())


def _check_tar(archive: Path, handle: tarfile.TarFile, dest: Path) -> None:
    """A data archive holds folders and regular files: anything else, or a path leaving `dest`, refuses it."""
    for member in handle.getmembers():
        if _outside(member.name, dest):
            raise DataError(f"{archive}: member {member.name!r} would be written outside {dest}; not unpacking")
        if member.issym() or member.islnk():
            base = str(PurePosixPath(member.name).parent) if member.issym() else ""
            if _outside(str(PurePosixPath(base) / member.linkname), dest):
                raise DataError(f"{archive}: link {member.name!r} points outside {dest}; not unpacking")
            raise DataError(f"{archive}: member {member.name!r} is a link; not unpacking")
        if not (member.isfile() or member.isdir()):
            raise DataError(f"{archive}: member {member.name!r} is a device or pipe; not unpacking")


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack `archive` (zip or tar, compressed or not) into the new folder `dest`.

    Every member is checked before anything is written: absolute paths, `..`, links and device files
    refuse the whole archive. Unpacking goes to `<dest>.partial` and is renamed into place at the end,
    so an interrupted run or a truncated archive never leaves a half-filled `dest`.
    """
    if dest.exists() and any(dest.iterdir()):
        raise DataError(f"{dest} exists and is not empty; move it away or unpack elsewhere")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                for name in handle.namelist():
                    if _outside(name, partial):
                        raise DataError(f"{archive}: member {name!r} would be written outside {dest}; not unpacking")
                handle.extractall(partial)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as handle:
                _check_tar(archive, handle, partial)
                handle.extractall(partial, filter="data")
        else:
            raise DataError(f"{archive} is neither a zip nor a tar archive")
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise DataError(f"cannot unpack {archive}: {err}") from None
    except DataError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if dest.exists():
        dest.rmdir()
    partial.rename(dest)
    return dest
