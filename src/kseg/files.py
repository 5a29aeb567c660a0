"""Atomic file output and safe paths: a reader never sees a half-written CSV, JSON or weights file, and a
file name taken from user data (an image id) never leads outside its folder."""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError

__all__ = ["atomic_path", "write_text", "write_json", "child_path", "is_temporary", "remove_stale_temporaries",
           "STALE_TMP_SECONDS"]

# The temporary files of atomic_path: ``.{name}.{8 random chars of mkstemp}.tmp{suffix of name}``.
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>(\.[^.]*)?)$")
# A temporary file untouched this long belongs to a killed write, not to one in progress
# (every writer of kseg fills its temporary file within seconds of creating it).
STALE_TMP_SECONDS = 15 * 60
# Folders already cleaned by this process: one scan per folder, not one per file written (OOF folders
# receive thousands of files).
_cleaned_folders: set[str] = set()


def child_path(folder: str | os.PathLike, name: str, what: str) -> Path:
    """``folder / name`` when ``name`` stays inside ``folder``; else a DataError naming ``what`` and the value.

    Names come from files users download (image ids in train.csv, sample_submission.csv), and a path
    built from them is read or written: an absolute name, one with ``..`` that climbs out, or one with
    a NUL byte would otherwise read or overwrite files anywhere. The check is lexical (``normpath``), so
    a folder that is itself a symlink (a dataset mounted elsewhere) is fine. ``what`` says where the
    name comes from, e.g. ``"train.csv line 12: id"``.
    """
    if not isinstance(name, str) or not name:
        raise DataError(f"{what} {name!r}: expected a non-empty file name")
    if "\x00" in name:
        raise DataError(f"{what} {name!r}: contains a NUL character, which no file name can hold")
    if os.path.isabs(name):
        raise DataError(f"{what} {name!r}: an absolute path; ids must name a file inside {folder}")
    normal = os.path.normpath(name)
    if normal == ".":
        raise DataError(f"{what} {name!r}: names the folder {folder} itself, not a file in it")
    if normal == ".." or normal.startswith(".." + os.sep):
        raise DataError(f"{what} {name!r}: leads outside {folder}; ids must name a file inside it")
    return Path(folder) / normal


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_path`'s temporary files."""
    match = _TMP_NAME.match(name)
    return match is not None and match["suffix"] == Path(match["name"]).suffix


def remove_stale_temporaries(folder: str | os.PathLike, *, max_age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete the leftover temporary files of killed atomic writes in ``folder``; returns what was removed.

    Only names of :func:`atomic_path`'s own pattern whose modification time is older than ``max_age``
    seconds are removed, so a write in progress (another process, another fold) and users' files are kept.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(os.fspath(folder)))
    except OSError:
        return removed
    for entry in entries:
        if not is_temporary(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or now - entry.stat(follow_symlinks=False).st_mtime < max_age:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` only if the block succeeds.

    The first write of a process into a folder also removes stale temporaries there (a kill between
    creating and renaming one leaves it behind, hidden).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder_key = os.path.abspath(path.parent)
    if folder_key not in _cleaned_folders:
        remove_stale_temporaries(path.parent)
        _cleaned_folders.add(folder_key)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files for the user's other tools
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
