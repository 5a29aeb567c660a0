"""Where kseg's progress lines go: every module logs to its own logger (``kseg.train``, ``kseg.search``, ...),
and nothing is printed unless a console is installed.

The CLI installs one (:func:`console`) for the length of a command, so ``kseg run`` prints each message as it
always has, on the current ``sys.stdout``, between the progress bars. A notebook chooses: ``with
kseg.console.console(): command_run(cfg)`` for the same lines, ``logging.getLogger("kseg").setLevel("WARNING")``
to keep only problems, or its own handlers. Data caveats are ``KsegWarning`` warnings (``kseg.errors.warn``), not
log lines, so they can be filtered by category.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

__all__ = ["console", "ROOT_LOGGER"]

ROOT_LOGGER = "kseg"


class _CurrentStdout(logging.Handler):
    """Writes each message as is to whatever ``sys.stdout`` is when it is logged (a notebook cell's, pytest's
    capture), flushed, so it interleaves with tqdm's bars on stderr as a print did."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # a closed stream must not turn a log line into a crash
            self.handleError(record)


@contextlib.contextmanager
def console(level: int = logging.INFO) -> Iterator[logging.Handler]:
    """kseg's log lines printed plainly on stdout while the ``with`` block runs (the CLI's output), then removed.
    Inside another console (a notebook's, or a test's around a CLI call) it adds nothing: each line prints once."""
    logger = logging.getLogger(ROOT_LOGGER)
    existing = next((h for h in logger.handlers if isinstance(h, _CurrentStdout)), None)
    if existing is not None:
        yield existing
        return
    handler = _CurrentStdout(level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
