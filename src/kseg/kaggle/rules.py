"""Kaggle's rules for kernels and datasets (names, metadata, licences, machine shapes), checked before a
push: a kernel Kaggle rejects or silently strips costs an hour and a submission slot.
"""
from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import Config
from ..errors import ConfigError

log = logging.getLogger(__name__)

KINDS = ("infer", "train")
KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"
SIDECAR = "kseg-kernel.json"
CODE_FILE = "kernel.py"

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
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_OWNER = re.compile(r"^[a-z0-9]+(?:[_-][a-z0-9]+)*$")

# Distributions the Kaggle image may lack → the module each one provides. The code dataset carries their
# wheels; the kernel installs, offline, only those it cannot import.

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
    """The Kaggle slugs of one experiment's kernels and datasets, all derived from ``cfg.name``."""

    owner: str
    base: str

    @classmethod
    def for_config(cls, cfg: Config, owner: str) -> "KernelNames":
        if not owner or not _OWNER.match(owner):
            raise ConfigError(f"Kaggle owner {owner!r} is not a Kaggle user name (lowercase letters, digits, "
                              "'-' or '_'): pass --owner <your Kaggle user name>")
        base = slugify(str(cfg.name))
        if not base:
            raise ConfigError(f"config name {cfg.name!r} gives an empty Kaggle slug: set name: to letters/digits")
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

def ref_problems(ref: Any, what: str, min_slug: int = 1, max_slug: int | None = None,
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
    if not SLUG_PATTERN.match(slug):
        problems.append(f"{what} {ref!r}: slug {slug!r} must be lowercase letters and digits joined by single '-'")
    if len(slug) < min_slug or (max_slug is not None and len(slug) > max_slug):
        limit = f"{min_slug} to {max_slug}" if max_slug else f"at least {min_slug}"
        problems.append(f"{what} {ref!r}: slug must be {limit} characters long, got {len(slug)}")
    return problems


def kernel_metadata_problems(meta: Mapping[str, Any], folder: Path | None = None) -> list[str]:
    """Everything ``kaggle kernels push`` would reject, plus the silent traps (title/slug mismatch renames
    the kernel; a missing ``enable_internet`` means internet ON, which a code competition refuses).
    ``folder`` given → the code file must exist in it."""
    problems = ref_problems(meta.get("id"), "id", min_slug=MIN_KERNEL_SLUG)
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
        problems += ref_problems(ref, "dataset source", allow_version=True)
    for ref in meta.get("kernel_sources") or []:
        problems += ref_problems(ref, "kernel source", min_slug=MIN_KERNEL_SLUG, allow_version=True)
    for slug in meta.get("competition_sources") or []:
        if not isinstance(slug, str) or not SLUG_PATTERN.match(slug):
            problems.append(f"competition source {slug!r} must be a competition slug such as "
                            "'sartorius-cell-instance-segmentation'")
    for ref in meta.get("model_sources") or []:
        if not isinstance(ref, str) or ref.count("/") != 4:
            problems.append(f"model source {ref!r} must be shaped 'owner/model/framework/variation/version'")
    return problems


def dataset_metadata_problems(meta: Mapping[str, Any]) -> list[str]:
    """What ``kaggle datasets create`` rejects: title and slug 6-50 characters, exactly one known license."""
    low, high = DATASET_TITLE_RANGE
    problems = ref_problems(meta.get("id"), "id", *DATASET_SLUG_RANGE)
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


def read_metadata(path: Path) -> tuple[dict[str, Any] | None, list[str]]:
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
    meta, problems = read_metadata(meta_path)
    if meta is None:
        return problems
    return [f"{meta_path}: {p}" for p in kernel_metadata_problems(meta, Path(path))]


def validate_dataset_dir(path: Path) -> list[str]:
    """Problems of a dataset folder: its metadata, and at least one file to upload."""
    meta_path = Path(path) / DATASET_METADATA
    meta, problems = read_metadata(meta_path)
    if meta is None:
        return problems
    problems = [f"{meta_path}: {p}" for p in dataset_metadata_problems(meta)]
    if not any(p.name != DATASET_METADATA for p in Path(path).iterdir()):
        problems.append(f"{path}: no files besides {DATASET_METADATA}")
    return problems


def raise_if_problems(problems: Sequence[str], what: str) -> None:
    if problems:
        raise ConfigError(f"{what}:\n  - " + "\n  - ".join(problems))


def base_ref(ref: str) -> str:
    """``owner/slug`` of a possibly version-pinned source ``owner/slug/N``."""
    return "/".join(ref.split("/")[:2])

