"""``kseg kernel run-local``: run a built kernel the way Kaggle would, on a Kaggle-like temporary tree with
the network cut off and, with ``--clean-env``, in a venv of the Kaggle image's Python and pins.
"""
from __future__ import annotations

import collections
import functools
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

from ..config import Config, with_values
from ..errors import ConfigError, warn
from ..run import RunDir
from .bundle import pip_failure
from .rules import KERNEL_METADATA, LAYOUTS, SIDECAR, base_ref, raise_if_problems, validate_kernel_dir

log = logging.getLogger(__name__)

# Where run-local looks for a downloaded train-kernel output (`kaggle kernels output ... -p`).
OUTPUTS_DIR = "outputs"
LOCAL_RUNS_DIR = ".run-local"
# The "Kaggle image" stand-in (see kernels/README.md) and where run-local --clean-env caches its venvs.
KAGGLE_IMAGE_REQUIREMENTS = Path(__file__).resolve().parents[3] / "kernels" / "kaggle-image-requirements.txt"
IMAGE_VENVS_DIR = ".kaggle-image-venvs"
# The Python of Kaggle's image today; the stand-in venv is built with it when one is found.
KAGGLE_IMAGE_PYTHON = "3.12"

NETWORK_GUARD_MESSAGE = "network disabled by kseg run-local"
TAIL_LINES = 40

# Run-time limit of most code competitions (GPU kernels); run-local compares a scale test against it.
DEFAULT_TIME_LIMIT_S = 9 * 3600.0

# ---------------------------------------------------------------------------------------- run-local

@dataclass
class LocalRunReport:
    """Outcome of :func:`run_local`; ``ok`` only when the kernel exited 0 and left a valid output."""

    ok: bool
    returncode: int | None
    wall_s: float
    peak_mem_mb: float | None  # None when the kernel was killed at the time limit
    submission_path: Path | None
    problems: list[str] = field(default_factory=list)
    stdout_tail: str = ""
    stderr_tail: str = ""
    network: str = ""
    input_mode: str = ""
    layout: str = "current"
    n_test_images: int = 0
    scale_test: int = 1
    time_limit_s: float = DEFAULT_TIME_LIMIT_S

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        if self.returncode is None:
            ended = "killed at the time limit"
        else:
            ended = f"exit code {self.returncode}, peak memory {self.peak_mem_mb or 0:.0f} MB"
        lines = [f"run-local {verdict}: {self.wall_s:.1f}s wall, {ended}, network off via {self.network}",
                 f"inputs: {self.layout} layout, {self.input_mode}"]
        if self.submission_path is not None:
            lines.append(f"submission: {self.submission_path}")
        if self.scale_test > 1 and self.n_test_images and self.returncode is not None:
            per_image = self.wall_s / self.n_test_images
            lines.append(
                f"scale test: {self.n_test_images} test images ({self.scale_test}x the public set) in "
                f"{self.wall_s:.1f}s = {per_image:.2f}s per image (start-up included), peak memory "
                f"{self.peak_mem_mb or 0:.0f} MB; a hidden set of that size would use "
                f"{100 * self.wall_s / self.time_limit_s:.1f}% of the {self.time_limit_s / 3600:g} h limit at "
                f"this machine's speed (1 h = {3600 / per_image:.0f} images)")
        lines += [f"  problem: {p}" for p in self.problems]
        if not self.ok and self.stderr_tail:
            lines += ["kernel stderr (last lines):", *("  " + line for line in self.stderr_tail.splitlines())]
        return "\n".join(lines)


_GUARD_SOURCE = f'''"""Installed by `kseg kernel run-local`: a Kaggle submission kernel has no internet, so any non-AF_UNIX
socket connection fails here as it would there, instead of silently working on the developer's machine."""
import errno
import socket


def _guard(original):
    def guarded(self, *args, **kwargs):
        if self.family != socket.AF_UNIX:
            raise OSError(errno.ENETUNREACH, "{NETWORK_GUARD_MESSAGE}")
        return original(self, *args, **kwargs)
    return guarded


for _name in ("connect", "connect_ex", "sendto"):
    setattr(socket.socket, _name, _guard(getattr(socket.socket, _name)))
'''


@functools.lru_cache(maxsize=1)
def unshare_works() -> bool:
    """Whether ``unshare -rn`` (a private, empty network namespace, no root needed) works on this machine."""
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=1)
def read_only_mounts_work() -> bool:
    """Whether ``unshare -rnm`` can bind-mount a folder read-only, as Kaggle's /kaggle/input is."""
    if not unshare_works():
        return False
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kseg-mount-probe-") as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        script = (f"mount --bind {shlex.quote(tmp)}/a {shlex.quote(tmp)}/b && "
                  f"mount -o remount,bind,ro {shlex.quote(tmp)}/b && ! touch {shlex.quote(tmp)}/b/x 2>/dev/null")
        try:
            return subprocess.run(["unshare", "-rnm", "sh", "-c", script], capture_output=True,
                                  timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


# Variables a kernel inherits from the developer's shell; everything else (HOME, caches, PYTHONPATH, pip and
# Keras settings, credentials) stays behind, as on a fresh Kaggle session.
_KEPT_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "LD_LIBRARY_PATH",
             "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")


def _kernel_env(root: Path, guard_dir: Path) -> dict[str, str]:
    """A minimal environment: the few variables of :data:`_KEPT_ENV`, a fresh HOME and TMPDIR inside the
    run tree (no inherited pip/Keras/matplotlib caches), the Kaggle root and the socket guard."""
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env.update({"HOME": str(root / "home"), "TMPDIR": str(root / "tmp"), "KSEG_KAGGLE_ROOT": str(root),
                "PYTHONPATH": str(guard_dir), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
                "MPLBACKEND": "Agg"})
    return env


def input_mount(layout: str, kind: str, ref: str) -> Path:
    """Where Kaggle mounts an input, relative to ``/kaggle/input``, under ``layout`` (see :data:`LAYOUTS`).
    ``kind``: ``competition`` (``ref`` is the slug), ``dataset`` or ``kernel`` (``owner/slug[/version]``)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout {layout!r} must be one of {', '.join(LAYOUTS)}")
    parts = ref.split("/")
    slug = parts[0] if kind == "competition" else parts[1]
    if layout == "legacy":
        return Path(slug)
    nested = {"competition": "competitions", "dataset": "datasets", "kernel": "notebooks"}[kind]
    return Path(nested, slug) if kind == "competition" else Path(nested, parts[0], slug)


def _source_folder(ref: str, default: Path, extra: Mapping[str, Path]) -> Path:
    """The local folder standing in for an input: the caller's mapping (by ref or slug), else ``default``."""
    slug = ref.split("/")[1]
    for key in (ref, base_ref(ref), slug):
        if key in extra:
            return Path(extra[key]).resolve()
    return default


def _input_folders(kernel_dir: Path, meta: Mapping[str, Any], input_dir: Path,
                   extra: Mapping[str, Path]) -> list[tuple[str, str, Path]]:
    """(kind, ref, local folder) of every input of the kernel; raises when a folder is missing."""
    competitions = meta.get("competition_sources") or []
    if len(competitions) != 1:
        raise ConfigError(f"{kernel_dir / KERNEL_METADATA}: run-local mounts the input folder as the one "
                          f"competition source, but competition_sources is {competitions!r}")
    inputs = [("competition", competitions[0], input_dir)]
    for ref in meta.get("dataset_sources") or []:
        inputs.append(("dataset", ref, _source_folder(ref, kernel_dir.parent / ref.split("/")[1], extra)))
    for ref in meta.get("kernel_sources") or []:
        slug = ref.split("/")[1]
        inputs.append(("kernel", ref, _source_folder(ref, kernel_dir.parent / OUTPUTS_DIR / slug, extra)))
    missing = [f"{ref.split('/')[1] if '/' in ref else ref}: folder {folder} not found"
               for _, ref, folder in inputs if not folder.is_dir()]
    if missing:
        raise ConfigError("run-local needs a local folder for every kernel input (kernel outputs: "
                          f"kaggle kernels output OWNER/SLUG -p {kernel_dir.parent / OUTPUTS_DIR}/SLUG, "
                          "or pass extra_datasets={slug: folder}):\n  - " + "\n  - ".join(missing))
    return inputs


def _lay_out_tree(inputs: Sequence[tuple[str, str, Path]], root: Path, layout: str,
                  read_only: bool) -> list[tuple[Path, Path]]:
    """``root/input/...`` in ``layout``, ``root/working`` empty as on a fresh Kaggle session. Returns the
    (mount point, folder) pairs: with ``read_only`` the mount points are empty folders that the kernel's
    mount namespace bind-mounts read-only; otherwise they are symlinks to the folders."""
    for sub in ("input", "working", "guard", "tmp", "home"):
        if (root / sub).exists():
            shutil.rmtree(root / sub)
        (root / sub).mkdir(parents=True)
    mounts = []
    for kind, ref, folder in inputs:
        point = root / "input" / input_mount(layout, kind, ref)
        point.parent.mkdir(parents=True, exist_ok=True)
        if read_only:
            point.mkdir()
        else:
            point.symlink_to(folder.resolve(), target_is_directory=True)
        mounts.append((point, folder.resolve()))
    (root / "guard" / "sitecustomize.py").write_text(_GUARD_SOURCE)
    return mounts


def _mount_script(input_root: Path, mounts: Sequence[tuple[Path, Path]]) -> str:
    """Shell lines run inside ``unshare -rnm``: /kaggle/input and every input bind-mounted read-only."""
    q = shlex.quote
    lines = ["set -e", f"mount --bind {q(str(input_root))} {q(str(input_root))}",
             f"mount -o remount,bind,ro {q(str(input_root))}"]
    for point, folder in mounts:
        lines += [f"mount --rbind {q(str(folder))} {q(str(point))}", f"mount -o remount,bind,ro {q(str(point))}"]
    return "\n".join([*lines, 'exec "$@"'])


def _scaled_competition(source: Path, cfg: Config, factor: int, dest: Path) -> Path:
    """A copy of the competition folder whose test images are repeated ``factor`` times under new ids
    (``<id>__x<k>``, symlinks to the originals), with a matching sample submission, to measure memory and
    run time on a hidden test set larger than the public one."""
    from ..config import data_path
    from ..data import list_test_images, read_csv, schema_from_config

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    probe = with_values(cfg, {"data.root": str(source)})
    tests = list_test_images(probe)
    test_dir, sample = data_path(probe, "test_dir"), data_path(probe, "sample_submission")
    skip = {p for p in (test_dir, sample) if p is not None}
    for entry in sorted(source.iterdir()):
        if entry not in skip:
            (dest / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    rel_test = test_dir.relative_to(source)
    (dest / rel_test).mkdir(parents=True)
    new_ids = []
    for image_id, path in tests:
        for k in range(factor):
            new_id = image_id if k == 0 else f"{image_id}__x{k}"
            (dest / rel_test / f"{new_id}{path.suffix}").symlink_to(path.resolve())
            new_ids.append((image_id, new_id))
    if sample is not None and sample.is_file():
        id_col = schema_from_config(probe).submission_cols[0]
        frame = read_csv(sample, "sample submission")
        rows = frame.set_index(id_col, drop=False)
        scaled = []
        for image_id, new_id in new_ids:
            part = rows.loc[[image_id]].copy()
            part[id_col] = new_id
            scaled.append(part)
        import pandas as pd

        pd.concat(scaled).to_csv(dest / sample.relative_to(source), index=False)
    log.info(f"scale test: {len(tests)} test images x {factor} = {len(new_ids)} in {dest}")
    return dest


def _pump(stream: IO[str], sink: IO[str] | None, tail: collections.deque, log: Path) -> None:
    with open(log, "w") as full:  # the whole stream, like the log Kaggle keeps of a run
        for line in stream:
            tail.append(line.rstrip("\n"))
            full.write(line)
            if sink is not None:
                sink.write(line)
                sink.flush()


# Runs the kernel as its child and records the children's peak RSS. A process forked from this (large)
# Python process carries its parent's resident size as the floor of its own ru_maxrss, even across exec,
# so the measurement is taken one level down, below a small launcher.
_LAUNCHER = """import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as stats:
    stats.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code if code >= 0 else 128 - code)
"""


def _run_process(cmd: list[str], cwd: Path, env: Mapping[str, str], timeout: float, stats: Path,
                 echo: bool) -> tuple[int | None, float, float | None, str, str]:
    """Run ``cmd`` below the launcher in its own process group, streaming its output; return (exit code
    or None when killed at ``timeout``, wall seconds, peak RSS in MB or None when killed, stdout tail,
    stderr tail). The full streams go to ``kernel-stdout.log`` and ``kernel-stderr.log`` next to ``stats``."""
    tails = {name: collections.deque(maxlen=TAIL_LINES) for name in ("out", "err")}
    stats.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(stats), *cmd], cwd=cwd, env=dict(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, sys.stdout if echo else None, tails["out"],
                                                  stats.parent / "kernel-stdout.log"), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, sys.stderr if echo else None, tails["err"],
                                                  stats.parent / "kernel-stderr.log"), daemon=True)]
    for thread in pumps:
        thread.start()
    code: int | None
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the kernel and anything it started
        proc.wait()
        code = None
    wall = time.perf_counter() - start
    for thread in pumps:
        thread.join(5)
    peak_mb = int(stats.read_text()) / 1024 if code is not None and stats.is_file() else None  # KiB on Linux
    return code, wall, peak_mb, "\n".join(tails["out"]), "\n".join(tails["err"])




def _python_version(python: Path) -> str | None:
    """``X.Y`` of an interpreter, or None when it does not run (a pyenv shim of a version not selected
    prints an error and exits non-zero)."""
    try:
        result = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def python_candidates(version: str = KAGGLE_IMAGE_PYTHON) -> list[Path]:
    """Where a ``python<version>`` may be, in order: on PATH, pyenv's versions (``$PYENV_ROOT`` or
    ``~/.pyenv``, newest patch first), what ``uv python find`` reports, /usr/local/bin and /usr/bin."""
    found: list[Path] = []
    on_path = shutil.which(f"python{version}")
    if on_path:
        found.append(Path(on_path))
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    patches = sorted((pyenv_root / "versions").glob(f"{version}*/bin/python{version}"),
                     key=lambda p: [int(x) if x.isdigit() else -1 for x in p.parents[1].name.split(".")],
                     reverse=True)
    found += patches
    found += _uv_python(version)
    found += [Path(f"/usr/local/bin/python{version}"), Path(f"/usr/bin/python{version}")]
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _uv_python(version: str) -> list[Path]:
    """The interpreter ``uv python find`` reports for ``version`` (without downloading), if uv is installed and
    answers; an absent or failing uv leaves the other candidates."""
    if not shutil.which("uv"):
        return []
    try:
        uv = subprocess.run(["uv", "python", "find", "--no-python-downloads", version],
                            capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [Path(uv.stdout.strip().splitlines()[-1])] if uv.returncode == 0 and uv.stdout.strip() else []


def find_python(version: str = KAGGLE_IMAGE_PYTHON) -> Path | None:
    """The first of :func:`python_candidates` that runs and reports ``version``, or None."""
    return next((p for p in python_candidates(version) if p.is_file() and _python_version(p) == version), None)


def kaggle_image_venv(cache_root: Path, requirements: Path = KAGGLE_IMAGE_REQUIREMENTS,
                      base_python: Path | None = None) -> Path:
    """The python of a fresh venv built from ``requirements`` by ``base_python`` (default: a Python 3.12,
    Kaggle's version, found by :func:`find_python`, else this interpreter with a warning): a "Kaggle image"
    without kseg's bundled packages, in which a run-local proves the kernel's offline install. Cached under
    ``cache_root`` by the hash of the requirements and the interpreter, so only the first build needs the
    package index. Raises :class:`PackageIndexUnreachable` when that build cannot reach the index."""
    import hashlib

    if not Path(requirements).is_file():
        raise ConfigError(f"requirements file {requirements} not found (kernels/kaggle-image-requirements.txt)")
    base = Path(base_python) if base_python else find_python()
    if base is None:
        base = Path(sys.executable)
        warn(f"no Python {KAGGLE_IMAGE_PYTHON} found (looked at "
              f"{', '.join(map(str, python_candidates())) or 'nothing'}): the venv uses {base}; Kaggle's image "
              f"runs {KAGGLE_IMAGE_PYTHON} (--base-python)")
    version = _python_version(base)
    if version is None:
        raise ConfigError(f"base interpreter {base} does not run (for a pyenv shim, pass the interpreter under "
                          "$(pyenv root)/versions/ instead)")
    if version != KAGGLE_IMAGE_PYTHON:
        warn(f"the venv uses Python {version} ({base}); Kaggle's image runs {KAGGLE_IMAGE_PYTHON} "
              "(--base-python)")
    key = hashlib.sha1(Path(requirements).read_bytes() + str(base).encode()).hexdigest()[:12]
    venv = Path(cache_root) / f"py{version}-{key}"
    python = venv / "bin" / "python"
    if (venv / ".complete").is_file():
        return python
    if venv.exists():
        shutil.rmtree(venv)
    log.info(f"building the Kaggle-image venv {venv} from {requirements} (Python {version}; needs the index once)")
    for cmd in ([str(base), "-m", "venv", str(venv)],
                [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise pip_failure(cmd, (result.stdout or "") + (result.stderr or ""),
                               "could not build the Kaggle-image venv")
    (venv / ".complete").write_text(version + "\n")
    return python


def _validation_config(kernel_dir: Path, inputs: Sequence[tuple[str, str, Path]], input_dir: Path) -> Config:
    """The experiment config the kernel runs (``config.yaml`` of its code dataset), reading ``input_dir``."""
    from ..config import load_config

    for kind, _, folder in inputs:
        if kind == "dataset" and (folder / "config.yaml").is_file():
            cfg = load_config(folder / "config.yaml")
            cfg.data.root = str(input_dir)
            return cfg
    raise ConfigError(f"{kernel_dir}: no dataset source holds a config.yaml, so the submission cannot be "
                      "checked against the test images (build the kernel with kseg kernel build)")


def _expected_shapes(cfg: Config) -> dict[str, tuple[int, int]]:
    from ..data import image_size, list_test_images

    return {image_id: image_size(path) for image_id, path in list_test_images(cfg)}


def run_local(kernel_dir: Path, input_dir: Path, timeout: float = 3600,
              extra_datasets: Mapping[str, Path] | None = None, *, python: Path | None = None,
              work_dir: Path | None = None, echo: bool = True, layout: str = "current",
              scale_test: int = 1, time_limit: float = DEFAULT_TIME_LIMIT_S) -> LocalRunReport:
    """Run a built kernel as Kaggle would and check what it leaves behind.

    The kernel runs in a fresh interpreter (``python``, default this one; see kernels/README.md for a
    clean "Kaggle image" venv) with ``KSEG_KAGGLE_ROOT`` pointing at ``work_dir`` (default
    ``<kernels>/.run-local/<slug>``), cwd ``working/``, a fresh HOME, no user site, no inherited
    PYTHONPATH, caches or Kaggle credentials, no network (``unshare -rn`` when available, and always a socket
    guard), ``input/`` read-only (bind mounts in a private mount namespace when the machine allows it) and
    a wall-clock limit. Inputs are laid out as Kaggle mounts them (``layout``: ``current`` or ``legacy``,
    see :data:`LAYOUTS`). Every dataset listed in the metadata is looked up next to the kernel
    (``<kernels>/<slug>``), every kernel source in ``<kernels>/outputs/<slug>``; ``extra_datasets`` maps a
    slug to another folder. An infer kernel must leave a ``submission.csv`` that passes
    :func:`kseg.submission.validate_submission` for the test images of ``input_dir`` (repeated
    ``scale_test`` times under new ids, to measure memory and time on a larger hidden set against
    ``time_limit``); a train kernel its fold's ``best.weights.h5``. Relative paths are resolved first.
    """
    kernel_dir, input_dir = Path(kernel_dir).resolve(), Path(input_dir).resolve()
    raise_if_problems(validate_kernel_dir(kernel_dir), f"kernel {kernel_dir} is invalid")
    if python is not None:
        python = Path(os.path.abspath(python))  # not resolve(): a venv's python is a symlink to the base one
        if not python.is_file():
            raise ConfigError(f"python interpreter {python} not found (see kernels/README.md for the "
                              "Kaggle-image venv)")
    if not isinstance(scale_test, int) or scale_test < 1:
        raise ConfigError(f"--scale-test must be a positive integer, got {scale_test!r}")
    meta = json.loads((kernel_dir / KERNEL_METADATA).read_text())
    sidecar_path = kernel_dir / SIDECAR
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
    kind = sidecar.get("kind", "infer")
    root = Path(work_dir).resolve() if work_dir else kernel_dir.parent / LOCAL_RUNS_DIR / kernel_dir.name
    inputs = _input_folders(kernel_dir, meta, input_dir, extra_datasets or {})
    input_mount(layout, "competition", "x")  # reject a bad layout before anything is written

    expected: dict[str, tuple[int, int]] = {}
    cfg: Config | None = None
    if kind == "infer":  # fail on a wrong input folder now, not after an hour of inference
        cfg = _validation_config(kernel_dir, inputs, input_dir)
        if scale_test > 1:
            scaled = _scaled_competition(input_dir, cfg, scale_test, root / "scaled-input")
            inputs[0] = ("competition", inputs[0][1], scaled)
            cfg.data.root = str(scaled)
        expected = _expected_shapes(cfg)
    elif scale_test > 1:
        raise ConfigError("--scale-test repeats the test images of an inference kernel; this is a train kernel")

    read_only = read_only_mounts_work()
    mounts = _lay_out_tree(inputs, root, layout, read_only)
    working = root / "working"
    if read_only:
        network = "unshare -rnm + socket guard"
        input_mode = "input/ read-only (bind mounts)"
        prefix = ["unshare", "-rnm", "sh", "-c", _mount_script(root / "input", mounts), "kseg-run-local"]
    else:
        network = "unshare -rn + socket guard" if unshare_works() else "socket guard only (unshare -rn unavailable)"
        input_mode = "input/ symlinks, NOT read-only (no mount namespace here)"
        prefix = ["unshare", "-rn"] if unshare_works() else []
    cmd = [*prefix, str(python or sys.executable), "-u", str((kernel_dir / meta["code_file"]).resolve())]
    code, wall, peak_mb, out_tail, err_tail = _run_process(
        cmd, working, _kernel_env(root, root / "guard"), timeout, root / "peak_rss_kib", echo)

    problems = []
    if code is None:
        problems.append(f"timed out after {timeout:g}s (Kaggle stops a kernel at its run-time limit)")
    elif code != 0:
        problems.append(f"the kernel exited with code {code} (its traceback is in the stderr tail)")
    submission = None
    if kind == "infer":
        assert cfg is not None
        submission = working / "submission.csv"
        if not submission.is_file():
            problems.append(f"submission.csv not found in {working}")
            submission = None
        else:
            from ..data import n_classes_of, schema_from_config
            from ..submission import validate_submission

            problems += validate_submission(submission, schema_from_config(cfg), expected, cfg.data.task,
                                            n_classes_of(cfg))
    else:
        weights = RunDir(working / "run").weights(int(sidecar["fold"]))
        if not weights.is_file():
            problems.append(f"{weights.relative_to(root)} not found: the train kernel produced no weights")
    report = LocalRunReport(ok=not problems, returncode=code, wall_s=wall,
                            peak_mem_mb=peak_mb, submission_path=submission, problems=problems,
                            stdout_tail=out_tail, stderr_tail=err_tail, network=network, input_mode=input_mode,
                            layout=layout, n_test_images=len(expected), scale_test=scale_test,
                            time_limit_s=time_limit)
    log.info(report.summary())
    return report

