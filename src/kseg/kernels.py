"""Kaggle kernels: build the offline kernel and the datasets it reads, run it locally the way Kaggle would,
push it with the official ``kaggle`` CLI.

A code competition scores a notebook that runs with the internet off and writes
``/kaggle/working/submission.csv``. Everything the kernel needs therefore travels as Kaggle datasets, and
everything is checked here first, because a failed Kaggle run costs an hour and a submission slot.

Layout written under ``out_root`` (default ``kernels/``); Kaggle mounts the inputs under ``/kaggle/input`` in
one of the layouts of :data:`LAYOUTS`, and the kernel finds each (or its ``kseg-dataset.json``) in any:

- ``<name>-infer/`` and ``<name>-train-fold{K}/``: ``kernel-metadata.json``, ``kernel.py`` (the entry point)
  and ``kseg-kernel.json`` (what kseg built, read by run-local and push; Kaggle uploads only ``kernel.py``).
- ``<name>-kseg-code/``: dataset with ``kseg/`` (this package's source), ``wheels/`` (packages the Kaggle
  image lacks, tf-keras for each of :data:`TF_KERAS_MINORS`), ``config.yaml`` (the resolved experiment),
  ``assets/`` (local encoder weight files) and ``kseg-dataset.json``.
- ``<name>-kseg-weights/``: dataset with ``fold{K}/best.weights.h5``, ``postprocess.json``,
  ``channels.json``, ``plan.json``, ``config.yaml``, ``folds.csv`` and ``env.json`` of the run (copies), and
  the marker.
"""
from __future__ import annotations

import collections
import functools
import importlib.metadata
import json
import logging
import os
import pprint
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence

import kseg

from .config import Config, dump
from .config import get as config_get
from .errors import ConfigError, KaggleError, warn
from .files import write_json, write_text
from .plan import planned_folds
from .run import RUN_FILES_OPTIONAL, RUN_FILES_REQUIRED, RunDir

log = logging.getLogger(__name__)

KINDS = ("infer", "train")
KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"
SIDECAR = "kseg-kernel.json"
CODE_FILE = "kernel.py"
# Where run-local looks for a downloaded train-kernel output (`kaggle kernels output ... -p`).
OUTPUTS_DIR = "outputs"
LOCAL_RUNS_DIR = ".run-local"
# The "Kaggle image" stand-in (see kernels/README.md) and where run-local --clean-env caches its venvs.
KAGGLE_IMAGE_REQUIREMENTS = Path(__file__).resolve().parents[2] / "kernels" / "kaggle-image-requirements.txt"
IMAGE_VENVS_DIR = ".kaggle-image-venvs"
# The Python of Kaggle's image today; the stand-in venv is built with it when one is found.
KAGGLE_IMAGE_PYTHON = "3.12"
# Written into each dataset kseg builds (and into a train kernel's output), so the kernel finds its inputs by
# content wherever Kaggle mounts them.
MARKER = "kseg-dataset.json"
# How Kaggle mounts a kernel's inputs under /kaggle/input. "current": what kernels pushed with the CLI see
# today (competitions/<slug>, datasets/<owner>/<slug>, notebooks/<owner>/<slug>); "legacy": everything flat
# at /kaggle/input/<slug>. The kernel looks in both (and for MARKER); run-local builds either.
LAYOUTS = ("current", "legacy")

# Rules of the kaggle CLI (kaggle_api_extended.kernels_push / dataset_create_new) and the Kaggle docs.
LANGUAGES = ("python", "r", "rmarkdown")
KERNEL_TYPES = ("script", "notebook")
KERNEL_FLAGS = ("is_private", "enable_gpu", "enable_tpu", "enable_internet")
# `--accelerator` of `kseg kernel build` → the metadata's machine_shape (the values kagglesdk's
# ApiSaveKernelRequest documents); the kaggle CLI sends machine_shape, which overrides enable_gpu/enable_tpu.
ACCELERATORS: dict[str, str | None] = {"none": None, "gpu": "NvidiaTeslaT4", "gpu-t4": "NvidiaTeslaT4",
                                       "gpu-p100": "NvidiaTeslaP100", "tpu": "Tpu1VmV38"}
MACHINE_SHAPES = frozenset(shape for shape in ACCELERATORS.values() if shape)
MIN_KERNEL_TITLE = 5
MIN_KERNEL_SLUG = 5
DATASET_TITLE_RANGE = (6, 50)
DATASET_SLUG_RANGE = (6, 50)
DATASET_LICENSES = frozenset({
    "CC0-1.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC-BY-NC-SA-4.0", "GPL-2.0", "ODbL-1.0", "DbCL-1.0",
    "copyright-authors", "other", "unknown", "CC-BY-4.0", "CC-BY-NC-4.0", "PDDL", "CC-BY-3.0",
    "CC-BY-3.0-IGO", "US-Government-Works", "CC-BY-NC-SA-3.0-IGO", "CDLA-Permissive-1.0",
    "CDLA-Sharing-1.0", "CC-BY-ND-4.0", "CC-BY-NC-ND-4.0", "ODC-BY-1.0", "LGPL-3.0", "AGPL-3.0",
    "FDL-1.3", "EU-ODP-Legal-Notice", "apache-2.0", "GPL-3.0",
})
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_OWNER = re.compile(r"^[a-z0-9]+(?:[_-][a-z0-9]+)*$")

# Distributions the Kaggle image may lack → the module each one provides. The code dataset carries their
# wheels; the kernel installs, offline, only those it cannot import.
BUNDLED: dict[str, str] = {
    "segmentation-models": "segmentation_models",
    "image-classifiers": "classification_models",
    "efficientnet": "efficientnet",
    "keras-applications": "keras_applications",
    "tf-keras": "tf_keras",
}
# tf-keras must have the minor version of the image's TensorFlow (2.21 needs TF 2.21, and its protobuf
# gencode fails against another TF's runtime). The code dataset bundles one wheel per recent minor; the
# kernel picks the one matching the TensorFlow it finds.
TF_KERAS_MINORS = ("2.18", "2.19", "2.20", "2.21")
# Files of a run directory the inference kernel needs besides the fold weights.
# Config keys that may name a local file; the code dataset bundles the file so a kernel finds it offline.
ASSET_KEYS = ("model.encoder_weights", "model.init_from")

NETWORK_GUARD_MESSAGE = "network disabled by kseg run-local"
TAIL_LINES = 40
DATASET_READY_TIMEOUT_S = 600.0
# Run-time limit of most code competitions (GPU kernels); run-local compares a scale test against it.
DEFAULT_TIME_LIMIT_S = 9 * 3600.0
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


# --------------------------------------------------------------------------------------------- names

def slugify(text: str) -> str:
    """The slug Kaggle derives from a title: ASCII, lowercase, runs of other characters → one dash."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower().replace("'", "")).strip("-")


def title_for(slug: str) -> str:
    """A title whose slug is ``slug`` (Kaggle renames a kernel whose title and id disagree)."""
    return slug.replace("-", " ")


@dataclass(frozen=True)
class KernelNames:
    """The Kaggle slugs of one experiment's kernels and datasets, all derived from ``cfg['name']``."""

    owner: str
    base: str

    @classmethod
    def for_config(cls, cfg: Config, owner: str) -> "KernelNames":
        if not owner or not _OWNER.match(owner):
            raise ConfigError(f"Kaggle owner {owner!r} is not a Kaggle user name (lowercase letters, digits, "
                              "'-' or '_'): pass --owner <your Kaggle user name>")
        base = slugify(str(cfg["name"]))
        if not base:
            raise ConfigError(f"config name {cfg['name']!r} gives an empty Kaggle slug: set name: to letters/digits")
        return cls(owner, base)

    @property
    def code_dataset(self) -> str:
        return f"{self.base}-kseg-code"

    @property
    def weights_dataset(self) -> str:
        return f"{self.base}-kseg-weights"

    @property
    def infer_kernel(self) -> str:
        return f"{self.base}-infer"

    def train_kernel(self, fold: int) -> str:
        return f"{self.base}-train-fold{fold}"

    def ref(self, slug: str) -> str:
        return f"{self.owner}/{slug}"


# ---------------------------------------------------------------------------------------- validation

def _ref_problems(ref: Any, what: str, min_slug: int = 1, max_slug: int | None = None,
                  allow_version: bool = False) -> list[str]:
    """Problems of an ``owner/slug`` reference as the kaggle CLI and the Kaggle server see them."""
    if not isinstance(ref, str) or "/" not in ref:
        return [f"{what} {ref!r} must be shaped 'owner/slug'"]
    parts = ref.split("/")
    if len(parts) > (3 if allow_version else 2):
        return [f"{what} {ref!r} must be shaped 'owner/slug'"]
    owner, slug = parts[0], parts[1]
    problems = []
    if not _OWNER.match(owner):
        problems.append(f"{what} {ref!r}: owner {owner!r} must be lowercase letters, digits, '-' or '_'")
    if not _SLUG.match(slug):
        problems.append(f"{what} {ref!r}: slug {slug!r} must be lowercase letters and digits joined by single '-'")
    if len(slug) < min_slug or (max_slug is not None and len(slug) > max_slug):
        limit = f"{min_slug} to {max_slug}" if max_slug else f"at least {min_slug}"
        problems.append(f"{what} {ref!r}: slug must be {limit} characters long, got {len(slug)}")
    return problems


def kernel_metadata_problems(meta: Mapping[str, Any], folder: Path | None = None) -> list[str]:
    """Everything ``kaggle kernels push`` would reject, plus the silent traps (title/slug mismatch renames
    the kernel; a missing ``enable_internet`` means internet ON, which a code competition refuses).
    ``folder`` given → the code file must exist in it."""
    problems = _ref_problems(meta.get("id"), "id", min_slug=MIN_KERNEL_SLUG)
    title = meta.get("title")
    if not isinstance(title, str) or len(title) < MIN_KERNEL_TITLE:
        problems.append(f"title {title!r} must be at least {MIN_KERNEL_TITLE} characters")
    elif isinstance(meta.get("id"), str) and "/" in meta["id"]:
        slug = meta["id"].split("/")[1]
        if slugify(title) != slug:
            problems.append(f"title {title!r} gives the slug {slugify(title)!r} but id says {slug!r} "
                            "(Kaggle derives the slug from the title)")
    code_file = meta.get("code_file")
    if not isinstance(code_file, str) or not code_file:
        problems.append("code_file is missing")
    elif folder is not None and not (folder / code_file).is_file():
        problems.append(f"code_file {code_file!r} not found at {folder / code_file}")
    if meta.get("language") not in LANGUAGES:
        problems.append(f"language {meta.get('language')!r} must be one of {', '.join(LANGUAGES)}")
    if meta.get("kernel_type") not in KERNEL_TYPES:
        problems.append(f"kernel_type {meta.get('kernel_type')!r} must be one of {', '.join(KERNEL_TYPES)}")
    for flag in KERNEL_FLAGS:
        value = meta.get(flag)
        if flag == "enable_internet" and value is None:
            problems.append("enable_internet must be written explicitly (the kaggle CLI defaults it to true)")
        elif value is not None and value not in (True, False, "true", "false"):
            problems.append(f"{flag} must be true or false, got {value!r}")
    shape = meta.get("machine_shape")
    if shape not in (None, "") and shape not in MACHINE_SHAPES:
        problems.append(f"machine_shape {shape!r} must be one of {', '.join(sorted(MACHINE_SHAPES))}")
    for key in ("dataset_sources", "competition_sources", "kernel_sources", "model_sources"):
        if not isinstance(meta.get(key, []), list):
            problems.append(f"{key} must be a list, got {meta.get(key)!r}")
    for ref in meta.get("dataset_sources") or []:
        problems += _ref_problems(ref, "dataset source", allow_version=True)
    for ref in meta.get("kernel_sources") or []:
        problems += _ref_problems(ref, "kernel source", min_slug=MIN_KERNEL_SLUG, allow_version=True)
    for slug in meta.get("competition_sources") or []:
        if not isinstance(slug, str) or not _SLUG.match(slug):
            problems.append(f"competition source {slug!r} must be a competition slug such as "
                            "'sartorius-cell-instance-segmentation'")
    for ref in meta.get("model_sources") or []:
        if not isinstance(ref, str) or ref.count("/") != 4:
            problems.append(f"model source {ref!r} must be shaped 'owner/model/framework/variation/version'")
    return problems


def dataset_metadata_problems(meta: Mapping[str, Any]) -> list[str]:
    """What ``kaggle datasets create`` rejects: title and slug 6-50 characters, exactly one known license."""
    low, high = DATASET_TITLE_RANGE
    problems = _ref_problems(meta.get("id"), "id", *DATASET_SLUG_RANGE)
    title = meta.get("title")
    if not isinstance(title, str) or not low <= len(title) <= high:
        problems.append(f"title {title!r} must be {low} to {high} characters")
    licenses = meta.get("licenses")
    if not isinstance(licenses, list) or len(licenses) != 1 or not isinstance(licenses[0], dict):
        problems.append(f"licenses must hold exactly one entry like [{{\"name\": \"other\"}}], got {licenses!r}")
    elif licenses[0].get("name") not in DATASET_LICENSES:
        problems.append(f"license name {licenses[0].get('name')!r} is not one Kaggle knows "
                        "(e.g. CC0-1.0, CC-BY-4.0, apache-2.0, other)")
    return problems


def _read_metadata(path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    if not path.is_file():
        return None, [f"{path}: not found"]
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, [f"{path}: not valid JSON ({exc})"]
    if not isinstance(meta, dict):
        return None, [f"{path}: must hold a JSON object, got {type(meta).__name__}"]
    return meta, []


def validate_kernel_dir(path: Path) -> list[str]:
    """Problems of a kernel folder (metadata and code file), each prefixed with the metadata file."""
    meta_path = Path(path) / KERNEL_METADATA
    meta, problems = _read_metadata(meta_path)
    if meta is None:
        return problems
    return [f"{meta_path}: {p}" for p in kernel_metadata_problems(meta, Path(path))]


def validate_dataset_dir(path: Path) -> list[str]:
    """Problems of a dataset folder: its metadata, and at least one file to upload."""
    meta_path = Path(path) / DATASET_METADATA
    meta, problems = _read_metadata(meta_path)
    if meta is None:
        return problems
    problems = [f"{meta_path}: {p}" for p in dataset_metadata_problems(meta)]
    if not any(p.name != DATASET_METADATA for p in Path(path).iterdir()):
        problems.append(f"{path}: no files besides {DATASET_METADATA}")
    return problems


def _raise_if(problems: Sequence[str], what: str) -> None:
    if problems:
        raise ConfigError(f"{what}:\n  - " + "\n  - ".join(problems))


# -------------------------------------------------------------------------------------------- build

def bundled_requirements() -> list[str]:
    """``name==version`` of every bundled distribution as installed here, so Kaggle runs what was tested."""
    pins, missing = [], []
    for dist in BUNDLED:
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        raise ConfigError(f"{', '.join(missing)} not installed in this environment, so its wheel version is "
                          "unknown: install requirements.txt (make setup) before building a kernel")
    return pins


def tf_keras_requirements(pins: Sequence[str]) -> list[str]:
    """``tf-keras==X.Y.*`` for each minor of :data:`TF_KERAS_MINORS` other than the pinned one, so the kernel
    finds a tf-keras matching whatever TensorFlow the Kaggle image has."""
    pinned = next((p.split("==")[1] for p in pins if p.startswith("tf-keras==")), "")
    return [f"tf-keras=={minor}.*" for minor in TF_KERAS_MINORS if not pinned.startswith(minor + ".")]


def download_wheels(requirements: Sequence[str], dest: Path) -> list[Path]:
    """``pip download`` the wheels (no dependencies: every needed one is listed) into ``dest``; the extra
    tf-keras minors one command each (pip refuses two versions of one package in one resolve). All are
    pure ``py3-none-any`` wheels, so they install on the image's Python (3.12 today) too."""
    dest.mkdir(parents=True, exist_ok=True)
    for batch in [list(requirements), *([spec] for spec in tf_keras_requirements(requirements))]:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "-d", str(dest), *batch]
        log.info(f"downloading wheels: {' '.join(batch)}")
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise _pip_failure(cmd, (result.stdout or "") + (result.stderr or ""),
                               f"pip could not download {', '.join(batch)} into {dest} (needs the package "
                               "index once; afterwards the kernel installs offline)")
    return sorted(dest.glob("*.whl"))


def _tf_keras_minors(wheel_dir: Path) -> list[str]:
    return sorted({".".join(p.name.split("-")[1].split(".")[:2]) for p in wheel_dir.glob("tf_keras-*.whl")},
                  key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))


def _wheel_name(dist: str) -> str:
    return re.sub(r"[-_.]+", "_", dist).lower()


def _missing_wheels(wheel_dir: Path) -> list[str]:
    present = {p.name.split("-")[0].lower() for p in wheel_dir.glob("*.whl")}
    return [dist for dist in BUNDLED if _wheel_name(dist) not in present]


def _copy_file(source: Path, dest: Path) -> None:
    """A real copy, never a hard link: a link shares the inode with the training run, so a read-only
    run-local input or a chmod of the dataset would reach into the run, and the upload is not a snapshot."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, dest)


def _write_marker(root: Path, ref: str, kind: str) -> None:
    """``kseg-dataset.json`` naming the dataset: the kernel finds it by content under any mount layout."""
    write_json(root / MARKER, {"id": ref, "kind": kind, "kseg_version": kseg.__version__})


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _dataset_metadata(names: KernelNames, slug: str, description: str) -> dict[str, Any]:
    return {"title": title_for(slug), "id": names.ref(slug), "licenses": [{"name": "other"}],
            "description": description}


def _asset_files(cfg: Config) -> dict[str, Path]:
    """Config keys naming an existing local file (e.g. an encoder ``.h5``), which the kernel cannot reach."""
    found = {}
    for key in ASSET_KEYS:
        value = config_get(cfg, key)
        if isinstance(value, str) and value != "imagenet":
            path = Path(value)
            if not path.is_file():
                raise ConfigError(f"{key}: file {value!r} not found; the kernel needs it bundled")
            found[key] = path
    return found


def build_code_dataset(cfg: Config, names: KernelNames, out_root: Path,
                       wheels: Sequence[Path] | None = None) -> Path:
    """``<name>-kseg-code/``: kseg's source, the bundled wheels, the resolved config and local assets.

    ``wheels`` given → those files are copied (tests, or an offline machine with a wheel cache); otherwise
    :func:`download_wheels` fetches the pinned versions of this environment.
    """
    slug = names.code_dataset
    _raise_if([f"dataset {slug}: {p}" for p in dataset_metadata_problems(_dataset_metadata(names, slug, ""))],
              "invalid Kaggle dataset name")
    root = _fresh_dir(Path(out_root) / slug)
    shutil.copytree(Path(kseg.__file__).parent, root / "kseg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheel_dir = root / "wheels"
    if wheels is None:
        download_wheels(bundled_requirements(), wheel_dir)
    else:
        wheel_dir.mkdir()
        for wheel in wheels:
            shutil.copy2(wheel, wheel_dir / Path(wheel).name)
    missing = _missing_wheels(wheel_dir)
    if missing:
        raise ConfigError(f"{wheel_dir}: no wheel for {', '.join(missing)}; the offline kernel could not "
                          "install it")
    minors = _tf_keras_minors(wheel_dir)
    log.info(f"tf-keras wheels for TensorFlow {', '.join(minors)} (the kernel uses the one matching the image)")
    for key, path in _asset_files(cfg).items():
        _copy_file(path, root / "assets" / path.name)
    write_text(root / "config.yaml", dump(cfg))
    _write_marker(root, names.ref(slug), "code")
    write_json(root / DATASET_METADATA, _dataset_metadata(
        names, slug, f"kseg {kseg.__version__} source, wheels of {', '.join(BUNDLED)} and the config of "
                     f"experiment {cfg['name']!r}, for offline Kaggle kernels."))
    return root


def _inference_folds(cfg: Config, from_kernels: bool) -> list[int]:
    """Folds the inference kernel ensembles: ``predict.folds`` ('all' = every fold of the run)."""
    wanted = cfg["predict"]["folds"]
    if wanted != "all":
        return [int(k) for k in (wanted if isinstance(wanted, list) else [wanted])]
    if from_kernels:
        return planned_folds(cfg)[0]
    run = RunDir.of(cfg)
    folds = run.trained_folds()
    if not folds:
        raise ConfigError(f"no fold weights (fold*/{run.weights(0).name}) under {run.root}: train first, or build with "
                          "--from-kernels to use the Kaggle train kernels' outputs")
    return folds


def build_weights_dataset(cfg: Config, names: KernelNames, out_root: Path, folds: Sequence[int]) -> Path:
    """``<name>-kseg-weights/``: what ``kseg predict`` reads from the run directory, nothing more (no OOF,
    no last-epoch weights) so the upload stays small."""
    paths = RunDir.of(cfg)
    run = paths.root
    required = ([paths.weights(k).relative_to(run) for k in folds] + [Path(n) for n in RUN_FILES_REQUIRED])
    missing = [str(run / rel) for rel in required if not (run / rel).is_file()]
    _raise_if(missing, f"the weights dataset needs these files of run {run} (run kseg train first)")
    if not paths.postprocess.is_file():
        warn(f"{paths.postprocess} not found: the kernel will use postprocess.default "
              "(run kseg search for tuned parameters)")
    root = _fresh_dir(Path(out_root) / names.weights_dataset)
    for rel in required + [Path(n) for n in RUN_FILES_OPTIONAL if (run / n).is_file()]:
        _copy_file(run / rel, root / rel)
    _write_marker(root, names.ref(names.weights_dataset), "weights")
    write_json(root / DATASET_METADATA, _dataset_metadata(
        names, names.weights_dataset, f"kseg run {cfg['name']!r}: best weights of folds "
                                      f"{', '.join(map(str, folds))} and post-processing parameters."))
    return root


def _kernel_script(settings: Mapping[str, Any]) -> str:
    return _KERNEL_TEMPLATE.replace("__KIND__", settings["kind"]).replace(
        "__SETTINGS__", pprint.pformat(dict(settings), sort_dicts=True, width=100))


def _competition_slug(cfg: Config, competition: str | None) -> str:
    """``--competition``, else ``kaggle.competition``. Never guessed from ``data.root``: its folder name is
    not the slug (``demo`` for the demo), and Kaggle silently drops an unknown competition source."""
    source = "--competition"
    if competition is None:
        competition, source = (cfg.get("kaggle") or {}).get("competition"), "kaggle.competition"
    if competition is None:
        raise ConfigError("kaggle.competition is not set: add `kaggle: {competition: SLUG}` to the config "
                          "(SLUG as in kaggle.com/competitions/SLUG) or pass --competition SLUG")
    if not isinstance(competition, str) or not _SLUG.match(competition):
        raise ConfigError(f"{source} {competition!r} is not a Kaggle competition slug such as "
                          "'sartorius-cell-instance-segmentation'")
    return competition


def _folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def print_folder_sizes(folders: Sequence[Path]) -> None:
    """Size of each upload: Kaggle datasets have quotas, and a surprise 2 GB folder is worth noticing."""
    for folder in folders:
        n_files, n_bytes = _folder_size(folder)
        log.info(f"  {str(folder):<50} {n_files:>5} files {n_bytes / 2**20:>9.1f} MB")


def build_kernel(cfg: Config, kind: str, fold: int | None = None, owner: str = "",
                 out_root: Path = Path("kernels"), competition: str | None = None, *,
                 from_kernels: bool = False, enable_gpu: bool | None = None,
                 wheels: Sequence[Path] | None = None, accelerator: str | None = None,
                 session_timeout: int | None = None) -> Path:
    """Write the kernel folder and the datasets it reads under ``out_root``; return the kernel folder.

    ``kind="train"`` with ``fold=K``: a GPU kernel training fold K, whose output ``run/fold{K}`` holds that
    fold's weights. ``kind="infer"``: the offline submission kernel, ensembling the folds of
    ``predict.folds`` from the local run (weights dataset) or, ``from_kernels=True``, from the outputs of
    the per-fold train kernels (listed as kernel sources). ``enable_gpu`` defaults to True for train and
    False for infer unless ``kaggle.infer_gpu`` is set. ``accelerator`` (a key of :data:`ACCELERATORS`)
    writes the metadata's ``machine_shape`` and the matching GPU/TPU flags; ``session_timeout`` (seconds)
    is passed to ``kaggle kernels push -t`` by :func:`push`. ``wheels`` replaces the pip download (see
    :func:`build_code_dataset`).
    """
    if kind not in KINDS:
        raise ConfigError(f"kernel kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if accelerator is not None and accelerator not in ACCELERATORS:
        raise ConfigError(f"--accelerator {accelerator!r} must be one of {', '.join(ACCELERATORS)}")
    if session_timeout is not None and (not isinstance(session_timeout, int) or session_timeout < 1):
        raise ConfigError(f"--session-timeout must be a positive number of seconds, got {session_timeout!r}")
    names = KernelNames.for_config(cfg, owner)
    competition = _competition_slug(cfg, competition)
    n_splits = cfg["folds"]["n_splits"]
    if kind == "train":
        if fold is None or not 0 <= fold < n_splits:
            raise ConfigError(f"a train kernel needs --fold between 0 and {n_splits - 1} (folds.n_splits), "
                              f"got {fold!r}")
        slug = names.train_kernel(fold)
    else:
        if fold is not None:
            raise ConfigError("--fold is for train kernels; the infer kernel ensembles predict.folds")
        slug = names.infer_kernel
    _raise_if(_ref_problems(names.ref(slug), "kernel id", MIN_KERNEL_SLUG), "invalid Kaggle kernel name")

    out_root = Path(out_root)
    folds = [fold] if kind == "train" else _inference_folds(cfg, from_kernels)
    train_kernels = [names.train_kernel(k) for k in folds] if kind == "infer" and from_kernels else []
    # The weights first: a missing fold file should stop the build before the wheel download.
    datasets = [build_weights_dataset(cfg, names, out_root, folds)] if kind == "infer" and not from_kernels else []
    datasets.insert(0, build_code_dataset(cfg, names, out_root, wheels))

    # Training downloads ImageNet encoder weights when asked to; inference never needs the internet.
    internet = kind == "train" and cfg["model"]["encoder_weights"] == "imagenet"
    if internet:
        warn("model.encoder_weights=imagenet is downloaded at training time, so this train kernel has "
              "the internet on; set it to a bundled .h5 path to train offline")
    overrides: dict[str, Any] = {"train.verbose": 2} if kind == "train" else {
        "model.encoder_weights": None, "model.init_from": None}
    planned_steps = planned_folds(cfg)[1]
    if kind == "train" and planned_steps is not None:
        # One kernel trains one fold: it gets that fold's share of train.budget_steps, as a local run would.
        overrides.update({"train.budget_steps": None, "train.steps_per_epoch": planned_steps})
    settings = {
        "kind": kind, "fold": fold, "competition": competition, "kernel": names.ref(slug),
        "code_dataset": names.ref(names.code_dataset),
        "weights_dataset": names.ref(names.weights_dataset) if kind == "infer" and not from_kernels else None,
        "train_kernels": [names.ref(k) for k in train_kernels],
        "search_if_missing": bool(train_kernels),
        "search_result": RunDir(Path()).postprocess.name,  # the kernel knows the run layout only from here
        "bundled": {dist: module for dist, module in BUNDLED.items() if dist != "tf-keras"},
        "assets": {} if kind == "infer" else {key: f"assets/{p.name}" for key, p in _asset_files(cfg).items()},
        "overrides": overrides,
    }
    if enable_gpu is None:
        enable_gpu = kind == "train" or bool((cfg.get("kaggle") or {}).get("infer_gpu"))
    shape = ACCELERATORS[accelerator] if accelerator is not None else None
    if accelerator is not None:
        enable_gpu = shape is not None and shape.startswith("Nvidia")
    metadata = {
        "id": names.ref(slug), "title": title_for(slug), "code_file": CODE_FILE,
        "language": "python", "kernel_type": "script", "is_private": True,
        "enable_gpu": bool(enable_gpu), "enable_tpu": shape is not None and shape.startswith("Tpu"),
        "enable_internet": internet,
        **({"machine_shape": shape} if shape else {}),
        "dataset_sources": [names.ref(d.name) for d in datasets],
        "competition_sources": [competition],
        "kernel_sources": [names.ref(k) for k in train_kernels],
        "model_sources": [], "keywords": [],
    }
    kernel_dir = _fresh_dir(out_root / slug)
    write_text(kernel_dir / CODE_FILE, _kernel_script(settings))
    write_json(kernel_dir / KERNEL_METADATA, metadata)
    write_json(kernel_dir / SIDECAR, {**settings, "kseg_version": kseg.__version__, "folds": folds,
                                      "session_timeout": session_timeout,
                                      "built_at": time.strftime("%Y-%m-%d %H:%M:%S")})
    problems = validate_kernel_dir(kernel_dir) + [p for d in datasets for p in validate_dataset_dir(d)]
    _raise_if(problems, "the built kernel would be rejected by Kaggle")
    log.info(f"built {kind} kernel {metadata['id']}:")
    print_folder_sizes([kernel_dir, *datasets])
    return kernel_dir


def build_train_kernels(cfg: Config, owner: str, out_root: Path = Path("kernels"),
                        competition: str | None = None, folds: Sequence[int] | None = None, *,
                        wheels: Sequence[Path] | None = None, **options: Any) -> list[Path]:
    """One train kernel per fold (default: every fold), the fan-out that ``--from-kernels`` gathers;
    ``options`` (accelerator, session_timeout, enable_gpu) as for :func:`build_kernel`."""
    chosen = planned_folds(cfg)[0] if folds is None else list(folds)
    return [build_kernel(cfg, "train", fold, owner, out_root, competition, wheels=wheels, **options)
            for fold in chosen]


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
    for key in (ref, _base_ref(ref), slug):
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
    from .config import data_path
    from .data import list_test_images, read_csv, schema_from_config

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    probe = {**cfg, "data": {**cfg["data"], "root": str(source)}}
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


class PackageIndexUnreachable(ConfigError):
    """pip could not reach the package index (no network, DNS, proxy): nothing is wrong with the pins."""


# What pip prints when it cannot reach the index at all, as opposed to a pin the index does not have.
_UNREACHABLE = re.compile(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
                          r"resolution|Name or service not known|Network is unreachable|ProxyError|"
                          r"ConnectTimeoutError|Max retries exceeded", re.IGNORECASE)


def _pip_failure(cmd: Sequence[str], output: str, what: str) -> ConfigError:
    tail = "\n".join(output.strip().splitlines()[-5:])
    if _UNREACHABLE.search(output):
        return PackageIndexUnreachable(f"{what}: the package index is unreachable ({shlex.join(cmd)}):\n{tail}")
    return ConfigError(f"{what}: {shlex.join(cmd)} failed:\n{tail}")


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
            raise _pip_failure(cmd, (result.stdout or "") + (result.stderr or ""),
                               "could not build the Kaggle-image venv")
    (venv / ".complete").write_text(version + "\n")
    return python


def _validation_config(kernel_dir: Path, inputs: Sequence[tuple[str, str, Path]], input_dir: Path) -> Config:
    """The experiment config the kernel runs (``config.yaml`` of its code dataset), reading ``input_dir``."""
    from .config import load_config

    for kind, _, folder in inputs:
        if kind == "dataset" and (folder / "config.yaml").is_file():
            cfg = load_config(folder / "config.yaml")
            cfg["data"]["root"] = str(input_dir)
            return cfg
    raise ConfigError(f"{kernel_dir}: no dataset source holds a config.yaml, so the submission cannot be "
                      "checked against the test images (build the kernel with kseg kernel build)")


def _expected_shapes(cfg: Config) -> dict[str, tuple[int, int]]:
    from .data import image_size, list_test_images

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
    _raise_if(validate_kernel_dir(kernel_dir), f"kernel {kernel_dir} is invalid")
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
            cfg["data"]["root"] = str(scaled)
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
            from .data import n_classes_of, schema_from_config
            from .submission import validate_submission

            problems += validate_submission(submission, schema_from_config(cfg), expected, cfg["data"]["task"],
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


def _show(cmd: Sequence[str]) -> str:
    return shlex.join([Path(cmd[0]).name, *cmd[1:]])


def _run_cli(runner: Runner, cmd: list[str]) -> tuple[bool, str]:
    """Run one kaggle command, echo its output; success needs exit 0 and none of the CLI's error lines."""
    log.info(f"$ {_show(cmd)}")
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


def _base_ref(ref: str) -> str:
    """``owner/slug`` of a possibly version-pinned source ``owner/slug/N``."""
    return "/".join(ref.split("/")[:2])


def dataset_state(runner: Runner, kaggle: str, ref: str) -> DatasetState:
    """Status and current version of a dataset. Raises :class:`KaggleError` on any failure other than
    "not found" (bad credentials, a server error), which must not be mistaken for a missing dataset."""
    cmd = [kaggle, "datasets", "status", _base_ref(ref), "--format", "json"]
    result = runner(cmd, capture_output=True, text=True)
    output = ((result.stdout or "") + (result.stderr or "")).strip()
    if result.returncode != 0:
        if _NOT_FOUND.search(output):
            return DatasetState(False)
        raise KaggleError(f"{_show(cmd)} failed with exit code {result.returncode}: {_last_line(output)}")
    for line in reversed((result.stdout or "").splitlines()):  # the CLI may print a version warning first
        if line.strip().startswith("{"):
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                break
            version = payload.get("current_version_number")
            return DatasetState(True, str(payload.get("status", "")).lower() or None,
                                int(version) if isinstance(version, int) or str(version).isdigit() else None)
    raise KaggleError(f"{_show(cmd)} printed no JSON status: {_last_line(output)}")


def _last_line(text: str) -> str:
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
    meta, _ = _read_metadata(kernel_dir / KERNEL_METADATA)
    datasets = _dataset_dirs(kernel_dir, meta) if meta else []
    problems += [p for _, folder in datasets for p in validate_dataset_dir(folder)]
    _raise_if(problems, f"kernel {kernel_dir} would be rejected by Kaggle")

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
            log.info(f"  {_show([kaggle, 'datasets', 'status', _base_ref(ref), '--format', 'json'])}"
                  "   # exists? then polled until the new version is ready")
            log.info(f"  {_show([kaggle, 'datasets', 'version', '-p', str(folder), '-r', 'zip', '-m', f'kseg {stamp}'])}"
                  "   # if it exists")
            log.info(f"  {_show([kaggle, 'datasets', 'create', '-p', str(folder), '-r', 'zip'])}   # if it does not")
        log.info(f"  {_show(push_cmd)}")
        return 0

    pinned: dict[str, str] = {}
    uploaded = {} if uploaded is None else uploaded
    for ref, folder in datasets:
        if _base_ref(ref) in uploaded:
            log.info(f"dataset {_base_ref(ref)} was uploaded by this command already")
            pinned[ref] = uploaded[_base_ref(ref)]
            continue
        try:
            before = dataset_state(runner, kaggle, ref)
        except KaggleError as exc:
            log.error(f"error: {exc}; the kernel was not pushed")
            return 1
        n_files, n_bytes = _folder_size(folder)
        log.info(f"{'updating' if before.exists else 'creating'} dataset {_base_ref(ref)} "
              f"({n_files} files, {n_bytes / 2**20:.1f} MB)")
        cmd = ([kaggle, "datasets", "version", "-p", str(folder), "-r", "zip", "-m", f"kseg {stamp}"]
               if before.exists else [kaggle, "datasets", "create", "-p", str(folder), "-r", "zip"])
        ok, _ = _run_cli(runner, cmd)
        if not ok:
            log.error(f"error: uploading dataset {_base_ref(ref)} failed; the kernel was not pushed")
            return 1
        try:
            outcome, version = _wait_until_ready(runner, kaggle, ref, before.version if before.exists else None,
                                                 sleep, dataset_timeout)
        except KaggleError as exc:
            log.error(f"error: {exc}; the kernel was not pushed")
            return 1
        if outcome == "failed":
            log.error(f"error: dataset {_base_ref(ref)} failed on Kaggle; the kernel was not pushed")
            return 1
        if outcome == "timeout":
            if not push_on_timeout:
                log.error("error: the kernel was not pushed, because it would run on the old version or none: run "
                      "the push again when the dataset is ready, or pass --push-on-timeout")
                return 1
            warn("pushing anyway (--push-on-timeout); the kernel may see the previous version")
            uploaded[_base_ref(ref)] = _base_ref(ref)
            continue
        pinned[ref] = uploaded[_base_ref(ref)] = f"{_base_ref(ref)}/{version}" if version else _base_ref(ref)
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


# The kernel entry point. Kept free of kseg imports until the code dataset is on sys.path.
_KERNEL_TEMPLATE = '''"""kseg __KIND__ kernel, written by `kseg kernel build`.

Runs with the internet off: kseg and the packages the Kaggle image lacks come from the attached code
dataset. KSEG_KAGGLE_ROOT (default /kaggle) relocates every path, so `kseg kernel run-local` runs this same
file on a Kaggle-like temporary tree.
"""
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = __SETTINGS__

ROOT = Path(os.environ.get("KSEG_KAGGLE_ROOT", "/kaggle")).absolute()
INPUT = ROOT / "input"
WORKING = ROOT / "working"
RUN_DIR = WORKING / "run"
MARKER = "kseg-dataset.json"
# Kaggle mounts inputs under one of these, depending on when and how the kernel was created.
NESTED = {"competition": "competitions", "dataset": "datasets", "kernel": "notebooks"}
MARKER_DEPTH = 5
TENSORFLOW_DISTS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly")


def _marker_id(folder):
    try:
        return json.loads((folder / MARKER).read_text()).get("id")
    except (OSError, ValueError, AttributeError):
        return None


def _markers():
    """Every kseg marker under /kaggle/input, a few levels deep (datasets/<owner>/<slug>/...)."""
    for top, dirs, files in os.walk(INPUT, followlinks=True):
        if MARKER in files:
            yield Path(top)
        if len(Path(top).relative_to(INPUT).parts) >= MARKER_DEPTH:
            dirs[:] = []


def _listing(depth=3):
    found = []
    for top, dirs, _ in os.walk(INPUT, followlinks=True):
        rel = Path(top).relative_to(INPUT)
        if len(rel.parts) >= depth:
            dirs[:] = []
        if rel.parts:
            found.append(str(rel))
    return sorted(found)


def find_input(kind, ref):
    """The folder of one input (a competition slug, or owner/slug of a dataset or kernel): the current
    nested layout, then the flat one, then a kseg marker naming it anywhere. Says which it used."""
    parts = ref.split("/")
    wanted = "/".join(parts[:2])
    owner, slug = (None, parts[0]) if kind == "competition" else (parts[0], parts[1])
    candidates = [INPUT.joinpath(NESTED[kind], *filter(None, [owner, slug])), INPUT / slug]
    for candidate in candidates:
        # A flat folder of that name holding another kseg dataset's marker is not this input.
        if candidate.is_dir() and (kind == "competition" or _marker_id(candidate) in (None, wanted)):
            print(f"kseg kernel: {kind} {ref} found at {candidate}", flush=True)
            return candidate
    if kind != "competition":
        for folder in _markers():
            if _marker_id(folder) == wanted:
                print(f"kseg kernel: {kind} {ref} found at {folder} (by its {MARKER})", flush=True)
                return folder
    attached = "\\n  ".join(_listing()) or "(nothing)"
    looked = f"{candidates[0]}, {candidates[1]}" + ("" if kind == "competition" else f" and for a {MARKER}")
    raise SystemExit(f"kseg kernel: {kind} {ref} not found (looked at {looked}); attached inputs:\\n  {attached}")


def _version(*dists):
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _minor(version):
    return ".".join(version.split(".")[:2])


def _version_key(wheel_name):
    return [int(x) if x.isdigit() else 0 for x in wheel_name.split("-")[1].split(".")]


def tf_keras_plan(tf_version, image_tf_keras, wheel_names):
    """None to use the image's tf-keras (same minor version as its TensorFlow), else the file name of the
    bundled tf-keras wheel of that minor; stops, naming both versions, when there is neither."""
    if tf_version is None:
        raise SystemExit("kseg kernel: TensorFlow is not installed on this image; kseg needs TensorFlow 2 "
                         "and tf-keras of the same minor version")
    if image_tf_keras is not None and _minor(image_tf_keras) == _minor(tf_version):
        return None
    bundled = sorted((n for n in wheel_names if n.lower().startswith("tf_keras-")), key=_version_key)
    matching = [n for n in bundled if _minor(n.split("-")[1]) == _minor(tf_version)]
    if matching:
        return matching[-1]
    have = f"tf-keras {image_tf_keras}" if image_tf_keras else "no tf-keras"
    offered = ", ".join(n.split("-")[1] for n in bundled) or "none"
    raise SystemExit(f"kseg kernel: this image has TensorFlow {tf_version} and {have}, and the code dataset "
                     f"bundles tf-keras {offered}; tf-keras must have TensorFlow's minor version "
                     f"{_minor(tf_version)}: rebuild the kernel with a tf-keras {_minor(tf_version)} wheel")


def install_bundled_wheels(code):
    """pip-install, offline from the code dataset's wheels, the bundled packages this image cannot import
    and the tf-keras matching its TensorFlow. They go to a temporary folder, so the interpreter is left as
    it was (as a fresh Kaggle session is); returns the folders to put on the import path."""
    wheels = code / "wheels"
    tf_version, image_tf_keras = _version(*TENSORFLOW_DISTS), _version("tf-keras")
    tf_keras_wheel = tf_keras_plan(tf_version, image_tf_keras, sorted(p.name for p in wheels.glob("*.whl")))
    if tf_keras_wheel is None:
        print(f"kseg kernel: the image's tf-keras {image_tf_keras} matches TensorFlow {tf_version}", flush=True)
    missing = [dist for dist, module in SETTINGS["bundled"].items() if importlib.util.find_spec(module) is None]
    if tf_keras_wheel:
        missing.append(str(wheels / tf_keras_wheel))
    if not missing:
        return []
    target = tempfile.mkdtemp(prefix="kseg-wheels-")
    print("installing offline:", ", ".join(Path(m).name for m in missing),
          f"(TensorFlow {tf_version})" if tf_keras_wheel else "", flush=True)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                           "--target", target, "--find-links", str(wheels), *missing])
    return [target]


def import_packaged_kseg(code, paths):
    """Put the code dataset first on sys.path and import kseg from it; stop when another kseg (installed,
    or a developer checkout) shadows it, because the kernel would then not run what was built."""
    sys.path[:0] = paths
    # Worker processes (joblib, data loaders) import kseg too.
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    import kseg

    loaded = Path(kseg.__file__).resolve().parent
    if loaded != (code / "kseg").resolve():
        raise SystemExit(f"kseg kernel: imported kseg from {loaded}, not from the code dataset {code / 'kseg'}")
    print(f"kseg {kseg.__version__} from {loaded} (the code dataset; sys.path[0] = {sys.path[0]})", flush=True)


def link_tree(source, target):
    """Mirror a read-only input folder into the run folder: real folders, symlinked files (kseg writes
    next to the run)."""
    for path in sorted(source.rglob("*")):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif path.name not in ("dataset-metadata.json", MARKER) and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(path)


def config_args(code, data_root):
    """--config and one --set per Kaggle path, so the experiment config runs unchanged."""
    values = {
        "data.root": data_root,
        "data.demo": None,
        "output.dir": RUN_DIR,
        "output.submission": WORKING / "submission.csv",
    }
    values.update({key: code / relative for key, relative in SETTINGS["assets"].items()})
    values.update(SETTINGS["overrides"])
    args = ["--config", str(code / "config.yaml")]
    for key, value in values.items():
        args += ["--set", f"{key}={'null' if value is None else value}"]
    return args


def main():
    code = find_input("dataset", SETTINGS["code_dataset"])
    data_root = find_input("competition", SETTINGS["competition"])
    import_packaged_kseg(code, [str(code), *install_bundled_wheels(code)])
    from kseg.cli import main as kseg_main

    def kseg_command(*argv):
        print("+ kseg", " ".join(argv), flush=True)
        status = kseg_main([*argv, *config_args(code, data_root)])
        if status != 0:
            raise SystemExit(status)

    if SETTINGS["kind"] == "train":
        # This kernel's output is an input of the inference kernel: the marker lets it be found there.
        WORKING.mkdir(parents=True, exist_ok=True)
        (WORKING / MARKER).write_text(json.dumps({"id": SETTINGS["kernel"], "kind": "train-output"}))
        kseg_command("folds")
        kseg_command("train", "--fold", str(SETTINGS["fold"]))
        return
    if SETTINGS["weights_dataset"]:
        link_tree(find_input("dataset", SETTINGS["weights_dataset"]), RUN_DIR)
    for ref in SETTINGS["train_kernels"]:
        output = find_input("kernel", ref)
        if not (output / "run").is_dir():
            raise SystemExit(f"kseg kernel: the output of {ref} at {output} has no run/ folder (did it finish?)")
        link_tree(output / "run", RUN_DIR)
    if SETTINGS["search_if_missing"] and not (RUN_DIR / SETTINGS["search_result"]).exists():
        kseg_command("search")
    kseg_command("predict")


if __name__ == "__main__":
    main()
'''
