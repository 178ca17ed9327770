"""Errors a user can fix: they are reported as one line, without a traceback."""


class MedlitError(Exception):
    """A problem with the user's data, files or configuration, explained in its message."""


class ConfigError(MedlitError):
    """The configuration asks for something that cannot work (e.g. a network that cannot take the data)."""


class DataError(MedlitError):
    """A data set is missing, unreadable or not what the configuration says."""


class DownloadError(DataError):
    """No URL delivered a file with the expected checksum."""
