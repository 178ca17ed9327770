"""Errors a user can fix: they are reported as one line, without a traceback."""

from __future__ import annotations

import importlib.util


class MedlitError(Exception):
    """A problem with the user's data, files or configuration, explained in its message."""


class ConfigError(MedlitError):
    """The configuration asks for something that cannot work (e.g. a network that cannot take the data)."""


class DataError(MedlitError):
    """A data set is missing, unreadable or not what the configuration says."""


class DownloadError(DataError):
    """No URL delivered a file with the expected checksum."""


class UnreadableInput(DataError):
    """One input file (an image, a review) that cannot be read; the message names it and says why."""


class UntrustedInput(MedlitError):
    """A file from elsewhere (a checkpoint, an upload, an archive) asks for something medlit refuses to do: run
    code, build an object it does not know, or allocate beyond a limit."""


def require_extra(extra: str, *modules: str) -> None:
    """Refuse, in one line naming the pip extra, a feature whose optional packages are not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MedlitError(f"this needs {', '.join(missing)}: pip install 'medlit[{extra}]'")
