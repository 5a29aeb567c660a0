"""Push kernels and their datasets with the official ``kaggle`` CLI: credentials, dataset versions and their
readiness, the CLI's failures that still exit 0, and the next steps once a kernel runs.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError, KaggleError, warn
from ..files import write_json
from .bundle import folder_size
from .rules import (
    DATASET_METADATA,
    KERNEL_METADATA,
    SIDECAR,
    base_ref,
    raise_if_problems,
    read_metadata,
    validate_dataset_dir,
    validate_kernel_dir,
)
from .sandbox import OUTPUTS_DIR

log = logging.getLogger(__name__)

DATASET_READY_TIMEOUT_S = 600.0

DATASET_POLL_S = 10.0
# The kaggle CLI (2.2.4, kaggle_api_extended.kernels_push_cli / dataset_create_*_cli) prints these and still
# exits 0. An invalid source is dropped from the kernel, which then fails on Kaggle an hour later.
_CLI_FAILURE_MARKERS = ("Kernel push error", "Dataset creation error", "Dataset version creation error",
                        "The following are not valid dataset sources",
                        "The following are not valid competition sources",
                        "The following are not valid kernel sources")
# `datasets status` names (kagglesdk DatabundleVersionStatus, lower-cased by the CLI) that end the wait.
DATASET_READY, DATASET_FAILED = "ready", ("failed", "deleted")
# What a non-zero `datasets status` prints for a dataset that does not exist (requests' HTTPError text, or
# the server's JSON message); anything else (401, 5xx, network) is an error, not a reason to create it.
_NOT_FOUND = re.compile(r"\b404\b|not found", re.IGNORECASE)
_PUSHED_VERSION = re.compile(r"Kernel version (\d+) successfully pushed")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


# --------------------------------------------------------------------------------------------- push

def kaggle_config_dir() -> Path:
    """Where the kaggle CLI keeps kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, else $XDG_CONFIG_HOME/kaggle."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    if home.exists():
        return home
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _credential_files() -> list[Path]:
    home = Path.home() / ".kaggle"
    return [kaggle_config_dir() / "kaggle.json", home / "access_token", home / "credentials.json"]


def find_credentials() -> str | None:
    """Where the kaggle CLI will find credentials (a description, never the secret), or None."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "the KAGGLE_API_TOKEN environment variable"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "the KAGGLE_USERNAME and KAGGLE_KEY environment variables"
    for path in _credential_files():
        if path.is_file():
            if path.name == "kaggle.json":
                try:
                    content = json.loads(path.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise ConfigError(f"{path}: not valid JSON; it should be {{\"username\": ..., \"key\": ...}} "
                                      "as downloaded from kaggle.com/settings") from None
                if not isinstance(content, dict) or not {"username", "key"} <= content.keys():
                    raise ConfigError(f"{path}: needs the keys 'username' and 'key' (download it again from "
                                      "kaggle.com/settings)")
            return str(path)
    return None


def missing_credentials_message() -> str:
    return ("no Kaggle credentials found. Create an API token at https://www.kaggle.com/settings (API "
            "section), then either save the downloaded kaggle.json as "
            f"{kaggle_config_dir() / 'kaggle.json'} (chmod 600), or export KAGGLE_API_TOKEN, or export "
            "KAGGLE_USERNAME and KAGGLE_KEY")


def _warn_readable_credentials() -> None:
    for path in _credential_files():
        if path.is_file() and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warn(f"{path} is readable by other users: chmod 600 {shlex.quote(str(path))}")


def shown_command(cmd: Sequence[str]) -> str:
    return shlex.join([Path(cmd[0]).name, *cmd[1:]])


def _run_cli(runner: Runner, cmd: list[str]) -> tuple[bool, str]:
    """Run one kaggle command, echo its output; success needs exit 0 and none of the CLI's error lines."""
    log.info(f"$ {shown_command(cmd)}")
    result = runner(cmd, capture_output=True, text=True)
    output = (result.stdout or "") + (result.stderr or "")
    if output.strip():
        log.info(output.rstrip())
    ok = result.returncode == 0 and not any(marker in output for marker in _CLI_FAILURE_MARKERS)
    return ok, output


@dataclass(frozen=True)
class DatasetState:
    """What ``kaggle datasets status REF --format json`` says: ``exists`` False only for a real not-found."""

    exists: bool
    status: str | None = None
    version: int | None = None




def dataset_state(runner: Runner, kaggle: str, ref: str) -> DatasetState:
    """Status and current version of a dataset. Raises :class:`KaggleError` on any failure other than
    "not found" (bad credentials, a server error), which must not be mistaken for a missing dataset."""
    cmd = [kaggle, "datasets", "status", base_ref(ref), "--format", "json"]
    result = runner(cmd, capture_output=True, text=True)
    output = ((result.stdout or "") + (result.stderr or "")).strip()
    if result.returncode != 0:
        if _NOT_FOUND.search(output):
            return DatasetState(False)
        raise KaggleError(f"{shown_command(cmd)} failed with exit code {result.returncode}: {last_line(output)}")
    for line in reversed((result.stdout or "").splitlines()):  # the CLI may print a version warning first
        if line.strip().startswith("{"):
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                break
            version = payload.get("current_version_number")
            return DatasetState(True, str(payload.get("status", "")).lower() or None,
                                int(version) if isinstance(version, int) or str(version).isdigit() else None)
    raise KaggleError(f"{shown_command(cmd)} printed no JSON status: {last_line(output)}")


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _wait_until_ready(runner: Runner, kaggle: str, ref: str, previous: int | None,
                      sleep: Callable[[float], None], timeout: float) -> tuple[str, int | None]:
    """Poll until the version uploaded after ``previous`` (None: a new dataset) is ``ready``; returns
    (``"ready"`` | ``"failed"`` | ``"timeout"``, that version). A not-found right after ``create`` means
    Kaggle has not registered the dataset yet, so it is waited for too."""
    polls = max(1, int(timeout // DATASET_POLL_S))
    last = "no status yet"
    for poll in range(polls + 1):
        state = dataset_state(runner, kaggle, ref)
        if state.exists:
            new = state.version is None or previous is None or state.version > previous
            last = f"{state.status} (version {state.version})"
            if state.status in DATASET_FAILED and new:
                log.error(f"error: Kaggle could not process dataset {ref}: status {last}")
                return "failed", state.version
            if state.status == DATASET_READY and new:
                log.info(f"dataset {ref} version {state.version} is ready")
                return "ready", state.version
        if poll < polls:
            sleep(DATASET_POLL_S)
    log.info(f"dataset {ref} is not ready after {timeout:.0f}s (last status: {last})")
    return "timeout", None


def _dataset_dirs(kernel_dir: Path, meta: Mapping[str, Any]) -> list[tuple[str, Path]]:
    """Dataset sources built next to the kernel; others (someone else's datasets) are only referenced."""
    found = []
    for ref in meta.get("dataset_sources") or []:
        folder = kernel_dir.parent / ref.split("/")[1]
        if (folder / DATASET_METADATA).is_file():
            found.append((ref, folder))
        else:
            warn(f"dataset {ref} is not built in {kernel_dir.parent}; assuming it exists on Kaggle")
    return found


def find_kaggle() -> str | None:
    """The ``kaggle`` executable on PATH, else the one installed next to this interpreter (an inactive venv)."""
    return shutil.which("kaggle") or shutil.which("kaggle", path=str(Path(sys.executable).parent))


def _pin_dataset_sources(kernel_dir: Path, meta: dict[str, Any], pinned: Mapping[str, str]) -> None:
    """Rewrite ``dataset_sources`` as ``owner/slug/VERSION`` (the CLI accepts that form), so the kernel
    runs on the version just uploaded, not on whatever is newest when Kaggle schedules it."""
    meta["dataset_sources"] = [pinned.get(ref, ref) for ref in meta.get("dataset_sources") or []]
    write_json(kernel_dir / KERNEL_METADATA, meta)
    log.info(f"pinned dataset sources in {kernel_dir / KERNEL_METADATA}: {', '.join(meta['dataset_sources'])}")


def push(kernel_dir: Path, dry_run: bool = False, runner: Runner = subprocess.run, *,
         sleep: Callable[[float], None] = time.sleep, dataset_timeout: float = DATASET_READY_TIMEOUT_S,
         push_on_timeout: bool = False, uploaded: dict[str, str] | None = None) -> int:
    """Upload the kernel's datasets (create, or a new version when they exist) then push the kernel, with
    the ``kaggle`` CLI found on PATH. Returns the exit code.

    Everything is validated first; missing credentials stop before any command runs (``dry_run`` only
    warns, so commands can be reviewed on a machine without an account). ``dry_run`` prints the exact
    commands and runs none. Credentials are never printed. Each uploaded dataset is waited for until its
    new version is ``ready`` (``dataset_timeout`` seconds); on ``failed`` or a timeout the kernel is not
    pushed (``push_on_timeout`` pushes it anyway), and ready versions are pinned in ``dataset_sources``.
    ``uploaded`` (``owner/slug`` → pinned ref) holds the datasets :func:`push_many` already uploaded, which
    are not uploaded again.
    """
    kernel_dir = Path(kernel_dir)
    problems = validate_kernel_dir(kernel_dir)
    meta, _ = read_metadata(kernel_dir / KERNEL_METADATA)
    datasets = _dataset_dirs(kernel_dir, meta) if meta else []
    problems += [p for _, folder in datasets for p in validate_dataset_dir(folder)]
    raise_if_problems(problems, f"kernel {kernel_dir} would be rejected by Kaggle")

    kaggle = find_kaggle()
    if kaggle is None:
        if not dry_run:
            raise ConfigError("the kaggle command is not on PATH: install the kaggle package "
                              "(pip install kaggle, or pip install -e '.[kaggle]')")
        warn("the kaggle command is not on PATH (pip install kaggle)")
        kaggle = "kaggle"
    if find_credentials() is None:
        if not dry_run:
            raise ConfigError(missing_credentials_message())
        warn(f"{missing_credentials_message()}")
    _warn_readable_credentials()

    for ref in meta.get("kernel_sources") or []:
        warn(f"this kernel reads the output of kernel {ref}: push it and let it finish first")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    push_cmd = [kaggle, "kernels", "push", "-p", str(kernel_dir)]
    sidecar_path = kernel_dir / SIDECAR
    timeout_s = json.loads(sidecar_path.read_text()).get("session_timeout") if sidecar_path.is_file() else None
    if timeout_s:
        push_cmd += ["-t", str(int(timeout_s))]
    if dry_run:
        log.info("dry run: these commands would run, in order")
        for ref, folder in datasets:
            log.info(f"  {shown_command([kaggle, 'datasets', 'status', base_ref(ref), '--format', 'json'])}"
                  "   # exists? then polled until the new version is ready")
            log.info(f"  {shown_command([kaggle, 'datasets', 'version', '-p', str(folder), '-r', 'zip', '-m', f'kseg {stamp}'])}"
                  "   # if it exists")
            log.info(f"  {shown_command([kaggle, 'datasets', 'create', '-p', str(folder), '-r', 'zip'])}   # if it does not")
        log.info(f"  {shown_command(push_cmd)}")
        return 0

    pinned: dict[str, str] = {}
    uploaded = {} if uploaded is None else uploaded
    for ref, folder in datasets:
        if base_ref(ref) in uploaded:
            log.info(f"dataset {base_ref(ref)} was uploaded by this command already")
            pinned[ref] = uploaded[base_ref(ref)]
            continue
        try:
            before = dataset_state(runner, kaggle, ref)
        except KaggleError as exc:
            log.error(f"error: {exc}; the kernel was not pushed")
            return 1
        n_files, n_bytes = folder_size(folder)
        log.info(f"{'updating' if before.exists else 'creating'} dataset {base_ref(ref)} "
              f"({n_files} files, {n_bytes / 2**20:.1f} MB)")
        cmd = ([kaggle, "datasets", "version", "-p", str(folder), "-r", "zip", "-m", f"kseg {stamp}"]
               if before.exists else [kaggle, "datasets", "create", "-p", str(folder), "-r", "zip"])
        ok, _ = _run_cli(runner, cmd)
        if not ok:
            log.error(f"error: uploading dataset {base_ref(ref)} failed; the kernel was not pushed")
            return 1
        try:
            outcome, version = _wait_until_ready(runner, kaggle, ref, before.version if before.exists else None,
                                                 sleep, dataset_timeout)
        except KaggleError as exc:
            log.error(f"error: {exc}; the kernel was not pushed")
            return 1
        if outcome == "failed":
            log.error(f"error: dataset {base_ref(ref)} failed on Kaggle; the kernel was not pushed")
            return 1
        if outcome == "timeout":
            if not push_on_timeout:
                log.error("error: the kernel was not pushed, because it would run on the old version or none: run "
                      "the push again when the dataset is ready, or pass --push-on-timeout")
                return 1
            warn("pushing anyway (--push-on-timeout); the kernel may see the previous version")
            uploaded[base_ref(ref)] = base_ref(ref)
            continue
        pinned[ref] = uploaded[base_ref(ref)] = f"{base_ref(ref)}/{version}" if version else base_ref(ref)
    if any(ref != new for ref, new in pinned.items()):
        _pin_dataset_sources(kernel_dir, meta, pinned)
    ok, output = _run_cli(runner, push_cmd)
    if not ok:
        log.error(f"error: kaggle kernels push failed for {meta['id']}")
        return 1
    _print_next_steps(kernel_dir, meta, output)
    return 0


def push_many(kernel_dirs: Sequence[Path], dry_run: bool = False, runner: Runner = subprocess.run,
              **options: Any) -> int:
    """Push several kernels in one command (``kseg kernel push kernels/NAME-train-fold*``): a dataset they
    share, the code dataset, is uploaded and waited for once. Stops at the first failure."""
    uploaded: dict[str, str] = {}
    for position, kernel_dir in enumerate(kernel_dirs, start=1):
        if len(kernel_dirs) > 1:
            log.info(f"=== {position}/{len(kernel_dirs)}: {kernel_dir}")
        code = push(kernel_dir, dry_run, runner, uploaded=uploaded, **options)
        if code != 0:
            left = [str(k) for k in kernel_dirs[position:]]
            if left:
                log.error(f"error: stopped; not pushed: {', '.join(left)}")
            return code
    return 0


def _print_next_steps(kernel_dir: Path, meta: Mapping[str, Any], push_output: str) -> None:
    ref = meta["id"]
    match = _PUSHED_VERSION.search(push_output)
    version = match.group(1) if match else "<VERSION>"
    sidecar_path = kernel_dir / SIDECAR
    kind = json.loads(sidecar_path.read_text()).get("kind") if sidecar_path.is_file() else "infer"
    log.info(f"follow the run: kaggle kernels status {ref}")
    if kind == "train":
        slug = ref.split("/")[1]
        log.info("when it is complete, build the inference kernel with --from-kernels; to try it with run-local, "
              f"first fetch this output: kaggle kernels output {ref} -p {kernel_dir.parent / OUTPUTS_DIR / slug}")
        return
    competition = (meta.get("competition_sources") or ["<COMPETITION>"])[0]
    log.info("when it is complete, submit its output:")
    log.info("  " + shlex.join(["kaggle", "competitions", "submit", competition, "-k", ref, "-f", "submission.csv",
                             "-v", version, "-m", f"kseg {ref} v{version}"]))
