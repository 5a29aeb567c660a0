"""The typed config: defaults that validate, errors that name the source and the key, the generated reference."""
from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest

from kseg import config
from kseg.config import DEFAULTS, KsegConfig, as_tree, describe, fingerprint, load_config, reference
from kseg.errors import ConfigError
from kseg.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]


def _leaves(model: type = KsegConfig, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (dotted key, field) of the config models that is not a section."""
    out = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{info.alias or name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, config.BaseModel):
            out += _leaves(annotation, key + ".")
        else:
            out.append((key, info))
    return out


def _accepts_a_mapping(info: Any) -> bool:
    """Free-form leaves (a demo's arguments, a search grid, a DICOM window) take mappings as they are."""
    text = str(info.annotation)
    return info.annotation is Any or "dict" in text or "Any" in text


def test_the_defaults_validate_and_the_reference_is_current() -> None:
    KsegConfig.model_validate(DEFAULTS)
    assert typing.get_args(config.Task) == tuple(TASKS)  # data.task's choices are the registered tasks
    assert as_tree(load_config()) == DEFAULTS
    committed = (REPO / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    assert committed == reference(), "docs/CONFIG.md is stale: python -m kseg.config > docs/CONFIG.md"
    for key, _ in _leaves():
        assert f"| `{key}` |" in committed


@pytest.mark.parametrize("key", [key for key, info in _leaves() if not _accepts_a_mapping(info)])
def test_every_typed_key_rejects_a_mapping_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--set {key}=\{{x: 1\}}: {key} must be .*, got \{{'x': 1\}}$"):
        load_config(None, [f"{key}={{x: 1}}"])


def test_an_error_names_the_file_or_the_set_that_gave_the_value(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: true\n  lr: 1e-3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: train.epochs must be a positive integer, got True$"):
        load_config(path)
    assert load_config(path, ["train.epochs=3"]).train.lr == 0.001  # YAML 1.2 floats: 1e-3 is a number
    with pytest.raises(ConfigError, match=r"^--set train.sampler.empty_fraction=2: train.sampler.empty_fraction must "
                                          r"be a number in \[0, 1\] or null, got 2$"):
        load_config(path, ["train.epochs=3", "train.sampler.empty_fraction=2"])
    path.write_text("model:\n  scratch:\n    filter: 8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: unknown config key 'model.scratch.filter' \(valid keys here: "
                                          r"attention, depth, filters, residual, se\)$"):
        load_config(path)


def test_sections_merge_key_by_key_and_free_form_values_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: 3\n  sampler:\n    class_power: 1\npostprocess:\n  grid:\n    min_area: [0]\n",
                    encoding="utf-8")
    cfg = load_config(path)
    assert cfg.train.epochs == 3 and cfg.train.batch_size == DEFAULTS["train"]["batch_size"]
    assert cfg.train.sampler.model_dump() == {**DEFAULTS["train"]["sampler"], "class_power": 1}
    assert cfg.postprocess.grid == {"min_area": [0]}  # a grid is the user's, whole
    assert cfg.train.target_diameter == 32


def test_the_stages_read_the_config_by_attribute_and_copies_keep_the_original() -> None:
    cfg = load_config(None, ["train.epochs=3"])
    assert isinstance(cfg, KsegConfig) and cfg.train.epochs == 3 and cfg.data.schema_.preset is None
    with pytest.raises(AttributeError):
        cfg.train.epoch  # noqa: B018 - a misspelt key fails, it does not read as None
    moved = config.with_values(cfg, {"data.root": "/elsewhere", "data.schema.preset": "tgs"})
    assert (moved.data.root, moved.data.schema_.preset, moved.train.epochs) == ("/elsewhere", "tgs", 3)
    assert (cfg.data.root, cfg.data.schema_.preset) == ("data", None)
    package = Path(config.__file__).parent
    indexed = [f"{path.name}:{number}" for path in sorted(package.rglob("*.py"))
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if re.search(r"\b(cfg|config|train_cfg|model_cfg)\[", line)]
    assert not indexed, f"config read by key instead of attribute: {indexed}"


def test_a_stage_fingerprint_reads_integral_floats_as_written() -> None:
    # validation reads `target_diameter: 32` as 32.0: runs made before the typed config must not look stale
    assert (fingerprint(load_config(), "train") == fingerprint(load_config(None, ["train.target_diameter=32.0"]), "train")
            != fingerprint(load_config(None, ["train.target_diameter=32.5"]), "train"))


@pytest.mark.parametrize(("annotation", "words"), [
    (config.Scheduler, "one of plateau, cosine or null"),
    (typing.Union[bool, typing.Literal["auto"]], "true, false or auto"),
    (config.TrainSection.model_fields["scale"].annotation, "'auto' or a number in [0.25, 4]"),
    (typing.Optional[config.PositiveInt], "a positive integer or null"),
    (list[config.NonNegativeInt], "a list of non-negative integers"),
    (typing.Literal[0, 1, 2], "one of 0, 1, 2"),
])
def test_types_are_described_in_words(annotation: Any, words: str) -> None:
    assert describe(annotation) == words
