"""One exception family, so the CLI can print a single clear line instead of a traceback."""


class KsegError(Exception):
    """Base class: a problem with the user's input, printed by the CLI as one line (exit code 2)."""


class ConfigError(KsegError, ValueError):
    """A config file, key or value is wrong."""


class DataError(KsegError, ValueError):
    """Competition data (CSV, image, folder) is missing or inconsistent. Messages name file, row and value."""


class RLEError(DataError):
    """A run-length-encoded string is malformed or does not fit its image."""


class SubmissionError(KsegError):
    """A submission file is invalid."""


class KaggleError(KsegError):
    """The kaggle CLI or the Kaggle server refused or failed a request (the message quotes its output)."""
