"""Files medlit writes and reads back (checkpoints, caches): a digest of their content, atomic writes, and the
clean-up of writes a killed process left behind.

The digest is a SHA-256 of the content as loaded (every tensor's dtype, shape and bytes, every plain value, in
order), stored beside it under `DIGEST_KEY`, so flipped bytes on disk are found when the file is read back. It
detects damage, not tampering: whoever can change a file can also change or remove its digest.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

DIGEST_KEY = "medlit_sha256"


def content_digest(content: Any) -> str:
    """SHA-256 of nested dicts, lists and tuples of tensors and plain values, as `torch.load` returns them."""
    digest = hashlib.sha256()
    _feed(digest, content)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        tensor = (tensor if tensor.layout == torch.strided else tensor.to_dense()).contiguous().reshape(-1)
        digest.update(f"T{tensor.dtype}{tuple(value.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(b"D%d" % len(value))
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(b"L%d" % len(value))
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def sealed(content: dict) -> dict:
    """`content` with the digest of the rest of it under `DIGEST_KEY` (a shallow copy)."""
    rest = {key: value for key, value in content.items() if key != DIGEST_KEY}
    return {**rest, DIGEST_KEY: content_digest(rest)}


def unseal(content: dict) -> tuple[dict, bool | None]:
    """`content` without its digest, and whether the digest matched (None: it had none)."""
    if not isinstance(content, dict) or DIGEST_KEY not in content:
        return content, None
    rest = {key: value for key, value in content.items() if key != DIGEST_KEY}
    return rest, content[DIGEST_KEY] == content_digest(rest)


def partial_path(path: Path) -> Path:
    """Where this process writes `path` before renaming it into place: `.<name>.<pid>.partial` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def remove_stale_partials(path: Path) -> list[Path]:
    """Delete `.<name>.<pid>.partial` files beside `path` left by processes that no longer run (killed
    mid-write); writes of running processes are left alone. Returns what was removed."""
    removed = []
    for partial in path.parent.glob(f".{path.name}.*.partial"):
        pid = partial.name[len(path.name) + 2 : -len(".partial")]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def save_atomically(content: dict, path: Path, seal: bool = True) -> None:
    """`torch.save` `content` (with its digest, unless `seal=False`) to a partial file beside `path`, sync it,
    then rename it into place: a process killed mid-write leaves the previous file of that name intact.
    Partial files of earlier killed writes are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    partial = partial_path(path)
    try:
        with open(partial, "wb") as handle:
            torch.save(sealed(content) if seal else content, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
