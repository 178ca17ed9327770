"""Fetch files from a list of URLs (official source first, then mirrors) and verify their MD5."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from medlit.errors import DownloadError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def md5sum(path: str | os.PathLike) -> str:
    """The MD5 hex digest of a file, read in chunks so large files need little memory."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(urls: Sequence[str], dest: str | os.PathLike, md5: str | None, timeout: float = 60.0) -> Path:
    """Download the first of `urls` whose content has the expected `md5` to `dest`.

    The file is written next to `dest` under a temporary name and renamed only once verified, so an
    interrupted or corrupted download never leaves a file that looks complete. `file://` URLs work too,
    for mirrors on a shared file system.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    failures = []
    for url in urls:
        log.info("Downloading %s to %s", url, dest)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
        except (OSError, ValueError) as err:
            partial.unlink(missing_ok=True)
            failures.append(f"{url}: {getattr(err, 'reason', err)}")
            continue
        actual = md5sum(partial)
        if md5 is not None and actual != md5:
            partial.unlink()
            failures.append(f"{url}: MD5 {actual} does not match the expected {md5}")
            continue
        os.replace(partial, dest)
        return dest
    raise DownloadError(f"could not download {dest.name} ({'; '.join(failures) or 'no URL given'})")
