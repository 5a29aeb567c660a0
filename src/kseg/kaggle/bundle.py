"""Build what an offline kernel needs: the code dataset (kseg's source, the wheels the Kaggle image lacks,
the resolved config, local weight files), the weights dataset (a run's fold weights and artifacts) and
the kernel folder itself (metadata and ``kernel.py``: the :mod:`kseg.kaggle.entrypoint` module with its
settings as JSON).
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import kseg

from ..config import Config, dump
from ..config import get as config_get
from ..errors import ConfigError, warn
from ..files import write_json, write_text
from ..plan import planned_folds
from ..run import RUN_FILES_OPTIONAL, RUN_FILES_REQUIRED, RunDir
from .rules import (
    ACCELERATORS,
    CODE_FILE,
    DATASET_METADATA,
    KERNEL_METADATA,
    KINDS,
    MARKER,
    MIN_KERNEL_SLUG,
    SIDECAR,
    SLUG_PATTERN,
    KernelNames,
    dataset_metadata_problems,
    raise_if_problems,
    ref_problems,
    title_for,
    validate_dataset_dir,
    validate_kernel_dir,
)

log = logging.getLogger(__name__)

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
            raise pip_failure(cmd, (result.stdout or "") + (result.stderr or ""),
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
    raise_if_problems([f"dataset {slug}: {p}" for p in dataset_metadata_problems(_dataset_metadata(names, slug, ""))],
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
                     f"experiment {cfg.name!r}, for offline Kaggle kernels."))
    return root


def _inference_folds(cfg: Config, from_kernels: bool) -> list[int]:
    """Folds the inference kernel ensembles: ``predict.folds`` ('all' = every fold of the run)."""
    wanted = cfg.predict.folds
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
    raise_if_problems(missing, f"the weights dataset needs these files of run {run} (run kseg train first)")
    if not paths.postprocess.is_file():
        warn(f"{paths.postprocess} not found: the kernel will use postprocess.default "
              "(run kseg search for tuned parameters)")
    root = _fresh_dir(Path(out_root) / names.weights_dataset)
    for rel in required + [Path(n) for n in RUN_FILES_OPTIONAL if (run / n).is_file()]:
        _copy_file(run / rel, root / rel)
    _write_marker(root, names.ref(names.weights_dataset), "weights")
    write_json(root / DATASET_METADATA, _dataset_metadata(
        names, names.weights_dataset, f"kseg run {cfg.name!r}: best weights of folds "
                                      f"{', '.join(map(str, folds))} and post-processing parameters."))
    return root


# The line of the entry point that a built kernel.py replaces with its settings.
SETTINGS_PLACEHOLDER = "SETTINGS: dict = {}"


def kernel_script(settings: Mapping[str, Any]) -> str:
    """``kernel.py``: the source of :mod:`kseg.kaggle.entrypoint` with ``settings`` (JSON) in place of its
    empty ``SETTINGS``. Kaggle uploads only this one file, so the settings travel inside it."""
    source = (Path(__file__).parent / "entrypoint.py").read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.startswith(SETTINGS_PLACEHOLDER)]
    if len(at) != 1:
        raise RuntimeError(f"kseg/kaggle/entrypoint.py must have one line starting {SETTINGS_PLACEHOLDER!r}")
    settings_json = json.dumps(dict(settings), indent=1, sort_keys=True)
    lines[at[0]] = f"SETTINGS = json.loads({settings_json!r})  # written by `kseg kernel build`\n"
    return "".join(lines)


def competition_slug(cfg: Config, competition: str | None) -> str:
    """``--competition``, else ``kaggle.competition``. Never guessed from ``data.root``: its folder name is
    not the slug (``demo`` for the demo), and Kaggle silently drops an unknown competition source."""
    source = "--competition"
    if competition is None:
        competition, source = cfg.kaggle.competition, "kaggle.competition"
    if competition is None:
        raise ConfigError("kaggle.competition is not set: add `kaggle: {competition: SLUG}` to the config "
                          "(SLUG as in kaggle.com/competitions/SLUG) or pass --competition SLUG")
    if not isinstance(competition, str) or not SLUG_PATTERN.match(competition):
        raise ConfigError(f"{source} {competition!r} is not a Kaggle competition slug such as "
                          "'sartorius-cell-instance-segmentation'")
    return competition


def folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def print_folder_sizes(folders: Sequence[Path]) -> None:
    """Size of each upload: Kaggle datasets have quotas, and a surprise 2 GB folder is worth noticing."""
    for folder in folders:
        n_files, n_bytes = folder_size(folder)
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
    competition = competition_slug(cfg, competition)
    n_splits = cfg.folds.n_splits
    if kind == "train":
        if fold is None or not 0 <= fold < n_splits:
            raise ConfigError(f"a train kernel needs --fold between 0 and {n_splits - 1} (folds.n_splits), "
                              f"got {fold!r}")
        slug = names.train_kernel(fold)
    else:
        if fold is not None:
            raise ConfigError("--fold is for train kernels; the infer kernel ensembles predict.folds")
        slug = names.infer_kernel
    raise_if_problems(ref_problems(names.ref(slug), "kernel id", MIN_KERNEL_SLUG), "invalid Kaggle kernel name")

    out_root = Path(out_root)
    folds = [fold] if kind == "train" else _inference_folds(cfg, from_kernels)
    train_kernels = [names.train_kernel(k) for k in folds] if kind == "infer" and from_kernels else []
    # The weights first: a missing fold file should stop the build before the wheel download.
    datasets = [build_weights_dataset(cfg, names, out_root, folds)] if kind == "infer" and not from_kernels else []
    datasets.insert(0, build_code_dataset(cfg, names, out_root, wheels))

    # Training downloads ImageNet encoder weights when asked to; inference never needs the internet.
    internet = kind == "train" and cfg.model.encoder_weights == "imagenet"
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
        enable_gpu = kind == "train" or cfg.kaggle.infer_gpu
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
    write_text(kernel_dir / CODE_FILE, kernel_script(settings))
    write_json(kernel_dir / KERNEL_METADATA, metadata)
    write_json(kernel_dir / SIDECAR, {**settings, "kseg_version": kseg.__version__, "folds": folds,
                                      "session_timeout": session_timeout,
                                      "built_at": time.strftime("%Y-%m-%d %H:%M:%S")})
    problems = validate_kernel_dir(kernel_dir) + [p for d in datasets for p in validate_dataset_dir(d)]
    raise_if_problems(problems, "the built kernel would be rejected by Kaggle")
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


class PackageIndexUnreachable(ConfigError):
    """pip could not reach the package index (no network, DNS, proxy): nothing is wrong with the pins."""


# What pip prints when it cannot reach the index at all, as opposed to a pin the index does not have.
_UNREACHABLE = re.compile(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
                          r"resolution|Name or service not known|Network is unreachable|ProxyError|"
                          r"ConnectTimeoutError|Max retries exceeded", re.IGNORECASE)


def pip_failure(cmd: Sequence[str], output: str, what: str) -> ConfigError:
    tail = "\n".join(output.strip().splitlines()[-5:])
    if _UNREACHABLE.search(output):
        return PackageIndexUnreachable(f"{what}: the package index is unreachable ({shlex.join(cmd)}):\n{tail}")
    return ConfigError(f"{what}: {shlex.join(cmd)} failed:\n{tail}")

