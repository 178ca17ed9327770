"""Unpack zip and tar archives without letting any member land outside the target folder, and without
unpacking more than the limits below (checked from the archive's listing before anything is written)."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from medlit.errors import DataError

# the most an archive may unpack to (the Kermany chest X-rays: 1.2 GB; aclImdb: 0.5 GB) ...
MAX_BYTES = 20 << 30
# ... in at most this many members (aclImdb: 100,000) ...
MAX_MEMBERS = 500_000
# ... and, once it unpacks to more than 64 MB, at most this many times its own size (zip bombs: 1,000 and up)
MAX_RATIO = 100
_RATIO_FROM = 64 << 20


def _outside(name: str, dest: Path) -> bool:
    if PurePosixPath(name).is_absolute() or Path(name).is_absolute():
        return True
    target = (dest / name).resolve()
    return not target.is_relative_to(dest.resolve())


def _check_tar(archive: Path, handle: tarfile.TarFile, dest: Path) -> int:
    """A data archive holds folders and regular files: anything else, or a path leaving `dest`, refuses it;
    so does one beyond the limits (read as the listing streams in). Returns the bytes it unpacks to."""
    total = 0
    for count, member in enumerate(handle, start=1):
        total += member.size
        _check_size(archive, count, total, final=False)
        if _outside(member.name, dest):
            raise DataError(f"{archive}: member {member.name!r} would be written outside {dest}; not unpacking")
        if member.issym() or member.islnk():
            base = str(PurePosixPath(member.name).parent) if member.issym() else ""
            if _outside(str(PurePosixPath(base) / member.linkname), dest):
                raise DataError(f"{archive}: link {member.name!r} points outside {dest}; not unpacking")
            raise DataError(f"{archive}: member {member.name!r} is a link; not unpacking")
        if not (member.isfile() or member.isdir()):
            raise DataError(f"{archive}: member {member.name!r} is a device or pipe; not unpacking")
    return total


def _check_zip(archive: Path, handle: zipfile.ZipFile, dest: Path) -> int:
    """Every member inside `dest`; returns the bytes the archive unpacks to (zipfile writes no more of a
    member than the size the listing declares)."""
    members = handle.infolist()
    _check_size(archive, len(members), sum(member.file_size for member in members), final=False)
    for member in members:
        if _outside(member.filename, dest):
            raise DataError(f"{archive}: member {member.filename!r} would be written outside {dest}; not unpacking")
    return sum(member.file_size for member in members)


def _check_size(archive: Path, members: int, total: int, final: bool = True) -> None:
    """Refuse an archive of more than `MAX_MEMBERS` members or `MAX_BYTES` bytes, or (when `final`, the whole
    listing read) one that unpacks to more than `MAX_RATIO` times its size."""
    if members > MAX_MEMBERS:
        raise DataError(f"{archive} holds more than {MAX_MEMBERS:,} members (MAX_MEMBERS); not unpacking")
    if total > MAX_BYTES:
        raise DataError(f"{archive} unpacks to more than {MAX_BYTES / 2**30:g} GB (MAX_BYTES); not unpacking")
    size = max(1, archive.stat().st_size)
    if final and total > _RATIO_FROM and total > MAX_RATIO * size:
        raise DataError(
            f"{archive} unpacks to {total / 2**20:,.0f} MB, {total / size:,.0f} times its size (more than "
            f"{MAX_RATIO}, MAX_RATIO): a decompression bomb; not unpacking"
        )


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack `archive` (zip or tar, compressed or not) into the new folder `dest`.

    Every member is checked before anything is written: absolute paths, `..`, links and device files
    refuse the whole archive, and so do more than `MAX_MEMBERS` members, more than `MAX_BYTES` unpacked,
    a ratio of unpacked size to archive size above `MAX_RATIO`, or more than the disk has free. Unpacking
    goes to `<dest>.partial` and is renamed into place at the end, so an interrupted run or a truncated
    archive never leaves a half-filled `dest`.
    """
    if dest.exists() and any(dest.iterdir()):
        raise DataError(f"{dest} exists and is not empty; move it away or unpack elsewhere")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                total = _check_zip(archive, handle, partial)
                _check_room(archive, len(handle.infolist()), total, partial)
                handle.extractall(partial)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as handle:
                total = _check_tar(archive, handle, partial)  # streams the listing, stopping at a limit
                _check_room(archive, len(handle.getmembers()), total, partial)
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


def _check_room(archive: Path, members: int, total: int, dest: Path) -> None:
    """The whole listing's limits, and room for it on the disk of `dest`."""
    _check_size(archive, members, total)
    free = shutil.disk_usage(dest).free
    if total > free:
        raise DataError(f"{archive} unpacks to {total / 2**30:.1f} GB, but {dest} has {free / 2**30:.1f} GB free")
