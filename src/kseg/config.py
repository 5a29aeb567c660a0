"""One YAML config per experiment: defaults, strict key checking, ``--set dotted.key=value`` overrides.

A config is a plain nested ``dict``. Every key must exist in :data:`DEFAULTS` (a typo is an error that
names the key), except below the few keys listed in :data:`FREE_FORM`, whose values are user mappings or
lists (augmentation pipelines, TTA views, search grids).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from .errors import ConfigError
from .run import RunDir
from .tasks import task_of

Config = dict[str, Any]

UNLISTED = ("skip", "empty")
# The output activations kseg builds (the tasks it trains: kseg.tasks).
ACTIVATIONS = ("auto", "sigmoid", "softmax")

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
        # of the image (TGS, ISBI); several rows of one image are unioned; multiclass: exclusive classes, one row
        # per (image, class present) with the class id in schema.class_col (Severstal, CamVid), scored by the
        # mean IoU over classes.
        "task": "instance",
        # The competition metric that validation, the OOF search and the reports optimise: auto (instance map_iou,
        # binary dice, multiclass mean_iou_classes) or a name from kseg.metric.TASK_METRICS: f2_iou (Airbus),
        # tgs_ap_iou (TGS), iou, dice (an instance run's union of objects), dice_classes (Severstal, multiclass).
        "metric": "auto",
        # multiclass: the class names, class id k = the k-th name (ids 1..n; a row outside them is an error);
        # null: ids 1..the highest id in train.csv, named by their number.
        "classes": None,
        # Images in train_dir that train.csv never names: skip them, or train on them as images without any mask
        # (empty: Severstal 2019 lists only the images with a defect, and its many defect-free images teach the
        # model, and the OOF search, what an empty prediction is worth).
        "unlisted": "skip",
        # DICOM images: null reads modality units (HU for CT) stretched per image by percentiles; [center, width]
        # (e.g. [40, 400], a soft-tissue window) or file (the file's WindowCenter/WindowWidth) maps them through
        # a fixed window, so the same HU give the same grey in every slice.
        "dicom_window": None,
        "schema": {
            "preset": None,
            "id_col": None,
            "rle_col": None,
            "height_col": None,
            "width_col": None,
            # C, F, or F-relative (SIIM-ACR's RLE: starts counted from the previous run, "-1" = empty mask).
            "rle_order": None,
            "class_col": None,
            "group_col": None,
            "submission_cols": None,
            # false: train.csv has no header line, just id_col,rle_col (SIIM); null = true unless the preset says.
            "header": None,
            # multiclass: a pixel in no row is background (null = background unless the preset says) or ignore
            # (void: left out of the loss and the metric, as CamVid's "Unlabelled").
            "unlabelled": None,
        },
        # When set, `kseg run` generates the synthetic demo competition into data.root if it is missing.
        "demo": None,
    },
    # allow_group_leak: a folds file with a group in two folds is a warning instead of an error.
    "folds": {"n_splits": 5, "seed": 42, "file": None, "allow_group_leak": False},
    "model": {
        # auto: Unet when `encoder_weights` gives pretrained weights, else unet_scratch (see model.py);
        # Unet, FPN or Linknet: segmentation_models with `backbone` and its `encoder_weights`;
        # unet_scratch: kseg's own U-Net for training from scratch (unet.py), shaped by `scratch`.
        "arch": "auto",
        "backbone": "resnet34",
        "encoder_weights": "imagenet",
        "scratch": {"filters": 16, "depth": 4, "residual": False, "se": False, "attention": False},
        "init_from": None,
        "encoder_freeze": False,
        # Keras' default 0.99 leaves BatchNorm's inference statistics wrong after short runs (see model.py).
        "bn_momentum": 0.9,
        # Per-image intensity normalisation before the backbone's own (see normalize.py): none, percentile
        # (stretch the 1st..99.8th percentile per channel, as stardist/cellpose) or standardize.
        "input_norm": "percentile",
        # What one stretch covers: channel (each channel its own, stardist) or image (all channels together,
        # keeping an RGB photograph's colour balance).
        "input_norm_scope": "channel",
        # Invert images: false, true, or auto: learned from the training labels; when a set mixes bright objects
        # on dark ground with dark on bright (fluorescence + H&E), a rule fitted on them picks the images to
        # invert (normalize.fit_polarity, written in plan.json); a set of one polarity inverts nothing.
        "invert": "auto",
        # Channels computed from the gray image and fed beside it (kseg.channels: median, nlmeans, multi_otsu,
        # yen; at most two): the input becomes [gray, extras..., gray], still three channels. []: the image as read.
        "extra_channels": [],
        # The output activation: auto = softmax over the channels for data.task multiclass (exclusive classes),
        # sigmoid per channel otherwise; softmax or sigmoid force one.
        "activation": "auto",
    },
    "train": {
        # The folds `kseg run` trains: all, or a list of fold indices (when compute is short, one fold trained
        # for all of it beats K under-trained ones: BENCHMARKS.md); prediction ensembles the trained folds.
        "folds": "all",
        "size": 256,
        "epochs": 30,
        # Per replica (one GPU or TPU core): the global batch is batch_size x replicas, and train.lr is scaled
        # by sqrt(replicas) (see train.scaled_lr).
        "batch_size": 8,
        # null: one pass over the fold's images, but at least min_steps_per_epoch steps (crops are drawn with
        # replacement), so a 30-image fold still gets enough optimizer steps and a 10,000-image one one pass.
        "steps_per_epoch": None,
        "min_steps_per_epoch": 50,
        # A compute budget: optimizer steps for the whole run. The plan then trains as many of train.folds as
        # get min_steps_per_fold steps each (at least one) and splits the budget between them (plan.py).
        "budget_steps": None,
        "min_steps_per_fold": 250,
        # The scale at which the network sees the images: auto (plan.py: objects with a median diameter above
        # target_diameter px are downscaled to it, never upscaled) or a number; written to plan.json.
        "scale": "auto",
        "target_diameter": 32,
        # Which flips and quarter turns augmentation and TTA may use: auto (plan.py: from how much the labels
        # prefer one half of the image; street scenes are upright), free, upright (up stays up) or fixed.
        "orientation": "auto",
        "lr": 1.0e-3,
        # cosine: per-step cosine decay after a linear warm-up over the first `warmup` share of all steps;
        # plateau: halve the learning rate when `monitor` stops improving; null: constant.
        "scheduler": "cosine",
        "warmup": 0.05,
        # An exponential moving average of the weights (momentum per step, e.g. 0.99; null: off), updated by the
        # optimizer under every strategy; validation and best.weights.h5 use the averaged weights.
        "ema": None,
        # The checkpoint kept (best.weights.h5) and early stopping follow this: val_score (the competition
        # metric on the validation images after postprocess.default) or val_loss.
        "monitor": "val_score",
        # Whole validation images scored after every epoch (an even spread over the fold's, by id): auto (as many as
        # fit in 8 megapixels, at least 8), a number, or null: all. The OOF predictions always cover every one.
        "val_images": "auto",
        "early_stopping": 8,
        "loss": "bce_dice",
        # Loss weight per output channel: null, a list, or auto (multiclass: (1 / pixel frequency in the training
        # fold) ** channel_weight_power, mean 1, printed per fold; see model.inverse_frequency_weights).
        "channel_weights": None,
        "channel_weight_power": 0.5,
        "border_width": 2,
        "seed": 42,
        "workers": None,
        # auto: a TPU when one is attached, else every GPU (MirroredStrategy) when there are several, else the
        # one device; default: one device; mirrored: every GPU, or every logical CPU device without one;
        # tpu: TPUStrategy (an error without a TPU).
        "strategy": "auto",
        # true: mixed_float16 on a GPU, mixed_bfloat16 on a TPU, float32 on a CPU (which gains nothing from it,
        # and says so); mixed_float16 or mixed_bfloat16 forces that policy on any device.
        "mixed_precision": False,
        "sampler": {"class_power": 0.5, "empty_fraction": None},
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
    # tile: predict images larger than this in overlapping windows (a multiple of 32; null: whole images).
    # Every TTA view of an image goes through the model as one batch.
    "predict": {"folds": "all", "tile": None},
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
            user = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                              f"save the config as UTF-8") from None
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


def is_int(value: Any) -> bool:
    """An integer that is not a bool (YAML ``true`` is an ``int`` to Python, and would run one epoch)."""
    return isinstance(value, int) and not isinstance(value, bool)


# Paths the pipeline cannot do without, and paths that may be null (unset).
_REQUIRED_PATHS = ("data.root", "data.train_csv", "data.train_dir", "data.test_dir", "output.dir")
_OPTIONAL_PATHS = ("data.sample_submission", "data.test_truth", "folds.file", "output.submission")
_BOOLS = ("postprocess.per_class", "folds.allow_group_leak", "model.encoder_freeze")


def _validate_values(cfg: Config) -> None:
    """Types and ranges of the values every command uses, so a wrong one is one ConfigError, not a traceback."""
    task_of(cfg["data"]["task"])
    from .metric import task_metric  # lazily: metric imports this module

    task_metric(cfg["data"]["task"], cfg["data"]["metric"])
    names = cfg["data"]["classes"]
    if names is not None and (not isinstance(names, list) or not names
                              or not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names)):
        raise ConfigError(f"data.classes must be null or a list of distinct class names (class id k = the k-th), "
                          f"got {names!r}")
    from .dicom import check_window  # cheap: pydicom is imported only to read a file

    check_window(cfg["data"]["dicom_window"], "data.dicom_window")
    if cfg["data"]["unlisted"] not in UNLISTED:
        raise ConfigError(f"data.unlisted must be one of {', '.join(UNLISTED)}, got {cfg['data']['unlisted']!r}")
    if cfg["model"]["activation"] not in ACTIVATIONS:
        raise ConfigError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {cfg['model']['activation']!r}")
    for dotted in _REQUIRED_PATHS + _OPTIONAL_PATHS:
        value = get(cfg, dotted)
        if value is None and dotted in _OPTIONAL_PATHS:
            continue
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip() or "\x00" in str(value):
            raise ConfigError(f"{dotted} must be a path (a non-empty string{', or null' if dotted in _OPTIONAL_PATHS else ''}), "
                              f"got {value!r}")
    if cfg["data"]["image_ext"] is None:
        cfg["data"]["image_ext"] = ""  # `image_ext:` left blank is the natural way to write "" (ids carry it)
    if not isinstance(cfg["data"]["image_ext"], str):
        raise ConfigError(f"data.image_ext must be a file extension such as '.png' (or '' when ids carry it), "
                          f"got {cfg['data']['image_ext']!r}")
    n_splits = cfg["folds"]["n_splits"]
    if not is_int(n_splits) or n_splits < 2:
        raise ConfigError(f"folds.n_splits must be an integer >= 2, got {n_splits!r}")
    seed = cfg["folds"]["seed"]
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"folds.seed must be a non-negative integer, got {seed!r}")
    for dotted in _BOOLS:
        value = get(cfg, dotted)
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted} must be true or false, got {value!r}")
    for key in ("epochs", "batch_size", "size"):
        value = cfg["train"][key]
        if not is_int(value) or value < 1:
            raise ConfigError(f"train.{key} must be a positive integer, got {value!r}")
    for dotted in ("train.folds", "predict.folds"):
        wanted = get(cfg, dotted)
        if not (wanted == "all" or is_int(wanted)
                or (isinstance(wanted, list) and wanted and all(is_int(k) for k in wanted))):
            raise ConfigError(f"{dotted} must be 'all', a fold index or a list of fold indices, got {wanted!r}")
        if isinstance(wanted, list) and len(set(wanted)) != len(wanted):
            raise ConfigError(f"{dotted} lists a fold twice: {wanted!r}")
        outside = [k for k in (wanted if isinstance(wanted, list) else [wanted]) if k != "all" and not 0 <= k < n_splits]
        if outside:
            raise ConfigError(f"{dotted}: fold(s) {outside} do not exist with folds.n_splits={n_splits} "
                              f"(folds are 0..{n_splits - 1})")
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


def output_dir(cfg: Mapping[str, Any]) -> Path:
    return Path(cfg["output"]["dir"])


def submission_path(cfg: Mapping[str, Any]) -> Path:
    """``output.submission``, or ``<output.dir>/submission.csv`` when unset."""
    value = cfg["output"]["submission"]
    return Path(value) if value else output_dir(cfg) / "submission.csv"


def folds_path(cfg: Mapping[str, Any]) -> Path:
    """``folds.file``, or ``<output.dir>/folds.csv`` when unset."""
    value = cfg["folds"]["file"]
    return Path(value) if value else RunDir.of(cfg).folds_csv


def dump(cfg: Config) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


def fingerprint(cfg: Config, *sections: str, ignore: Sequence[str] = ()) -> str:
    """Short hash of the named dotted sections without the ``ignore``d dotted keys, used to tell whether a
    stage's outputs are up to date."""
    picked = copy.deepcopy({s: get(cfg, s) for s in sections})
    for dotted in ignore:
        section, _, rest = dotted.partition(".")
        node = picked.get(section)
        *parents, leaf = rest.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha1(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:12]