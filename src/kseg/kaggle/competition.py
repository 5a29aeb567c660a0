"""What a competitor does after ``kseg kernel push``, over the official ``kaggle`` CLI (2.2.4): follow a pushed
kernel (status, logs, output, with ``--wait``), download the competition data, submit a kernel version and
fetch its score.

Every command runs the CLI found by :func:`kseg.kaggle.publish.find_kaggle`, and its output is parsed from the exact
strings of ``kaggle/api/kaggle_api_extended.py``, because the CLI exits 0 on several failures. A failure is
a :class:`kseg.errors.KaggleError` whose message quotes the CLI's last line.
"""
from __future__ import annotations

import json
import logging
import re
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

from ..config import Config
from ..errors import ConfigError, KaggleError, warn
from .bundle import competition_slug
from .publish import Runner, find_credentials, find_kaggle, last_line, missing_credentials_message, shown_command
from .rules import KERNEL_METADATA, read_metadata
from .sandbox import OUTPUTS_DIR

log = logging.getLogger(__name__)

# `kaggle kernels status` prints '<ref> has status "KernelWorkerStatus.<NAME>"' (kernels_status_cli).
_KERNEL_STATUS = re.compile(r'has status "(?:KernelWorkerStatus\.)?([A-Za-z_]+)"')
_FAILURE_MESSAGE = re.compile(r'Failure message: "(.*)"')
KERNEL_DONE = "complete"
KERNEL_FAILED = ("error", "cancel_requested", "cancel_acknowledged")
# `competitions submissions --format json` statuses (kagglesdk SubmissionStatus, printed as str(enum)).
SUBMISSION_DONE, SUBMISSION_FAILED = "complete", "error"
POLL_S = 30.0
WAIT_TIMEOUT_S = 12 * 3600.0  # longer than any kernel's run-time limit


def _kaggle() -> str:
    """The CLI, with credentials: both are needed for every command here."""
    kaggle = find_kaggle()
    if kaggle is None:
        raise ConfigError("the kaggle command is not on PATH: install the kaggle package (pip install kaggle)")
    if find_credentials() is None:
        raise ConfigError(missing_credentials_message())
    return kaggle


def _call(runner: Runner, cmd: list[str], echo: bool = True) -> str:
    """Run one CLI command; a non-zero exit is a KaggleError quoting its last line."""
    if echo:
        log.info(f"$ {shown_command(cmd)}")
    result = runner(cmd, capture_output=True, text=True)
    output = (result.stdout or "") + (result.stderr or "")
    if result.returncode != 0:
        raise KaggleError(f"{shown_command(cmd)} failed with exit code {result.returncode}: {last_line(output)}")
    return output


def kernel_ref(target: str | Path) -> str:
    """``owner/slug`` of a kernel given as a built kernel folder (its metadata id) or as the ref itself."""
    folder = Path(target)
    if (folder / KERNEL_METADATA).is_file():
        meta, problems = read_metadata(folder / KERNEL_METADATA)
        if meta is None or not isinstance(meta.get("id"), str):
            raise ConfigError(f"{folder / KERNEL_METADATA}: no kernel id ({'; '.join(problems) or 'id missing'})")
        return meta["id"]
    text = str(target)
    if text.count("/") != 1 or not all(text.split("/")):
        raise ConfigError(f"kernel {text!r} is neither a built kernel folder nor an owner/slug reference")
    return text


def kernel_status(ref: str, runner: Runner = subprocess.run) -> tuple[str, str | None]:
    """(status in lower case, failure message or None) of the kernel's latest run."""
    output = _call(runner, [_kaggle(), "kernels", "status", ref], echo=False)
    match = _KERNEL_STATUS.search(output)
    if match is None:
        raise KaggleError(f"kaggle kernels status {ref} printed no status: {last_line(output)}")
    failure = _FAILURE_MESSAGE.search(output)
    return match.group(1).lower(), failure.group(1) if failure else None


def _polls(timeout: float, interval: float) -> int:
    if interval <= 0 or timeout < 0:
        raise ConfigError(f"--interval must be > 0 and --wait-timeout >= 0 seconds, got {interval:g} and {timeout:g}")
    return max(1, int(timeout // interval))


def wait_for_kernel(ref: str, runner: Runner = subprocess.run, *, sleep: Callable[[float], None] = time.sleep,
                    interval: float = POLL_S, timeout: float = WAIT_TIMEOUT_S) -> str:
    """Poll until the kernel's run ends; return ``complete``, raise KaggleError on error/cancel/timeout."""
    polls = _polls(timeout, interval)
    status = "unknown"
    for poll in range(polls + 1):
        status, failure = kernel_status(ref, runner)
        log.info(f"{ref}: {status}")
        if status == KERNEL_DONE:
            return status
        if status in KERNEL_FAILED:
            raise KaggleError(f"kernel {ref} ended with status {status}"
                              + (f": {failure}" if failure else f" (see kseg kernel logs {ref})"))
        if poll < polls:
            sleep(interval)
    raise KaggleError(f"kernel {ref} still {status} after {timeout:.0f}s")


def command_status(target: str, wait: bool = False, runner: Runner = subprocess.run, **poll: Any) -> int:
    """Print the kernel's status (``wait``: until it ends). Exit code 0 unless it failed."""
    ref = kernel_ref(target)
    if wait:
        wait_for_kernel(ref, runner, **poll)
        return 0
    status, failure = kernel_status(ref, runner)
    log.info(f"{ref}: {status}" + (f" ({failure})" if failure else ""))
    return 1 if status in KERNEL_FAILED else 0


def command_logs(target: str, wait: bool = False, runner: Runner = subprocess.run, **poll: Any) -> int:
    """Print the log of the kernel's latest run (``wait``: once it has ended, whatever the outcome)."""
    ref = kernel_ref(target)
    if wait:
        try:
            wait_for_kernel(ref, runner, **poll)
        except KaggleError as exc:
            warn(f"{exc}")
    log.info(_call(runner, [_kaggle(), "kernels", "logs", ref]).rstrip())
    return 0


def command_output(target: str, dest: Path | None = None, wait: bool = False, runner: Runner = subprocess.run,
                   **poll: Any) -> Path:
    """Download the kernel's output into ``dest`` (default ``kernels/outputs/<slug>``, where run-local
    looks for a train kernel's output)."""
    ref = kernel_ref(target)
    if dest is None:
        base = Path(target).parent if (Path(target) / KERNEL_METADATA).is_file() else Path("kernels")
        dest = base / OUTPUTS_DIR / ref.split("/")[1]
    if wait:
        wait_for_kernel(ref, runner, **poll)
    dest.mkdir(parents=True, exist_ok=True)
    _call(runner, [_kaggle(), "kernels", "output", ref, "-p", str(dest), "-o"])
    files = sorted(p for p in dest.rglob("*") if p.is_file())
    log.info(f"output of {ref}: {len(files)} files in {dest}")
    return dest


def _competition_entry(slug: str, runner: Runner) -> dict[str, Any] | None:
    output = _call(runner, [_kaggle(), "competitions", "list", "--search", slug, "--format", "json"], echo=False)
    start = output.find("[")
    try:
        items = json.loads(output[start:]) if start >= 0 else []
    except json.JSONDecodeError:
        raise KaggleError(f"kaggle competitions list printed no JSON list: {last_line(output)}") from None
    for item in items:
        if str(item.get("ref", "")).rstrip("/").split("/")[-1] == slug:
            return item
    return None


def command_download(cfg: Config, competition: str | None = None, runner: Runner = subprocess.run,
                     force: bool = False) -> Path:
    """Download the competition's files into ``data.root`` and unzip them there. Checks first that the
    rules were accepted (the download is refused otherwise, with an unhelpful 403)."""
    slug = competition_slug(cfg, competition)
    entry = _competition_entry(slug, runner)
    if entry is None:
        raise KaggleError(f"competition {slug!r} not found by kaggle competitions list --search {slug}: check "
                          "kaggle.competition")
    if not entry.get("userHasEntered"):
        raise KaggleError(f"you have not accepted the rules of {slug}: accept them at "
                          f"https://www.kaggle.com/competitions/{slug}/rules, then run this again")
    root = Path(cfg.data.root)
    root.mkdir(parents=True, exist_ok=True)
    _call(runner, [_kaggle(), "competitions", "download", slug, "-p", str(root), *(["-o"] if force else [])])
    archive = root / f"{slug}.zip"
    if not archive.is_file():
        raise KaggleError(f"kaggle competitions download {slug} left no {archive}")
    try:
        with zipfile.ZipFile(archive) as zipped:
            outside = [n for n in zipped.namelist() if Path(n).is_absolute() or ".." in Path(n).parts]
            if outside:
                raise KaggleError(f"{archive}: refuses to unzip paths outside {root}: {outside[:3]}")
            zipped.extractall(root)
            n_files = len(zipped.namelist())
    except zipfile.BadZipFile:
        raise KaggleError(f"{archive}: not a valid zip file (interrupted download? run again with --force)") from None
    archive.unlink()
    log.info(f"competition {slug}: {n_files} files unzipped into {root}")
    return root


def _submissions(slug: str, runner: Runner) -> list[dict[str, Any]]:
    output = _call(runner, [_kaggle(), "competitions", "submissions", slug, "--format", "json"], echo=False)
    if "No submissions found" in output:
        return []
    start = output.find("[")
    try:
        return json.loads(output[start:]) if start >= 0 else []
    except json.JSONDecodeError:
        raise KaggleError(f"kaggle competitions submissions printed no JSON list: {last_line(output)}") from None


def _status_name(value: Any) -> str:
    return str(value or "").split(".")[-1].lower()


def command_submit(cfg: Config, kernel: str, version: int, *, competition: str | None = None,
                   file_name: str = "submission.csv", message: str | None = None, wait: bool = True,
                   runner: Runner = subprocess.run, sleep: Callable[[float], None] = time.sleep,
                   interval: float = POLL_S, timeout: float = WAIT_TIMEOUT_S) -> float | None:
    """Submit ``file_name`` of version ``version`` of a kernel to a code competition; with ``wait``, poll
    ``competitions submissions`` until Kaggle has scored it and return the public score."""
    slug = competition_slug(cfg, competition)
    ref = kernel_ref(kernel)
    message = message or f"kseg {ref} v{version}"
    output = _call(runner, [_kaggle(), "competitions", "submit", slug, "-k", ref, "-f", file_name,
                            "-v", str(version), "-m", message])
    log.info(output.rstrip())
    if "Could not submit to competition" in output or "Could not find competition" in output:
        raise KaggleError(f"Kaggle refused the submission of {ref} v{version} to {slug}: {last_line(output)}")
    if not wait:
        return None
    polls = _polls(timeout, interval)
    for poll in range(polls + 1):
        mine = [s for s in _submissions(slug, runner) if s.get("description") == message]
        if mine:
            latest = mine[0]  # newest first (sorted by date)
            status = _status_name(latest.get("status"))
            if status == SUBMISSION_DONE:
                score = latest.get("publicScore")
                log.info(f"submission {latest.get('ref')} of {ref} v{version}: public score {score}")
                try:
                    return float(score) if score not in (None, "") else None
                except ValueError:
                    return None
            if status == SUBMISSION_FAILED:
                raise KaggleError(f"Kaggle could not score submission {latest.get('ref')} of {ref} v{version} "
                                  f"(status error): see https://www.kaggle.com/competitions/{slug}/submissions")
            log.info(f"submission of {ref} v{version}: {status or 'pending'}")
        if poll < polls:
            sleep(interval)
    raise KaggleError(f"submission of {ref} v{version} not scored after {timeout:.0f}s: "
                      f"kaggle competitions submissions {slug}")

