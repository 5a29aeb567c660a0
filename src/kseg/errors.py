"""One exception family, so the CLI can print a single clear line instead of a traceback, and one warning class."""

import warnings


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


class KsegWarning(UserWarning):
    """A caveat kseg works past (a missing column, a fold without OOF, no search result yet, ...).

    A notebook silences them with ``warnings.filterwarnings("ignore", category=KsegWarning)``; the CLI prints
    each as one ``warning:`` line on stdout, as it always has (``cli.main``); tests use ``pytest.warns``.
    """


def warn(message: str) -> None:
    """Issue ``message`` as a :class:`KsegWarning` attributed to the caller of the function that warns."""
    warnings.warn(message, KsegWarning, stacklevel=3)
