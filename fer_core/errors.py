"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class FerError(Exception):
    """Base class for every error fer-sweep reports to a user.

    The message says what went wrong, naming the file, row or key, and what to do next.
    """


class DataError(FerError):
    """Bad or unusable input data (a file, a row, a layout)."""


class ManifestError(FerError):
    """A data set's manifest is missing, malformed, of the wrong version, or fails its checksums."""
