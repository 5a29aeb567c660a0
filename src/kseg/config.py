"""One YAML config per experiment: defaults, strict key checking, ``--set dotted.key=value`` overrides.

A config is a plain nested ``dict``. Every key must exist in :data:`DEFAULTS` (a typo is an error that
names the key), except below the few keys listed in :data:`FREE_FORM`, whose values are user mappings or
lists (augmentation pipelines, TTA views, search grids).
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .errors import ConfigError

Config = dict[str, Any]

DEFAULTS: Config = {
    "name": "experiment",
    "data": {
        "root": "data",
        "train_csv": "train.csv",
        "train_dir": "train",
        "test_dir": "test",
        "image_ext": ".png",
        "sample_submission": None,
        # Optional ground truth of the test images (the demo has it): `kseg run` then reports the test score.
        "test_truth": None,
        # instance: one RLE row per object (Sartorius, DSB 2018, Airbus); binary: rows are the foreground
        # of the image (TGS, ISBI); several rows of one image are unioned.
        "task": "instance",
        "schema": {
            "preset": None,
            "id_col": None,
            "rle_col": None,
            "height_col": None,
            "width_col": None,
            "rle_order": None,
            "class_col": None,
            "group_col": None,
            "submission_cols": None,
        },
        # When set, `kseg run` generates the synthetic demo competition into data.root if it is missing.
        "demo": None,
    },
    "folds": {"n_splits": 5, "seed": 42, "file": None},
    "model": {
        "arch": "Unet",
        "backbone": "resnet34",
        "encoder_weights": "imagenet",
        "init_from": None,
        "encoder_freeze": False,
        # Keras' default 0.99 leaves BatchNorm's inference statistics wrong after short runs (see model.py).
        "bn_momentum": 0.9,
    },
    "train": {
        "size": 256,
        "epochs": 30,
        "batch_size": 8,
        "steps_per_epoch": None,
        "lr": 1.0e-3,
        "scheduler": "plateau",
        "early_stopping": 8,
        "loss": "bce_dice",
        "channel_weights": None,
        "border_width": 2,
        "seed": 42,
        "workers": None,
        "mixed_precision": False,
        "sampler": {"class_power": 0.0, "empty_fraction": None},
        "augment": [
            {"HorizontalFlip": {"p": 0.5}},
            {"VerticalFlip": {"p": 0.5}},
            {"RandomRotate90": {"p": 0.5}},
            {"Affine": {"scale": [0.9, 1.1], "rotate": [-15, 15], "p": 0.5}},
            {"RandomBrightnessContrast": {"p": 0.5}},
        ],
        "verbose": 1,
    },
    "postprocess": {
        "default": {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area": 16, "fill_holes": True},
        "grid": {
            "fg_threshold": [0.3, 0.4, 0.5, 0.6],
            "seed_threshold": [0.3, 0.5, 0.7, 0.8],
            "min_area": [0, 16, 48, 96],
        },
        "per_class": True,
        "n_jobs": 2,
    },
    "tta": ["identity", "hflip", "vflip", "hvflip"],
    "predict": {"folds": "all", "batch_size": 4, "tile": None},
    "output": {"dir": "runs/experiment", "submission": None},
    # Kaggle kernels: the competition slug (checked by `kseg kernel build`), and whether the inference
    # kernel asks for a GPU (training kernels always do).
    "kaggle": {"competition": None, "infer_gpu": False},
}

# Below these dotted keys any user mapping or list is accepted as is.
FREE_FORM = {"data.demo", "train.augment", "train.channel_weights", "postprocess.default", "postprocess.grid", "tta"}


def _check_keys(user: Mapping[str, Any], ref: Mapping[str, Any], prefix: str, source: str) -> None:
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if key not in ref:
            valid = ", ".join(sorted(ref))
            raise ConfigError(f"{source}: unknown config key '{dotted}' (valid keys here: {valid})")
        if dotted in FREE_FORM:
            continue
        if isinstance(ref[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: '{dotted}' must be a mapping, got {value!r}")
            _check_keys(value, ref[key], dotted + ".", source)


def _merge(base: Config, user: Mapping[str, Any], prefix: str = "") -> Config:
    out = copy.deepcopy(base)
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and dotted not in FREE_FORM:
            out[key] = _merge(out[key], value, dotted + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b.c=value``; the value is parsed as YAML so ``2``, ``null``, ``[a, b]`` get their types."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects dotted.key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value '{raw}' is not valid YAML ({exc})") from None
    return key.strip(), value


def _nest(dotted: str, value: Any) -> Config:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then the YAML file, then each ``--set`` override in order; unknown keys raise ConfigError."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            user = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(user, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(user).__name__}")
        _check_keys(user, DEFAULTS, "", str(path))
        cfg = _merge(cfg, user)
    for text in overrides:
        key, value = parse_override(text)
        patch = _nest(key, value)
        _check_keys(patch, DEFAULTS, "", f"--set {text}")
        cfg = _merge(cfg, patch)
    _validate_values(cfg)
    return cfg


def _validate_values(cfg: Config) -> None:
    if cfg["data"]["task"] not in ("instance", "binary"):
        raise ConfigError(f"data.task must be 'instance' or 'binary', got {cfg['data']['task']!r}")
    n_splits = cfg["folds"]["n_splits"]
    if not isinstance(n_splits, int) or n_splits < 2:
        raise ConfigError(f"folds.n_splits must be an integer >= 2, got {n_splits!r}")
    for key in ("epochs", "batch_size", "size"):
        value = cfg["train"][key]
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"train.{key} must be a positive integer, got {value!r}")
    if not isinstance(cfg["tta"], list) or not cfg["tta"]:
        raise ConfigError(f"tta must be a non-empty list of view names, got {cfg['tta']!r}")


def get(cfg: Config, dotted: str) -> Any:
    """``get(cfg, "train.epochs")``."""
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def data_path(cfg: Config, key: str) -> Path | None:
    """Resolve ``data.<key>`` (train_csv, train_dir, test_dir, sample_submission) against ``data.root``."""
    value = cfg["data"][key]
    if value is None:
        return None
    value = Path(value)
    return value if value.is_absolute() else Path(cfg["data"]["root"]) / value


def output_dir(cfg: Config) -> Path:
    return Path(cfg["output"]["dir"])


def submission_path(cfg: Config) -> Path:
    """``output.submission``, or ``<output.dir>/submission.csv`` when unset."""
    value = cfg["output"]["submission"]
    return Path(value) if value else output_dir(cfg) / "submission.csv"


def folds_path(cfg: Config) -> Path:
    """``folds.file``, or ``<output.dir>/folds.csv`` when unset."""
    value = cfg["folds"]["file"]
    return Path(value) if value else output_dir(cfg) / "folds.csv"


def dump(cfg: Config) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


def fingerprint(cfg: Config, *sections: str) -> str:
    """Short hash of the named dotted sections, used to tell whether a stage's outputs are up to date."""
    picked = {s: get(cfg, s) for s in sections}
    return hashlib.sha1(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:12]
