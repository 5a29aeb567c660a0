"""K-fold assignment of training images, written once to ``folds.csv`` and reused by every stage.

Images of one group (Sartorius ``sample_id``: one well, photographed several times) are near
duplicates; if they straddle folds the out-of-fold score is optimistic and post-processing is tuned
on leaked images. So folds are grouped, and stratified by class so each fold sees every cell type.
When the data lacks groups or classes the next best splitter is used and a warning says so.

Every read checks that the file still fits the config: its folds are exactly ``0..n_splits-1``, the
sidecar ``folds.meta.json`` that ``kseg folds`` writes next to it records the same ``n_splits``, seed and
group column, and no group spans two folds (``folds.allow_group_leak: true`` turns that error into a
warning that names the groups).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from kseg import config as config_module
from kseg import data
from kseg.errors import DataError, warn
from kseg.files import atomic_path, write_json

from .config import Config

log = logging.getLogger(__name__)

__all__ = ["MISSING_CLASS", "make_folds", "fold_table", "command_folds", "read_folds", "sidecar_path"]

# ASCII digits only: str.isdigit() accepts '²' or '٣', which int() or pandas then reject.
_FOLD_NUMBER = re.compile(r"[0-9]+")
# Groups named in a leak error or warning; the count says how many more there are.
_SHOWN_GROUPS = 5

# The class of an image without one, in folds and in the dataset statistics.
MISSING_CLASS = "(none)"


def _present_values(frame: pd.DataFrame, column: str | None) -> pd.Series | None:
    """The column as text with missing cells as ``None``, or ``None`` when it is absent or entirely empty."""
    if column is None or column not in frame.columns:
        return None
    values = frame[column].map(lambda value: None if pd.isna(value) or str(value).strip() == "" else str(value))
    return None if values.isna().all() else values


def make_folds(frame: pd.DataFrame, n_splits: int, seed: int, group_col: str | None = "group",
               class_col: str | None = "cls") -> pd.DataFrame:
    """``id, fold`` for every image, sorted by id; the same frame and seed always give the same folds.

    StratifiedGroupKFold when there are groups and classes; otherwise GroupKFold (groups only),
    StratifiedKFold (classes only) or KFold, each fallback announced by a one-line warning.
    An image with a missing group is its own group; a missing class counts as its own class.
    """
    frame = frame.sort_values("id").reset_index(drop=True)
    n_images = len(frame)
    if n_splits < 2 or n_splits > n_images:
        raise DataError(f"cannot make {n_splits} folds from {n_images} images: each of the folds needs at "
                        f"least one validation image, so folds.n_splits must be between 2 and {n_images}")
    groups = _present_values(frame, group_col)
    classes = _present_values(frame, class_col)
    if groups is not None:
        groups = groups.fillna("image:" + frame["id"])
        n_groups = groups.nunique()
        if n_splits > n_groups:
            raise DataError(f"cannot make {n_splits} folds from {n_groups} groups of column {group_col!r}: all "
                            f"images of a group stay in one fold, so folds.n_splits must be at most {n_groups}")
    if classes is not None:
        classes = classes.fillna(MISSING_CLASS)
    placeholder = np.zeros((n_images, 1))

    # Stratifying needs a class with at least n_splits images (sklearn refuses otherwise).
    stratifiable = classes is not None and classes.value_counts().max() >= n_splits
    no_classes = f"no class column ({class_col!r})" if classes is None else f"every class has fewer than {n_splits} images"

    if groups is not None and stratifiable:
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        splits = splitter.split(placeholder, classes, groups)
    elif groups is not None:
        warn(f"{no_classes}; folds are grouped by {group_col!r} but not stratified (GroupKFold)")
        splits = GroupKFold(n_splits, shuffle=True, random_state=seed).split(placeholder, groups=groups)
    elif stratifiable:
        warn(f"no group column ({group_col!r}); folds are stratified by {class_col!r} but images of "
              f"one group may land in different folds (StratifiedKFold)")
        splits = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(placeholder, classes)
    else:
        warn(f"no group column ({group_col!r}) and {no_classes}; folds are plain random splits (KFold)")
        splits = KFold(n_splits, shuffle=True, random_state=seed).split(placeholder)

    fold = np.full(n_images, -1, dtype=np.int64)
    for fold_number, (_, validation) in enumerate(splits):
        fold[validation] = fold_number
    return pd.DataFrame({"id": frame["id"].to_numpy(), "fold": fold})


def fold_table(frame: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """Images, instances, groups and images per class of each fold, plus a total row, to eyeball balance."""
    merged = frame.merge(folds, on="id", validate="one_to_one")
    by_fold = merged.groupby("fold")
    table = pd.DataFrame({"images": by_fold.size(), "instances": by_fold["n_instances"].sum()})
    groups = _present_values(merged, "group")
    if groups is not None:
        groups = groups.fillna("image:" + merged["id"])  # as in make_folds: an image without group is its own
        table["groups"] = groups.groupby(merged["fold"]).nunique()
    classes = _present_values(merged, "cls")
    if classes is not None:
        per_class = pd.crosstab(merged["fold"], classes.fillna(MISSING_CLASS)).add_prefix("images:")
        table = table.join(per_class)
    total = table.sum()
    if groups is not None:
        total["groups"] = groups.nunique()
    table.index = table.index.astype(str)
    table.loc["total"] = total
    table.index.name = "fold"
    return table.astype(int)


def sidecar_path(folds_file: str | Path) -> Path:
    """``folds.meta.json`` next to ``folds.csv``: the settings the folds were made with."""
    return Path(folds_file).with_suffix(".meta.json")


def _settings(cfg: Config) -> dict[str, Any]:
    """What makes a folds file: a change of any of these makes a different split."""
    schema = data.schema_from_config(cfg)
    return {"n_splits": cfg.folds.n_splits, "seed": cfg.folds.seed, "group_col": schema.group_col,
            "class_col": schema.class_col}


def command_folds(cfg: Config) -> Path:
    """Assign folds from train.csv (no mask decoding), write ``folds.csv`` atomically, print the table.

    The settings go to the sidecar (:func:`sidecar_path`) so a later read can tell a stale file.
    """
    path = config_module.folds_path(cfg)
    if path.is_dir():
        raise DataError(f"folds.file {path} is a folder; it must name a CSV file")
    frame = data.read_index(cfg)
    folds = make_folds(frame, cfg.folds.n_splits, cfg.folds.seed)
    with atomic_path(path) as tmp:
        folds.to_csv(tmp, index=False)
    write_json(sidecar_path(path), _settings(cfg))
    log.info(fold_table(frame, folds).to_string())
    log.info(f"wrote {path}")
    return path


def read_folds(path: str | Path, ids: Iterable[str], *, cfg: Config | None = None,
               groups: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """``id, fold`` of exactly ``ids`` (sorted); every id must have one integer fold in the file.

    Ids in the file but not in ``ids`` are ignored, so training on a subset of images works. With
    ``cfg``, the file must match the config (folds ``0..n_splits-1``; the sidecar's n_splits, seed and
    group column): a stale file would train the wrong folds. With ``groups`` (group of each id, ``None``
    for none), a group in two folds is an error naming the groups, or a warning when
    ``folds.allow_group_leak`` is true: leaked near-duplicates make the OOF score optimistic.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"folds file {path} is a folder, not a CSV file (check folds.file)")
    if not path.is_file():
        raise DataError(f"folds file not found: {path} (create it with `kseg folds`)")
    table = data.read_csv(path, "folds file")
    missing_columns = [column for column in ("id", "fold") if column not in table.columns]
    if missing_columns:
        raise DataError(f"{path}: missing column(s) {', '.join(missing_columns)}; the file has columns "
                        f"{', '.join(map(str, table.columns))}")
    lines = data.csv_lines(table)
    for line, value in zip(lines, table["fold"]):
        if not _FOLD_NUMBER.fullmatch(value.strip()):
            raise DataError(f"{path} line {line}: fold is {value!r}, not a non-negative integer")
    duplicated = table["id"].duplicated().to_numpy()
    if duplicated.any():
        position = int(np.flatnonzero(duplicated)[0])
        raise DataError(f"{path} line {lines[position]}: id {table['id'].iloc[position]!r} appears more than once")
    fold_numbers = table["fold"].str.strip().astype(int)
    if cfg is not None:
        _check_matches_config(path, cfg, sorted(set(fold_numbers.tolist())))
    wanted = sorted(set(ids))
    fold_of = dict(zip(table["id"], fold_numbers))
    missing = [image_id for image_id in wanted if image_id not in fold_of]
    if missing:
        raise DataError(f"{path}: {len(missing)} training image(s) have no fold, e.g. {', '.join(missing[:5])}; "
                        f"the folds file is stale, recreate it with `kseg folds`")
    result = pd.DataFrame({"id": wanted, "fold": [fold_of[image_id] for image_id in wanted]})
    if groups is not None:
        allow = cfg is not None and cfg.folds.allow_group_leak
        _check_groups(path, result, groups, allow)
    return result


def _check_matches_config(path: Path, cfg: Config, fold_numbers: list[int]) -> None:
    """The folds of the file against ``folds.n_splits``, and the sidecar's settings against the config."""
    n_splits = cfg.folds.n_splits
    if fold_numbers != list(range(n_splits)):
        raise DataError(f"{path}: has folds {', '.join(map(str, fold_numbers))} but folds.n_splits is {n_splits} "
                        f"(expected folds 0..{n_splits - 1}); the folds file is stale: recreate it with `kseg folds` "
                        f"or set folds.n_splits to match")
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return  # a hand-written folds file: only its folds and groups can be checked
    try:
        made_with = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{sidecar}: not readable JSON ({exc}); delete it and run `kseg folds`") from None
    wanted = _settings(cfg)
    changed = [f"{key} {made_with.get(key)!r} -> {wanted[key]!r}" for key in ("n_splits", "seed", "group_col")
               if isinstance(made_with, dict) and made_with.get(key) != wanted[key]]
    if changed:
        raise DataError(f"{path} was made with other settings than the config ({'; '.join(changed)}, see {sidecar}); "
                        f"recreate it with `kseg folds` (trained folds then need retraining)")


def _check_groups(path: Path, folds: pd.DataFrame, groups: Mapping[str, str | None], allow: bool) -> None:
    """Error (or, when allowed, a warning) naming the groups whose images are in more than one fold."""
    group = folds["id"].map(lambda image_id: groups.get(image_id))
    known = group.notna()
    folds_of_group = folds["fold"][known].groupby(group[known]).unique()
    leaks = {str(name): sorted(int(f) for f in values) for name, values in folds_of_group.items() if len(values) > 1}
    if not leaks:
        return
    shown = "; ".join(f"{name!r} in folds {', '.join(map(str, found))}"
                      for name, found in sorted(leaks.items())[:_SHOWN_GROUPS])
    more = f" and {len(leaks) - _SHOWN_GROUPS} more" if len(leaks) > _SHOWN_GROUPS else ""
    message = (f"{path}: {len(leaks)} of {folds_of_group.size} groups have images in more than one fold "
               f"({shown}{more}); near-duplicate images then leak into validation")
    if not allow:
        raise DataError(f"{message}. Recreate the file with `kseg folds`, or set folds.allow_group_leak: true")
    warn(f"{message}; continuing because folds.allow_group_leak is true")
