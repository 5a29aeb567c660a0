"""Kaggle kernels: metadata rules, the generated entry point run offline, push through a fake kaggle CLI."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from kseg import kaggle as kseg_kaggle
from kseg.cli import main
from kseg.config import Config, dump, load_config
from kseg.errors import ConfigError, DataError, KaggleError, KsegWarning
from kseg.kaggle import (
    BUNDLED,
    NETWORK_GUARD_MESSAGE,
    build_kernel,
    build_train_kernels,
    bundle,
    bundled_requirements,
    entrypoint,
    push,
    run_local,
    sandbox,
    slugify,
    validate_dataset_dir,
    validate_kernel_dir,
)
from kseg.kaggle import competition as kaggle_cli
from kseg.run import RunDir

OWNER = "tester"
COMPETITION = "sartorius-cell-instance-segmentation"
SECRET = "s3cr3t-kaggle-key-0123456789"
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture
def fake_wheels(tmp_path: Path) -> list[Path]:
    """Empty files named like the bundled wheels: the build copies them, nothing installs them here."""
    folder = tmp_path / "wheel-cache"
    folder.mkdir()
    paths = [folder / f"{bundle._wheel_name(dist)}-1.0-py3-none-any.whl" for dist in BUNDLED]
    for path in paths:
        path.write_bytes(b"not a real wheel")
    return paths


@pytest.fixture
def competition_dir(tmp_path: Path, fixtures_dir: Path) -> Path:
    """A competition folder whose test/ holds the two real 704x520 Sartorius images."""
    root = tmp_path / COMPETITION
    (root / "test").mkdir(parents=True)
    for image in sorted((fixtures_dir / "sartorius" / "train").glob("*.png")):
        shutil.copy(image, root / "test" / image.name)
    return root


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """What training and search leave in output.dir, with placeholder weights."""
    run = RunDir(tmp_path / "run")
    for fold in (0, 1):
        run.oof(fold).mkdir(parents=True)
        run.weights(fold).write_bytes(b"best" * 10)
        run.last_weights(fold).write_bytes(b"last" * 10)
        (run.oof(fold) / "img.npz").write_bytes(b"oof")
    run.channels.write_text(json.dumps({"channels": ["foreground", "border"], "classes": []}))
    run.postprocess.write_text(json.dumps({"default": {"fg_threshold": 0.5}}))
    run.folds_csv.write_text("id,fold\na,0\nb,1\n")
    (run.root / "config.yaml").write_text("name: unit-demo\n")
    return run.root


@pytest.fixture
def cfg(run_dir: Path, competition_dir: Path) -> Config:
    return load_config(None, ["name=unit-demo", "data.schema.preset=sartorius", f"data.root={competition_dir}",
                              f"output.dir={run_dir}", "folds.n_splits=2", "model.encoder_weights=null"])


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _build_infer(cfg: dict, tmp_path: Path, wheels: list[Path], **kwargs) -> Path:
    return build_kernel(cfg, "infer", owner=OWNER, out_root=tmp_path / "kernels", competition=COMPETITION,
                        wheels=wheels, **kwargs)


# -------------------------------------------------------------------------------------------- build

def test_infer_kernel_metadata_follows_the_kaggle_rules(cfg, tmp_path, fake_wheels):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    meta = _json(kernel / "kernel-metadata.json")
    assert meta["id"] == f"{OWNER}/unit-demo-infer" and kernel.name == "unit-demo-infer"
    assert slugify(meta["title"]) == "unit-demo-infer" and len(meta["title"]) >= 5
    assert (kernel / meta["code_file"]).is_file()
    assert (meta["language"], meta["kernel_type"], meta["is_private"]) == ("python", "script", True)
    assert meta["enable_gpu"] is False and meta["enable_tpu"] is False
    assert "enable_internet" in meta and meta["enable_internet"] is False
    assert meta["competition_sources"] == [COMPETITION]
    assert meta["dataset_sources"] == [f"{OWNER}/unit-demo-kseg-code", f"{OWNER}/unit-demo-kseg-weights"]
    assert meta["kernel_sources"] == [] and meta["model_sources"] == []
    assert validate_kernel_dir(kernel) == []
    compile((kernel / "kernel.py").read_text(), "kernel.py", "exec")


def test_infer_kernel_datasets_hold_what_predict_needs(cfg, tmp_path, fake_wheels, run_dir):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    code, weights = kernel.parent / "unit-demo-kseg-code", kernel.parent / "unit-demo-kseg-weights"
    for folder in (code, weights):
        meta = _json(folder / "dataset-metadata.json")
        assert meta["id"] == f"{OWNER}/{folder.name}" and meta["licenses"] == [{"name": "other"}]
        assert 6 <= len(meta["title"]) <= 50
        assert validate_dataset_dir(folder) == []
    assert (code / "kseg" / "kaggle" / "entrypoint.py").is_file() and not list(code.rglob("__pycache__"))
    assert sorted(p.name for p in (code / "wheels").iterdir()) == sorted(p.name for p in fake_wheels)
    assert load_config(code / "config.yaml") == cfg
    files = sorted(str(p.relative_to(weights)) for p in weights.rglob("*") if p.is_file())
    assert files == ["channels.json", "config.yaml", "dataset-metadata.json", "fold0/best.weights.h5",
                     "fold1/best.weights.h5", "folds.csv", "kseg-dataset.json", "postprocess.json"]
    copied, original = weights / "fold1" / "best.weights.h5", run_dir / "fold1" / "best.weights.h5"
    assert copied.read_bytes() == original.read_bytes()
    assert copied.stat().st_ino != original.stat().st_ino  # a copy, not a hard link into the training run
    for folder in (code, weights):
        assert _json(folder / "kseg-dataset.json")["id"] == f"{OWNER}/{folder.name}"


def test_train_kernel_is_a_gpu_kernel_without_weights_dataset(cfg, tmp_path, fake_wheels):
    shutil.rmtree(cfg.output.dir)  # a train kernel must not need a local run
    kernel = build_kernel(cfg, "train", 1, OWNER, tmp_path / "kernels", COMPETITION, wheels=fake_wheels)
    meta = _json(kernel / "kernel-metadata.json")
    assert meta["id"] == f"{OWNER}/unit-demo-train-fold1"
    assert meta["enable_gpu"] is True and meta["enable_internet"] is False
    assert meta["dataset_sources"] == [f"{OWNER}/unit-demo-kseg-code"]
    assert _json(kernel / "kseg-kernel.json")["fold"] == 1


def test_train_kernel_gets_internet_only_to_download_imagenet_weights(cfg, tmp_path, fake_wheels):
    cfg.model.encoder_weights = "imagenet"
    kernel = build_kernel(cfg, "train", 0, OWNER, tmp_path / "kernels", COMPETITION, wheels=fake_wheels)
    assert _json(kernel / "kernel-metadata.json")["enable_internet"] is True


def test_local_encoder_weights_are_bundled_and_remapped(cfg, tmp_path, fake_wheels):
    encoder = tmp_path / "resnet18_imagenet.h5"
    encoder.write_bytes(b"h5")
    cfg.model.encoder_weights = str(encoder)
    kernel = build_kernel(cfg, "train", 0, OWNER, tmp_path / "kernels", COMPETITION, wheels=fake_wheels)
    assert (tmp_path / "kernels" / "unit-demo-kseg-code" / "assets" / encoder.name).is_file()
    assert _json(kernel / "kseg-kernel.json")["assets"] == {"model.encoder_weights": f"assets/{encoder.name}"}
    assert _json(kernel / "kernel-metadata.json")["enable_internet"] is False


def test_fold_fan_out_feeds_the_inference_kernel(cfg, tmp_path, fake_wheels):
    trains = build_train_kernels(cfg, OWNER, tmp_path / "kernels", COMPETITION, wheels=fake_wheels)
    assert [k.name for k in trains] == ["unit-demo-train-fold0", "unit-demo-train-fold1"]
    infer = _build_infer(cfg, tmp_path, fake_wheels, from_kernels=True)
    meta = _json(infer / "kernel-metadata.json")
    assert meta["kernel_sources"] == [f"{OWNER}/unit-demo-train-fold0", f"{OWNER}/unit-demo-train-fold1"]
    assert meta["dataset_sources"] == [f"{OWNER}/unit-demo-kseg-code"]


def test_fan_out_follows_train_folds_and_the_step_budget(cfg, tmp_path, fake_wheels):
    """The kernels train what a local run would: the planned folds, each for its share of the budget."""
    cfg.folds.n_splits, cfg.train.epochs = 5, 4
    cfg.train.budget_steps, cfg.train.steps_per_epoch, cfg.train.min_steps_per_fold = 600, None, 250
    trains = build_train_kernels(cfg, OWNER, tmp_path / "kernels", COMPETITION, wheels=fake_wheels)
    assert [k.name for k in trains] == ["unit-demo-train-fold0", "unit-demo-train-fold1"]
    assert _json(trains[0] / "kseg-kernel.json")["overrides"] == {
        "train.verbose": 2, "train.budget_steps": None, "train.steps_per_epoch": 75}
    cfg.train.budget_steps, cfg.train.folds = None, [3]
    assert [k.name for k in build_train_kernels(cfg, OWNER, tmp_path / "k2", COMPETITION, wheels=fake_wheels)] == [
        "unit-demo-train-fold3"]


def test_competition_comes_from_the_kaggle_competition_key(cfg, tmp_path, fake_wheels):
    cfg.kaggle.competition = "another-competition"
    kernel = build_kernel(cfg, "infer", owner=OWNER, out_root=tmp_path / "kernels", wheels=fake_wheels)
    assert _json(kernel / "kernel-metadata.json")["competition_sources"] == ["another-competition"]
    kernel = _build_infer(cfg, tmp_path, fake_wheels)  # --competition wins over the key
    assert _json(kernel / "kernel-metadata.json")["competition_sources"] == [COMPETITION]


@pytest.mark.parametrize("value, message", [
    (None, "kaggle.competition is not set"),
    ("Not A Slug", "kaggle.competition 'Not A Slug' is not a Kaggle competition slug"),
])
def test_build_needs_a_valid_kaggle_competition_key(cfg, tmp_path, fake_wheels, value, message):
    cfg.kaggle.competition = value  # data.root's folder name is never guessed as the slug
    with pytest.raises(ConfigError, match=message):
        build_kernel(cfg, "infer", owner=OWNER, out_root=tmp_path / "kernels", wheels=fake_wheels)


@pytest.mark.parametrize("kwargs, message", [
    ({"owner": "Bad Owner"}, "not a Kaggle user name"),
    ({"kind": "serve"}, "kernel kind must be one of"),
    ({"kind": "train", "fold": None}, "needs --fold between 0 and 1"),
    ({"kind": "train", "fold": 2}, "needs --fold between 0 and 1"),
    ({"fold": 0}, "--fold is for train kernels"),
    ({"competition": "Not A Slug"}, "not a Kaggle competition slug"),
])
def test_build_rejects_bad_arguments(cfg, tmp_path, fake_wheels, kwargs, message):
    args = {"kind": "infer", "fold": None, "owner": OWNER, "competition": COMPETITION, **kwargs}
    with pytest.raises(ConfigError, match=message):
        build_kernel(cfg, out_root=tmp_path / "kernels", wheels=fake_wheels, **args)
    assert not (tmp_path / "kernels").exists()


def test_build_rejects_a_name_too_long_for_a_kaggle_slug(cfg, tmp_path, fake_wheels):
    cfg.name = "a-very-long-experiment-name-that-kaggle-will-refuse-x"
    with pytest.raises(ConfigError, match="slug must be 6 to 50 characters"):
        _build_infer(cfg, tmp_path, fake_wheels)


def test_build_names_every_missing_run_file(cfg, tmp_path, fake_wheels, run_dir):
    (run_dir / "channels.json").unlink()
    cfg.predict.folds = [0, 1, 2]
    with pytest.raises(ConfigError) as info:
        _build_infer(cfg, tmp_path, fake_wheels)
    assert "fold2/best.weights.h5" in str(info.value) and "channels.json" in str(info.value)


def test_build_without_any_fold_weights_points_to_training(cfg, tmp_path, fake_wheels, run_dir):
    for weights in run_dir.glob("fold*/best.weights.h5"):
        weights.unlink()
    with pytest.raises(ConfigError, match="no fold weights"):
        _build_infer(cfg, tmp_path, fake_wheels)


def test_build_refuses_a_code_dataset_missing_a_wheel(cfg, tmp_path, fake_wheels):
    with pytest.raises(ConfigError, match="no wheel for tf-keras"):
        _build_infer(cfg, tmp_path, [w for w in fake_wheels if not w.name.startswith("tf_keras")])


def test_bundled_requirements_pin_the_installed_versions():
    pins = bundled_requirements()
    assert [p.split("==")[0] for p in pins] == list(BUNDLED) and all(p.split("==")[1] for p in pins)


def test_extra_tf_keras_minors_are_bundled_besides_the_pinned_one():
    assert kseg_kaggle.tf_keras_requirements(["segmentation-models==1.0.1", "tf-keras==2.21.0"]) == [
        "tf-keras==2.18.*", "tf-keras==2.19.*", "tf-keras==2.20.*"]


def test_kernel_py_is_the_entrypoint_module_with_its_settings(cfg, tmp_path, fake_wheels):
    """kernel.py is kseg.kaggle.entrypoint's own source (so its functions are tested by importing it) with
    the kernel's settings, as JSON, in place of the empty SETTINGS."""
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    script = (kernel / "kernel.py").read_text()
    source = Path(entrypoint.__file__).read_text()
    differing = [(a, b) for a, b in zip(script.splitlines(), source.splitlines()) if a != b]
    assert len(script.splitlines()) == len(source.splitlines()) and len(differing) == 1
    assert differing[0][1] == "SETTINGS: dict = {}  # the built kernel.py holds the kernel's settings here, as JSON " \
                              "(bundle.kernel_script)"
    namespace: dict = {"__name__": "kseg_kernel_under_test"}
    exec(compile(script, "kernel.py", "exec"), namespace)
    sidecar = json.loads((kernel / "kseg-kernel.json").read_text())
    assert namespace["SETTINGS"] == {key: sidecar[key] for key in namespace["SETTINGS"]}
    assert namespace["SETTINGS"]["kind"] == "infer" and namespace["SETTINGS"]["code_dataset"].endswith("-kseg-code")


@pytest.mark.parametrize("mounted_at, kind, ref", [
    ("competitions/sartorius", "competition", "sartorius"),            # current layout
    ("sartorius", "competition", "sartorius"),                         # legacy flat layout
    ("datasets/tester/unit-kseg-code", "dataset", "tester/unit-kseg-code"),
    ("unit-kseg-code", "dataset", "tester/unit-kseg-code/3"),           # flat, version-pinned ref
    ("notebooks/tester/unit-train-fold0", "kernel", "tester/unit-train-fold0"),
    ("datasets/someone-else/renamed/inner", "dataset", "tester/unit-kseg-code"),  # found by its marker
])
def test_entrypoint_finds_an_input_in_every_layout(tmp_path, monkeypatch, mounted_at, kind, ref):
    monkeypatch.setattr(entrypoint, "INPUT", tmp_path)
    folder = tmp_path / mounted_at
    folder.mkdir(parents=True)
    if mounted_at.endswith("inner"):
        (folder / entrypoint.MARKER).write_text(json.dumps({"id": "tester/unit-kseg-code"}))
    assert entrypoint.find_input(kind, ref) == folder


def test_entrypoint_skips_a_flat_folder_of_another_dataset_and_lists_what_is_attached(tmp_path, monkeypatch):
    """A flat folder of the same slug holding another kseg dataset's marker is not this input; when nothing
    matches, the error lists the attached inputs."""
    monkeypatch.setattr(entrypoint, "INPUT", tmp_path)
    (tmp_path / "unit-kseg-code").mkdir()
    (tmp_path / "unit-kseg-code" / entrypoint.MARKER).write_text(json.dumps({"id": "other/unit-kseg-code"}))
    (tmp_path / "competitions" / "sartorius").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"dataset tester/unit-kseg-code not found .*attached inputs:\n  competitions"):
        entrypoint.find_input("dataset", "tester/unit-kseg-code")


def test_entrypoint_links_a_run_tree_without_copying(tmp_path):
    source, target = tmp_path / "weights", tmp_path / "working" / "run"
    (source / "fold0").mkdir(parents=True)
    (source / "fold0" / "best.weights.h5").write_bytes(b"w")
    (source / "postprocess.json").write_text("{}")
    entrypoint.link_tree(source, target)
    assert (target / "fold0" / "best.weights.h5").read_bytes() == b"w" and (target / "postprocess.json").is_file()
    assert (target / "fold0" / "best.weights.h5").is_symlink()


TF_KERAS_WHEELS = ["segmentation_models-1.0.1-py3-none-any.whl", "tf_keras-2.18.0-py3-none-any.whl",
                   "tf_keras-2.19.0-py3-none-any.whl", "tf_keras-2.20.1-py3-none-any.whl",
                   "tf_keras-2.21.0-py3-none-any.whl"]


@pytest.mark.parametrize("tf_version, image_tf_keras, expected", [
    ("2.19.1", "2.19.0", None),                                       # the image's own one matches
    ("2.19.1", None, "tf_keras-2.19.0-py3-none-any.whl"),             # none on the image
    ("2.20.0", "2.18.0", "tf_keras-2.20.1-py3-none-any.whl"),         # the image's one is for another TF
    ("2.21.0", "2.21.0", None),
])
def test_kernel_picks_the_tf_keras_matching_the_images_tensorflow(tf_version, image_tf_keras, expected):
    assert entrypoint.tf_keras_plan(tf_version, image_tf_keras, TF_KERAS_WHEELS) == expected


def test_kernel_names_both_versions_when_no_tf_keras_fits():
    plan = entrypoint.tf_keras_plan
    with pytest.raises(SystemExit, match=r"TensorFlow 2\.17\.1 and tf-keras 2\.16\.0, and the code dataset bundles "
                                         r"tf-keras 2\.18\.0, 2\.19\.0, 2\.20\.1, 2\.21\.0; .* minor version 2\.17"):
        plan("2.17.1", "2.16.0", TF_KERAS_WHEELS)
    with pytest.raises(SystemExit, match="TensorFlow is not installed"):
        plan(None, None, TF_KERAS_WHEELS)


@pytest.mark.parametrize("accelerator, shape, gpu, tpu", [
    ("gpu-p100", "NvidiaTeslaP100", True, False), ("gpu", "NvidiaTeslaT4", True, False),
    ("tpu", "Tpu1VmV38", False, True), ("none", None, False, False),
])
def test_accelerator_sets_the_machine_shape(cfg, tmp_path, fake_wheels, accelerator, shape, gpu, tpu):
    kernel = build_kernel(cfg, "train", 0, OWNER, tmp_path / "kernels", COMPETITION, wheels=fake_wheels,
                          accelerator=accelerator)
    meta = _json(kernel / "kernel-metadata.json")
    assert (meta.get("machine_shape"), meta["enable_gpu"], meta["enable_tpu"]) == (shape, gpu, tpu)
    assert validate_kernel_dir(kernel) == []


def test_build_rejects_an_unknown_accelerator(cfg, tmp_path, fake_wheels):
    with pytest.raises(ConfigError, match="--accelerator 'a100' must be one of none, gpu"):
        _build_infer(cfg, tmp_path, fake_wheels, accelerator="a100")


def test_inference_kernel_gets_the_gpu_when_the_config_asks(cfg, tmp_path, fake_wheels):
    cfg.kaggle.infer_gpu = True
    assert _json(_build_infer(cfg, tmp_path, fake_wheels) / "kernel-metadata.json")["enable_gpu"] is True
    kernel = _build_infer(cfg, tmp_path, fake_wheels, enable_gpu=False)  # --no-gpu wins
    assert _json(kernel / "kernel-metadata.json")["enable_gpu"] is False


# ---------------------------------------------------------------------------------------- validation

def test_validate_kernel_dir_lists_every_problem(cfg, tmp_path, fake_wheels):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    meta = _json(kernel / "kernel-metadata.json")
    meta.update({"id": "no-slash", "title": "abc", "code_file": "missing.py", "language": "julia",
                 "kernel_type": "app", "dataset_sources": ["just-a-slug"], "enable_gpu": "yes"})
    del meta["enable_internet"]
    (kernel / "kernel-metadata.json").write_text(json.dumps(meta))
    problems = "\n".join(validate_kernel_dir(kernel))
    for expected in ("id 'no-slash' must be shaped 'owner/slug'", "title 'abc' must be at least 5",
                     "code_file 'missing.py' not found", "language 'julia'", "kernel_type 'app'",
                     "enable_internet must be written explicitly", "enable_gpu must be true or false",
                     "dataset source 'just-a-slug'"):
        assert expected in problems
    assert all(line.startswith(str(kernel / "kernel-metadata.json")) for line in validate_kernel_dir(kernel))


def test_validate_kernel_dir_catches_a_title_that_renames_the_kernel(cfg, tmp_path, fake_wheels):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    meta = _json(kernel / "kernel-metadata.json")
    meta["title"] = "Unit Demo Inference"
    (kernel / "kernel-metadata.json").write_text(json.dumps(meta))
    assert any("gives the slug 'unit-demo-inference' but id says 'unit-demo-infer'" in p
               for p in validate_kernel_dir(kernel))


def test_validate_kernel_dir_reports_missing_and_broken_metadata(tmp_path):
    assert validate_kernel_dir(tmp_path) == [f"{tmp_path / 'kernel-metadata.json'}: not found"]
    (tmp_path / "kernel-metadata.json").write_text("{not json")
    assert "not valid JSON" in validate_kernel_dir(tmp_path)[0]


def test_validate_dataset_dir_checks_title_id_license_and_files(tmp_path):
    (tmp_path / "dataset-metadata.json").write_text(json.dumps({"title": "abc", "id": "Owner/x", "licenses": []}))
    problems = "\n".join(validate_dataset_dir(tmp_path))
    for expected in ("title 'abc' must be 6 to 50", "owner 'Owner'", "slug must be 6 to 50",
                     "licenses must hold exactly one entry", "no files besides dataset-metadata.json"):
        assert expected in problems


# ----------------------------------------------------------------------------------------- run-local

def _hand_kernel(tmp_path: Path, script: str, kind: str = "infer") -> Path:
    """A kernel folder with a given script, next to a code-dataset folder holding the config."""
    root = tmp_path / "kernels"
    code = root / "tiny-kseg-code"
    code.mkdir(parents=True)
    (code / "config.yaml").write_text(dump(load_config(None, ["data.schema.preset=sartorius"])))
    (code / "dataset-metadata.json").write_text(json.dumps(
        {"title": "tiny kseg code", "id": f"{OWNER}/tiny-kseg-code", "licenses": [{"name": "other"}]}))
    kernel = root / "tiny-kernel"
    kernel.mkdir()
    (kernel / "kernel.py").write_text(script)
    (kernel / "kernel-metadata.json").write_text(json.dumps({
        "id": f"{OWNER}/tiny-kernel", "title": "tiny kernel", "code_file": "kernel.py", "language": "python",
        "kernel_type": "script", "is_private": True, "enable_gpu": False, "enable_internet": False,
        "dataset_sources": [f"{OWNER}/tiny-kseg-code"], "competition_sources": [COMPETITION],
        "kernel_sources": []}))
    return kernel


WRITE_SUBMISSION = f"""
import os
from pathlib import Path

root = Path(os.environ["KSEG_KAGGLE_ROOT"])
assert Path.cwd() == (root / "working").resolve(), Path.cwd()
competition = [p for p in (root / "input" / "competitions" / "{COMPETITION}", root / "input" / "{COMPETITION}")
               if p.is_dir()][0]
images = sorted((competition / "test").glob("*.png"))
rows = ["id,predicted"] + [f"{{p.stem}},1 10" for p in images]
(root / "working" / "submission.csv").write_text("\\n".join(rows) + "\\n")
"""


def test_run_local_accepts_a_kernel_that_writes_a_valid_submission(tmp_path, competition_dir, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    script = WRITE_SUBMISSION + (
        "import site\n"
        "assert 'KAGGLE_KEY' not in os.environ, 'credentials leaked into the kernel'\n"
        "assert not site.ENABLE_USER_SITE, 'user site enabled'\n"
        "payload = b'x' * (200 * 2**20)\n")
    report = run_local(_hand_kernel(tmp_path, script), competition_dir, timeout=60)
    assert report.ok, report.summary()
    assert report.returncode == 0 and report.exit_code == 0 and report.problems == []
    assert report.submission_path == tmp_path / "kernels" / ".run-local" / "tiny-kernel" / "working" / "submission.csv"
    assert 200 <= report.peak_mem_mb < 300  # the kernel's own peak, not the test process's size


KERNEL_SEES_KAGGLE_LIKE_ENVIRONMENT = """
import os, sys
from pathlib import Path

root = Path(os.environ["KSEG_KAGGLE_ROOT"])
assert Path(os.environ["HOME"]) == root / "home", os.environ["HOME"]
assert os.environ["PYTHONPATH"] == str(root / "guard"), os.environ["PYTHONPATH"]
leaked = sorted(k for k in os.environ if k.startswith(("XDG_", "PIP_", "KERAS_", "KAGGLE_", "VIRTUAL_ENV")))
assert not leaked, leaked
for target in (root / "input" / "competitions" / "{competition}" / "test" / "new.png", root / "input" / "new.txt"):
    try:
        target.write_text("x")
    except OSError as exc:
        print("read-only:", target.name, exc.errno)
    else:
        sys.exit(f"wrote into {{target}}")
"""


@pytest.mark.skipif(not kseg_kaggle.read_only_mounts_work(), reason="unshare -rnm bind mounts are not available here")
def test_run_local_gives_a_read_only_input_and_a_fresh_environment(tmp_path, competition_dir, monkeypatch):
    for name, value in (("HOME", str(tmp_path)), ("XDG_CACHE_HOME", str(tmp_path / "cache")),
                        ("PIP_INDEX_URL", "http://example.invalid"), ("KERAS_HOME", str(tmp_path)),
                        ("PYTHONPATH", str(REPO / "src"))):
        monkeypatch.setenv(name, value)
    script = KERNEL_SEES_KAGGLE_LIKE_ENVIRONMENT.format(competition=COMPETITION) + WRITE_SUBMISSION
    report = run_local(_hand_kernel(tmp_path, script), competition_dir, timeout=60)
    assert report.ok, report.summary()
    assert report.stdout_tail.count("read-only:") == 2 and "read-only (bind mounts)" in report.input_mode
    assert sorted(p.name for p in (competition_dir / "test").iterdir()) == ["0030fd0e6378.png", "0f08d640930b.png"]


def test_run_local_resolves_a_relative_kernel_path(tmp_path, competition_dir, monkeypatch):
    kernel = _hand_kernel(tmp_path, WRITE_SUBMISSION)
    monkeypatch.chdir(tmp_path)
    report = run_local(Path("kernels") / kernel.name, Path(competition_dir.name), timeout=60)
    assert report.ok, report.summary()
    assert report.submission_path == kernel.parent / ".run-local" / kernel.name / "working" / "submission.csv"


def test_run_local_scale_test_repeats_the_test_images_and_estimates_the_run_time(tmp_path, competition_dir):
    report = run_local(_hand_kernel(tmp_path, WRITE_SUBMISSION), competition_dir, timeout=60, scale_test=3)
    assert report.ok, report.summary()
    ids = [line.split(",")[0] for line in report.submission_path.read_text().splitlines()[1:]]
    assert len(ids) == 6 and "0030fd0e6378__x2" in ids
    assert "scale test: 6 test images (3x the public set)" in report.summary()
    assert "of the 9 h limit" in report.summary()
    assert sorted(p.name for p in (competition_dir / "test").iterdir()) == ["0030fd0e6378.png", "0f08d640930b.png"]


def test_scale_test_repeats_the_sample_submission_too(tmp_path, competition_dir):
    (competition_dir / "sample_submission.csv").write_text("id,predicted\n0030fd0e6378,\n0f08d640930b,\n")
    (competition_dir / "train.csv").write_text("id,annotation\n")
    cfg = load_config(None, ["data.schema.preset=sartorius", "data.sample_submission=sample_submission.csv"])
    scaled = sandbox._scaled_competition(competition_dir, cfg, 2, tmp_path / "scaled")
    assert (scaled / "sample_submission.csv").read_text().split() == [
        "id,predicted", "0030fd0e6378,", "0030fd0e6378__x1,", "0f08d640930b,", "0f08d640930b__x1,"]
    assert sorted(p.name for p in (scaled / "test").iterdir()) == [
        "0030fd0e6378.png", "0030fd0e6378__x1.png", "0f08d640930b.png", "0f08d640930b__x1.png"]
    assert (scaled / "train.csv").resolve() == (competition_dir / "train.csv").resolve()


def test_run_local_reports_a_missing_submission(tmp_path, competition_dir):
    report = run_local(_hand_kernel(tmp_path, "print('no output')\n"), competition_dir, timeout=60)
    assert not report.ok and report.exit_code == 1 and report.submission_path is None
    assert any("submission.csv not found" in p for p in report.problems)
    assert "no output" in report.stdout_tail


def test_run_local_lists_the_problems_of_an_invalid_submission(tmp_path, competition_dir):
    script = "from pathlib import Path\nPath('submission.csv').write_text('id,predicted\\n0030fd0e6378,5 x\\n')\n"
    report = run_local(_hand_kernel(tmp_path, script), competition_dir, timeout=60)
    problems = "\n".join(report.problems)
    assert not report.ok and "0f08d640930b" in problems and "line 2" in problems


def test_run_local_blocks_the_network_and_shows_the_traceback(tmp_path, competition_dir, capsys):
    script = "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=5)\n"
    report = run_local(_hand_kernel(tmp_path, script), competition_dir, timeout=60)
    assert not report.ok and report.returncode == 1
    assert "Traceback" in report.stderr_tail and NETWORK_GUARD_MESSAGE in report.stderr_tail
    assert NETWORK_GUARD_MESSAGE in capsys.readouterr().out  # the summary shows the kernel's own traceback


@pytest.mark.skipif(not kseg_kaggle.unshare_works(), reason="unshare -rn is not available here")
def test_run_local_network_namespace_blocks_sockets_the_guard_does_not_see(tmp_path, competition_dir):
    script = "import _socket\n_socket.socket().connect(('127.0.0.1', 9))\n"
    report = run_local(_hand_kernel(tmp_path, script), competition_dir, timeout=60)
    assert not report.ok and "Network is unreachable" in report.stderr_tail
    assert report.network.startswith("unshare -rn")


def test_run_local_stops_a_kernel_at_the_time_limit(tmp_path, competition_dir):
    report = run_local(_hand_kernel(tmp_path, "import time\ntime.sleep(60)\n"), competition_dir, timeout=1)
    assert not report.ok and report.returncode is None and report.peak_mem_mb is None and report.wall_s < 20
    assert "timed out after 1s" in report.problems[0]


def test_run_local_needs_every_input_folder(tmp_path, competition_dir):
    kernel = _hand_kernel(tmp_path, WRITE_SUBMISSION)
    shutil.rmtree(tmp_path / "kernels" / "tiny-kseg-code")
    with pytest.raises(ConfigError, match="tiny-kseg-code: folder .* not found"):
        run_local(kernel, competition_dir, timeout=60)


def test_run_local_rejects_an_input_folder_without_test_images(tmp_path):
    empty = tmp_path / "empty-competition"
    (empty / "test").mkdir(parents=True)
    with pytest.raises(DataError, match="no test images"):
        run_local(_hand_kernel(tmp_path, WRITE_SUBMISSION), empty, timeout=60)


# A stand-in for the kseg package inside the code dataset: records each CLI call instead of training, so the
# generated kernel.py is exercised end to end in a second.
FAKE_KSEG_CLI = '''
import json, os
from pathlib import Path

def main(argv):
    working = Path(os.environ["KSEG_KAGGLE_ROOT"]) / "working"
    with open(working / "calls.jsonl", "a") as log:
        log.write(json.dumps(argv) + "\\n")
    sets = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--set")
    run = Path(sets["output.dir"])
    if argv[0] == "train":
        fold = argv[argv.index("--fold") + 1]
        (run / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        (run / f"fold{fold}" / "best.weights.h5").write_bytes(b"trained")
    if argv[0] == "predict":
        (working / "pythonpath.txt").write_text(os.environ["PYTHONPATH"])
        try:
            import kseg_fake_dep
            (working / "fake_dep.txt").write_text(kseg_fake_dep.__file__)
        except ImportError:
            pass
        files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
        (working / "run_files.json").write_text(json.dumps(files))
        ids = sorted(p.stem for p in (Path(sets["data.root"]) / "test").glob("*.png"))
        Path(sets["output.submission"]).write_text("id,predicted\\n" + "".join(f"{i},1 10\\n" for i in ids))
    return 0
'''


def _use_fake_kseg(kernel_root: Path) -> None:
    package = kernel_root / "unit-demo-kseg-code" / "kseg"
    shutil.rmtree(package)
    package.mkdir()
    (package / "__init__.py").write_text("__version__ = 'fake'\n")
    (package / "cli.py").write_text(FAKE_KSEG_CLI)


def _calls(kernel: Path) -> list[list[str]]:
    log = kernel.parent / ".run-local" / kernel.name / "working" / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def _mounted(kernel: Path, layout: str, kind: str, ref: str) -> Path:
    """Where run-local mounted an input of ``kernel`` under ``layout``."""
    return kernel.parent / ".run-local" / kernel.name / "input" / kseg_kaggle.input_mount(layout, kind, ref)


@pytest.mark.parametrize("layout", kseg_kaggle.LAYOUTS)
def test_generated_infer_kernel_maps_kaggle_paths_and_predicts(cfg, tmp_path, fake_wheels, competition_dir, layout):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    _use_fake_kseg(kernel.parent)
    report = run_local(kernel, competition_dir, timeout=120, layout=layout)
    assert report.ok, report.summary()
    (call,) = _calls(kernel)
    root = kernel.parent / ".run-local" / kernel.name
    code = _mounted(kernel, layout, "dataset", f"{OWNER}/unit-demo-kseg-code")
    data_root = _mounted(kernel, layout, "competition", COMPETITION)
    assert call[0] == "predict" and call[call.index("--config") + 1] == str(code / "config.yaml")
    for kind, ref, path in (("competition", COMPETITION, data_root), ("dataset", f"{OWNER}/unit-demo-kseg-code", code),
                            ("dataset", f"{OWNER}/unit-demo-kseg-weights",
                             _mounted(kernel, layout, "dataset", f"{OWNER}/unit-demo-kseg-weights"))):
        assert f"kseg kernel: {kind} {ref} found at {path}" in report.stdout_tail
    assert f"kseg fake from {code / 'kseg'} (the code dataset" in report.stdout_tail
    sets = [call[i + 1] for i, arg in enumerate(call) if arg == "--set"]
    for expected in (f"data.root={data_root}", f"output.dir={root / 'working' / 'run'}",
                     f"output.submission={root / 'working' / 'submission.csv'}", "model.encoder_weights=null",
                     "data.demo=null"):
        assert expected in sets
    run_files = _json(root / "working" / "run_files.json")
    assert "fold0/best.weights.h5" in run_files and "postprocess.json" in run_files
    assert "dataset-metadata.json" not in run_files and "kseg-dataset.json" not in run_files
    pythonpath = (root / "working" / "pythonpath.txt").read_text().split(os.pathsep)
    assert pythonpath[0] == str(code) and str(root / "guard") in pythonpath


def test_generated_kernel_refuses_a_kseg_that_is_not_the_code_datasets(cfg, tmp_path, fake_wheels, competition_dir):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    _use_fake_kseg(kernel.parent)
    # The code dataset lost its package; another kseg (here next to kernel.py, on sys.path like a developer's
    # editable install) would be imported instead.
    shutil.move(kernel.parent / "unit-demo-kseg-code" / "kseg", kernel / "kseg")
    report = run_local(kernel, competition_dir, timeout=120)
    assert not report.ok
    code = _mounted(kernel, "current", "dataset", f"{OWNER}/unit-demo-kseg-code")
    assert f"imported kseg from {kernel / 'kseg'}, not from the code dataset {code / 'kseg'}" in report.stderr_tail


def test_generated_kernel_finds_an_input_by_its_marker_and_names_a_missing_one(cfg, tmp_path, fake_wheels,
                                                                              competition_dir):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    _use_fake_kseg(kernel.parent)
    meta = _json(kernel / "kernel-metadata.json")
    weights_ref = f"{OWNER}/unit-demo-kseg-weights"
    # Attached under another name (a fork, a renamed dataset): only its kseg-dataset.json identifies it.
    meta["dataset_sources"] = [f"{OWNER}/unit-demo-kseg-code", f"{OWNER}/renamed-weights"]
    (kernel / "kernel-metadata.json").write_text(json.dumps(meta))
    report = run_local(kernel, competition_dir, timeout=120,
                       extra_datasets={"renamed-weights": kernel.parent / "unit-demo-kseg-weights"})
    assert report.ok, report.summary()
    found = _mounted(kernel, "current", "dataset", f"{OWNER}/renamed-weights")
    assert f"dataset {weights_ref} found at {found} (by its kseg-dataset.json)" in report.stdout_tail

    meta["dataset_sources"] = [f"{OWNER}/unit-demo-kseg-code"]
    (kernel / "kernel-metadata.json").write_text(json.dumps(meta))
    report = run_local(kernel, competition_dir, timeout=120)
    assert not report.ok
    assert f"kseg kernel: dataset {weights_ref} not found (looked at" in report.stderr_tail
    assert "attached inputs:" in report.stderr_tail and "datasets/tester/unit-demo-kseg-code" in report.stderr_tail


def _write_wheel(folder: Path) -> Path:
    """A minimal real wheel of a one-module distribution, ``kseg-fake-dep``."""
    wheel = folder / "kseg_fake_dep-1.0-py3-none-any.whl"
    info = "kseg_fake_dep-1.0.dist-info"
    files = {
        "kseg_fake_dep/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: kseg-fake-dep\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: kseg-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def test_generated_kernel_installs_a_missing_package_offline_without_touching_the_interpreter(
        cfg, tmp_path, fake_wheels, competition_dir):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    _use_fake_kseg(kernel.parent)
    _write_wheel(kernel.parent / "unit-demo-kseg-code" / "wheels")
    namespace: dict = {"__name__": "kseg_kernel_under_test"}
    exec(compile((kernel / "kernel.py").read_text(), "kernel.py", "exec"), namespace)
    settings = namespace["SETTINGS"]
    settings["bundled"] = {"kseg-fake-dep": "kseg_fake_dep", **settings["bundled"]}
    (kernel / "kernel.py").write_text(bundle.kernel_script(settings))
    report = run_local(kernel, competition_dir, timeout=120)
    assert report.ok, report.summary()
    assert "installing offline: kseg-fake-dep" in report.stdout_tail
    log = kernel.parent / ".run-local" / kernel.name / "kernel-stdout.log"
    assert "installing offline: kseg-fake-dep" in log.read_text()  # the full log, not only its tail
    installed = Path((kernel.parent / ".run-local" / kernel.name / "working" / "fake_dep.txt").read_text())
    tmp = kernel.parent / ".run-local" / kernel.name / "tmp"
    assert installed.parent.parent.parent == tmp and installed.parts[-3].startswith("kseg-wheels-")
    assert importlib.util.find_spec("kseg_fake_dep") is None


def test_generated_train_kernel_trains_its_fold(cfg, tmp_path, fake_wheels, competition_dir):
    kernel = build_kernel(cfg, "train", 1, OWNER, tmp_path / "kernels", COMPETITION, wheels=fake_wheels)
    _use_fake_kseg(kernel.parent)
    report = run_local(kernel, competition_dir, timeout=120)
    assert report.ok, report.summary()
    code = _mounted(kernel, "current", "dataset", f"{OWNER}/unit-demo-kseg-code")
    assert [c[:3] for c in _calls(kernel)] == [["folds", "--config", str(code / "config.yaml")],
                                               ["train", "--fold", "1"]]
    assert "train.verbose=2" in _calls(kernel)[1]
    marker = kernel.parent / ".run-local" / kernel.name / "working" / "kseg-dataset.json"
    assert _json(marker)["id"] == f"{OWNER}/unit-demo-train-fold1"  # lets the infer kernel find this output


@pytest.mark.parametrize("layout", kseg_kaggle.LAYOUTS)
def test_generated_infer_kernel_gathers_train_kernel_outputs(cfg, tmp_path, fake_wheels, competition_dir, layout):
    kernel = _build_infer(cfg, tmp_path, fake_wheels, from_kernels=True)
    _use_fake_kseg(kernel.parent)
    outputs = {}
    for fold in (0, 1):
        out = tmp_path / f"output-fold{fold}"
        (out / "run" / f"fold{fold}").mkdir(parents=True)
        (out / "run" / f"fold{fold}" / "best.weights.h5").write_bytes(b"w")
        (out / "run" / "channels.json").write_text("{}")
        outputs[f"unit-demo-train-fold{fold}"] = out
    report = run_local(kernel, competition_dir, timeout=120, extra_datasets=outputs, layout=layout)
    assert report.ok, report.summary()
    for fold in (0, 1):
        ref = f"{OWNER}/unit-demo-train-fold{fold}"
        assert f"kseg kernel: kernel {ref} found at {_mounted(kernel, layout, 'kernel', ref)}" in report.stdout_tail
    assert [c[0] for c in _calls(kernel)] == ["search", "predict"]  # no postprocess.json yet → search OOF
    root = kernel.parent / ".run-local" / kernel.name
    assert _json(root / "working" / "run_files.json") == [
        "channels.json", "fold0/best.weights.h5", "fold1/best.weights.h5"]


def test_run_local_without_train_kernel_outputs_says_how_to_fetch_them(cfg, tmp_path, fake_wheels, competition_dir):
    kernel = _build_infer(cfg, tmp_path, fake_wheels, from_kernels=True)
    with pytest.raises(ConfigError, match="kaggle kernels output"):
        run_local(kernel, competition_dir, timeout=60)


# --------------------------------------------------------------------------------------------- push

# Replays the kaggle 2.2.4 CLI's output (strings from kaggle/api/kaggle_api_extended.py and kaggle/cli.py):
# `datasets status --format json` prints {"status": ..., "current_version_number": ...}; a missing dataset is
# requests' 404 HTTPError printed on stderr with exit code 1; CLI error lines still exit 0.
FAKE_KAGGLE = f'''#!{sys.executable}
"""Records its argv; datasets exist once created (or when listed in FAKE_KAGGLE_EXISTING, at version 2)."""
import json, os, sys
from pathlib import Path

state = Path(os.environ["FAKE_KAGGLE_STATE"])
with open(state / "calls.log", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
env = os.environ.get


def dataset(slug):
    path = state / f"dataset-{{slug}}.json"
    if path.exists():
        return path, json.loads(path.read_text())
    if slug in env("FAKE_KAGGLE_EXISTING", "").split(","):
        return path, {{"version": 2, "queue": []}}
    return path, None


if args[:2] == ["datasets", "status"]:
    if env("FAKE_KAGGLE_STATUS_ERROR") == "401":
        print("Authentication required to call the Kaggle API.")  # print_auth_help(), then exit(1)
        sys.exit(1)
    if env("FAKE_KAGGLE_STATUS_ERROR") == "500":
        print("500 Server Error: Internal Server Error for url: https://www.kaggle.com/api/v1/"
              "datasets.DatasetApiService/GetDatasetStatus", file=sys.stderr)
        sys.exit(1)
    path, info = dataset(args[2].split("/")[1])
    if info is None:
        print("404 Client Error: Not Found for url: https://www.kaggle.com/api/v1/"
              "datasets.DatasetApiService/GetDatasetStatus", file=sys.stderr)
        sys.exit(1)
    status = info["queue"].pop(0) if info["queue"] else info.get("final", "ready")
    path.write_text(json.dumps(info))
    print(json.dumps({{"status": status, "current_version_number": info["version"]}}))
if args[:2] in (["datasets", "create"], ["datasets", "version"]):
    slug = Path(args[3]).name
    path, info = dataset(slug)
    info = {{"version": (info or {{"version": 0}})["version"] + 1, "final": env("FAKE_KAGGLE_FINAL", "ready"),
             "queue": [s for s in env("FAKE_KAGGLE_PROCESSING", "").split(",") if s]}}
    path.write_text(json.dumps(info))
    if args[1] == "create":
        print("Your private Dataset is being created. Please check progress at https://www.kaggle.com/datasets/x")
    else:
        print("Dataset version is being created. Please check progress at https://www.kaggle.com/datasets/x")
if args[:2] == ["kernels", "push"]:
    if env("FAKE_KAGGLE_PUSH_ERROR"):
        print("Kernel push error: Notebook not found")
    else:
        if env("FAKE_KAGGLE_INVALID_SOURCE"):
            print("The following are not valid " + env("FAKE_KAGGLE_INVALID_SOURCE") + " sources and could not be "
                  "added to the kernel: ['" + env("FAKE_KAGGLE_INVALID_REF", "x/y") + "']")
        print("Kernel version 3 successfully pushed.  Please check progress at https://www.kaggle.com/code/x")


def next_of(name, default):
    """The next value of a comma-separated sequence in env var `name`, its last value repeating."""
    path = state / f"seq-{{name}}"
    seen = int(path.read_text()) if path.exists() else 0
    path.write_text(str(seen + 1))
    values = env(name, default).split(",")
    return values[min(seen, len(values) - 1)]


if args[:2] == ["kernels", "status"]:
    status = next_of("FAKE_KAGGLE_KERNEL_STATUS", "COMPLETE")
    print(f'{{args[2]}} has status "KernelWorkerStatus.{{status}}"')
    if status == "ERROR":
        print('Failure message: "Your notebook tried to allocate more memory than is available."')
if args[:2] == ["kernels", "logs"]:
    print('[{{"stream_name":"stdout","time":1.5,"data":"kseg kernel: competition found\\n"}}]')
if args[:2] == ["kernels", "output"]:
    out = Path(args[args.index("-p") + 1])
    (out / "run" / "fold0").mkdir(parents=True, exist_ok=True)
    (out / "run" / "fold0" / "best.weights.h5").write_bytes(b"w")
    print("Output file downloaded to " + str(out / "run" / "fold0" / "best.weights.h5"))
    print("Kernel log downloaded to " + str(out / (args[2].split("/")[1] + ".log")) + " ")
if args[:2] == ["competitions", "list"]:
    slug = args[args.index("--search") + 1]
    print(json.dumps([{{"ref": "https://www.kaggle.com/competitions/" + slug, "deadline": "2030-01-01T23:59:00",
                        "category": "Featured", "reward": "$75,000", "teamCount": 1505,
                        "userHasEntered": env("FAKE_KAGGLE_ENTERED", "1") == "1", "userRank": None}}], indent=2))
if args[:2] == ["competitions", "download"]:
    import zipfile
    out = Path(args[args.index("-p") + 1])
    with zipfile.ZipFile(out / (args[2] + ".zip"), "w") as archive:
        archive.writestr("train.csv", "id,annotation\\n")
        archive.writestr("test/abc.png", "png")
if args[:2] == ["competitions", "submit"]:
    (state / "submitted.json").write_text(json.dumps(args))
    print("Successfully submitted to Sartorius - Cell Instance Segmentation")
    print("4 submissions remaining today.")
if args[:2] == ["competitions", "submissions"]:
    submitted = json.loads((state / "submitted.json").read_text()) if (state / "submitted.json").exists() else None
    if submitted is None:
        print("No submissions found")
    else:
        status = next_of("FAKE_KAGGLE_SUBMISSION_STATUS", "COMPLETE")
        print(json.dumps([{{"ref": 41234567, "fileName": "submission.csv", "date": "2026-12-01T22:00:00",
                            "description": submitted[submitted.index("-m") + 1],
                            "status": "SubmissionStatus." + status,
                            "publicScore": "0.312" if status == "COMPLETE" else None, "privateScore": None}},
                          {{"ref": 41000000, "fileName": "submission.csv", "date": "2026-11-30T10:00:00",
                            "description": "older", "status": "SubmissionStatus.COMPLETE",
                            "publicScore": "0.250", "privateScore": None}}], indent=2))
'''


@pytest.fixture
def fake_kaggle(tmp_path: Path, monkeypatch) -> Path:
    """A `kaggle` executable first on PATH, logging calls; no credentials anywhere by default."""
    bin_dir, state, home = tmp_path / "bin", tmp_path / "kaggle-state", tmp_path / "home"
    for folder in (bin_dir, state, home):
        folder.mkdir()
    exe = bin_dir / "kaggle"
    exe.write_text(FAKE_KAGGLE)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KAGGLE_STATE", str(state))
    monkeypatch.setenv("HOME", str(home))
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    return state / "calls.log"


def _no_sleep(seconds: float) -> None:
    pytest.fail("push waited although the fake dataset was ready")


def test_push_creates_missing_datasets_then_pushes_the_kernel(cfg, tmp_path, fake_wheels, fake_kaggle,
                                                              monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", OWNER)
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    assert push(kernel, sleep=_no_sleep) == 0
    code, weights = (str(kernel.parent / f"unit-demo-kseg-{k}") for k in ("code", "weights"))
    status = ["--format", "json"]
    assert _kaggle_calls(fake_kaggle) == [
        ["datasets", "status", f"{OWNER}/unit-demo-kseg-code", *status],
        ["datasets", "create", "-p", code, "-r", "zip"],
        ["datasets", "status", f"{OWNER}/unit-demo-kseg-code", *status],
        ["datasets", "status", f"{OWNER}/unit-demo-kseg-weights", *status],
        ["datasets", "create", "-p", weights, "-r", "zip"],
        ["datasets", "status", f"{OWNER}/unit-demo-kseg-weights", *status],
        ["kernels", "push", "-p", str(kernel)],
    ]
    out = capsys.readouterr().out
    assert (f"kaggle competitions submit {COMPETITION} -k {OWNER}/unit-demo-infer -f submission.csv -v 3"
            in out)
    assert SECRET not in out
    # The kernel runs on the versions just uploaded, whatever is newest when Kaggle schedules it.
    assert _json(kernel / "kernel-metadata.json")["dataset_sources"] == [
        f"{OWNER}/unit-demo-kseg-code/1", f"{OWNER}/unit-demo-kseg-weights/1"]


def test_push_versions_datasets_that_exist(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_EXISTING", "unit-demo-kseg-code,unit-demo-kseg-weights")
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    assert push(kernel, sleep=_no_sleep) == 0
    calls = _kaggle_calls(fake_kaggle)
    versions = [c for c in calls if c[:2] == ["datasets", "version"]]
    assert [c[3] for c in versions] == [str(kernel.parent / "unit-demo-kseg-code"),
                                        str(kernel.parent / "unit-demo-kseg-weights")]
    assert all(c[4:7] == ["-r", "zip", "-m"] and c[7].startswith("kseg ") for c in versions)
    assert not any(c[:2] == ["datasets", "create"] for c in calls) and calls[-1][:2] == ["kernels", "push"]
    assert _json(kernel / "kernel-metadata.json")["dataset_sources"] == [
        f"{OWNER}/unit-demo-kseg-code/3", f"{OWNER}/unit-demo-kseg-weights/3"]
    assert push(kernel, sleep=_no_sleep) == 0  # a pinned kernel pushes again: its sources are re-pinned
    assert _json(kernel / "kernel-metadata.json")["dataset_sources"] == [
        f"{OWNER}/unit-demo-kseg-code/4", f"{OWNER}/unit-demo-kseg-weights/4"]


def _kaggle_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_push_waits_for_the_new_version_to_be_ready(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_EXISTING", "unit-demo-kseg-code,unit-demo-kseg-weights")
    monkeypatch.setenv("FAKE_KAGGLE_PROCESSING", "not_yet_persisted,blobs_received,blobs_decompressed")
    waits: list[float] = []
    assert push(_build_infer(cfg, tmp_path, fake_wheels), sleep=waits.append) == 0
    assert waits == [kseg_kaggle.DATASET_POLL_S] * 6  # three processing states per dataset, then ready
    assert "dataset tester/unit-demo-kseg-weights version 3 is ready" in capsys.readouterr().out


def test_push_stops_when_kaggle_fails_to_process_a_dataset(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch,
                                                           capsys):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_FINAL", "failed")
    assert push(_build_infer(cfg, tmp_path, fake_wheels), sleep=_no_sleep) == 1
    assert "status failed (version 1)" in capsys.readouterr().out
    assert not any(c[:2] == ["kernels", "push"] for c in _kaggle_calls(fake_kaggle))


def test_push_does_not_push_the_kernel_when_the_wait_times_out(cfg, tmp_path, fake_wheels, fake_kaggle,
                                                               monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_PROCESSING", ",".join(["blobs_received"] * 10))
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    waits: list[float] = []
    assert push(kernel, sleep=waits.append, dataset_timeout=30) == 1
    assert len(waits) == 3 and "not ready after 30s (last status: blobs_received" in capsys.readouterr().out
    assert not any(c[:2] == ["kernels", "push"] for c in _kaggle_calls(fake_kaggle))
    assert push(kernel, sleep=waits.append, dataset_timeout=30, push_on_timeout=True) == 0
    assert _kaggle_calls(fake_kaggle)[-1][:2] == ["kernels", "push"]
    assert _json(kernel / "kernel-metadata.json")["dataset_sources"] == [  # not ready: nothing to pin
        f"{OWNER}/unit-demo-kseg-code", f"{OWNER}/unit-demo-kseg-weights"]


@pytest.mark.parametrize("error, shown", [("401", "Authentication required"), ("500", "500 Server Error")])
def test_push_treats_a_failed_status_as_an_error_not_a_missing_dataset(cfg, tmp_path, fake_wheels, fake_kaggle,
                                                                       monkeypatch, capsys, error, shown):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_STATUS_ERROR", error)
    assert push(_build_infer(cfg, tmp_path, fake_wheels), sleep=_no_sleep) == 1
    assert shown in capsys.readouterr().out
    assert [c[:2] for c in _kaggle_calls(fake_kaggle)] == [["datasets", "status"]]  # no create


@pytest.mark.parametrize("kind", ["dataset", "competition", "kernel"])
def test_push_fails_when_kaggle_drops_an_invalid_source(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch,
                                                        capsys, kind):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_INVALID_SOURCE", kind)
    assert push(_build_infer(cfg, tmp_path, fake_wheels), sleep=_no_sleep) == 1
    out = capsys.readouterr().out
    assert f"The following are not valid {kind} sources" in out and "kaggle kernels push failed" in out
    assert "competitions submit" not in out


def test_push_without_credentials_stops_before_any_call(cfg, tmp_path, fake_wheels, fake_kaggle):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    with pytest.raises(ConfigError) as info:
        push(kernel)
    assert str(tmp_path / "home" / ".config" / "kaggle" / "kaggle.json") in str(info.value)
    assert "KAGGLE_API_TOKEN" in str(info.value)
    assert not fake_kaggle.exists()


def test_push_warns_about_a_world_readable_kaggle_json(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch, capsys):
    config_dir = tmp_path / "kaggle-config"
    config_dir.mkdir()
    credentials = config_dir / "kaggle.json"
    credentials.write_text(json.dumps({"username": OWNER, "key": SECRET}))
    credentials.chmod(0o644)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    with pytest.warns(KsegWarning, match=f"chmod 600 {re.escape(str(credentials))}") as caught:
        assert push(kernel, sleep=_no_sleep) == 0
    assert all(SECRET not in str(w.message) for w in caught) and SECRET not in capsys.readouterr().out
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o644  # only advised, never changed


def test_push_rejects_a_malformed_kaggle_json(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    (tmp_path / "kaggle.json").write_text(json.dumps({"user": OWNER}))
    with pytest.raises(ConfigError, match="needs the keys 'username' and 'key'"):
        push(_build_infer(cfg, tmp_path, fake_wheels))
    assert not fake_kaggle.exists()


def test_push_dry_run_prints_the_commands_and_runs_none(cfg, tmp_path, fake_wheels, fake_kaggle, capsys):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    with pytest.warns(KsegWarning, match="no Kaggle credentials found"):
        assert push(kernel, dry_run=True) == 0
    out = capsys.readouterr().out
    assert f"kaggle datasets create -p {kernel.parent / 'unit-demo-kseg-weights'} -r zip" in out
    assert f"kaggle kernels push -p {kernel}" in out
    assert not fake_kaggle.exists()


def test_push_fails_when_the_cli_reports_an_error_with_exit_code_zero(cfg, tmp_path, fake_wheels, fake_kaggle,
                                                                      monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_PUSH_ERROR", "1")
    assert push(_build_infer(cfg, tmp_path, fake_wheels), sleep=_no_sleep) == 1
    assert "kaggle kernels push failed" in capsys.readouterr().out


def test_push_needs_the_kaggle_executable(cfg, tmp_path, fake_wheels, monkeypatch):
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nothing-here" / "python"))  # nor in the venv
    with pytest.raises(ConfigError, match="install the kaggle package"):
        push(kernel)


def test_push_finds_kaggle_next_to_the_interpreter(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))  # an inactive venv's bin/
    assert push(kernel, sleep=_no_sleep) == 0
    assert json.loads(fake_kaggle.read_text().splitlines()[-1])[:2] == ["kernels", "push"]


def test_push_refuses_an_invalid_kernel_before_any_call(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    (kernel / "kernel.py").unlink()
    with pytest.raises(ConfigError, match="code_file 'kernel.py' not found"):
        push(kernel)
    assert not fake_kaggle.exists()


def test_push_passes_the_session_timeout(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    kernel = _build_infer(cfg, tmp_path, fake_wheels, session_timeout=7200)
    assert push(kernel, sleep=_no_sleep) == 0
    assert _kaggle_calls(fake_kaggle)[-1] == ["kernels", "push", "-p", str(kernel), "-t", "7200"]


def test_push_many_uploads_a_shared_dataset_once(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    folds = build_train_kernels(cfg, OWNER, tmp_path / "kernels", COMPETITION, wheels=fake_wheels)
    assert main(["kernel", "push", *map(str, folds)]) == 0
    calls = _kaggle_calls(fake_kaggle)
    assert [c[:2] for c in calls].count(["datasets", "create"]) == 1  # the code dataset, once for both folds
    assert [c for c in calls if c[:2] == ["kernels", "push"]] == [["kernels", "push", "-p", str(k)] for k in folds]
    for kernel in folds:
        assert _json(kernel / "kernel-metadata.json")["dataset_sources"] == [f"{OWNER}/unit-demo-kseg-code/1"]
    assert "was uploaded by this command already" in capsys.readouterr().out


def test_kernel_status_waits_until_the_run_ends(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_KERNEL_STATUS", "QUEUED,RUNNING,COMPLETE")
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    waits: list[float] = []
    assert kaggle_cli.command_status(str(kernel), wait=True, sleep=waits.append, interval=5) == 0
    assert waits == [5, 5]
    assert [c for c in _kaggle_calls(fake_kaggle)] == [["kernels", "status", f"{OWNER}/unit-demo-infer"]] * 3
    assert f"{OWNER}/unit-demo-infer: complete" in capsys.readouterr().out


def test_kernel_status_reports_a_failed_run_with_its_message(fake_kaggle, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_KERNEL_STATUS", "RUNNING,ERROR")
    assert main(["kernel", "status", f"{OWNER}/some-kernel"]) == 0  # still running
    assert main(["kernel", "status", f"{OWNER}/some-kernel", "--wait", "--interval", "0.01"]) == 2
    assert "ended with status error: Your notebook tried to allocate more memory" in capsys.readouterr().err


def test_kernel_logs_and_output_for_run_local(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    (kernel,) = build_train_kernels(cfg, OWNER, tmp_path / "kernels", COMPETITION, folds=[0], wheels=fake_wheels)
    assert main(["kernel", "logs", str(kernel)]) == 0
    assert "kseg kernel: competition found" in capsys.readouterr().out
    dest = kaggle_cli.command_output(str(kernel), wait=True, sleep=_no_sleep)
    assert dest == kernel.parent / "outputs" / kernel.name  # where run-local looks for a train kernel's output
    assert (dest / "run" / "fold0" / "best.weights.h5").is_file()
    assert _kaggle_calls(fake_kaggle)[-1] == ["kernels", "output", f"{OWNER}/{kernel.name}", "-p", str(dest), "-o"]


def test_kaggle_download_checks_the_rules_and_unzips_into_data_root(tmp_path, fake_kaggle, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    root = tmp_path / "data" / COMPETITION
    args = ["kaggle", "download", "--config", str(REPO / "configs" / "sartorius.yaml"), "--set", f"data.root={root}"]
    monkeypatch.setenv("FAKE_KAGGLE_ENTERED", "0")
    assert main(args) == 2
    assert f"accept them at https://www.kaggle.com/competitions/{COMPETITION}/rules" in capsys.readouterr().err
    assert not any(c[:2] == ["competitions", "download"] for c in _kaggle_calls(fake_kaggle))
    monkeypatch.setenv("FAKE_KAGGLE_ENTERED", "1")
    assert main(args) == 0
    assert (root / "train.csv").is_file() and (root / "test" / "abc.png").is_file()
    assert not (root / f"{COMPETITION}.zip").exists()
    assert _kaggle_calls(fake_kaggle)[-1] == ["competitions", "download", COMPETITION, "-p", str(root)]


def test_kaggle_submit_waits_for_the_score(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_SUBMISSION_STATUS", "PENDING,PENDING,COMPLETE")
    kernel = _build_infer(cfg, tmp_path, fake_wheels)
    waits: list[float] = []
    score = kaggle_cli.command_submit(cfg, str(kernel), 3, competition=COMPETITION, sleep=waits.append, interval=60)
    assert score == pytest.approx(0.312) and waits == [60, 60]
    submit = [c for c in _kaggle_calls(fake_kaggle) if c[:2] == ["competitions", "submit"]]
    assert submit == [["competitions", "submit", COMPETITION, "-k", f"{OWNER}/unit-demo-infer", "-f", "submission.csv",
                       "-v", "3", "-m", f"kseg {OWNER}/unit-demo-infer v3"]]


def test_kaggle_submit_fails_when_scoring_fails(cfg, tmp_path, fake_wheels, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setenv("FAKE_KAGGLE_SUBMISSION_STATUS", "ERROR")
    with pytest.raises(KaggleError, match="could not score submission 41234567"):
        kaggle_cli.command_submit(cfg, f"{OWNER}/unit-demo-infer", 3, competition=COMPETITION, sleep=_no_sleep)


# ------------------------------------------------------------------------------------ end to end (TF)

def trained_demo_run(tmp_path: Path) -> dict:
    """A tiny real run of configs/demo.yaml (64x64 demo images, 1 epoch of fold 0 of 2), stage by stage
    through the kseg CLI as a user would. Search is skipped: predict then uses postprocess.default."""

    data = tmp_path / "kseg-demo"
    overrides = [
        f"data.root={data}", f"output.dir={tmp_path / 'run'}", f"output.submission={tmp_path / 'submission.csv'}",
        "folds.n_splits=2", "train.size=64", "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2",
        "train.verbose=0", "tta=[identity]", "predict.folds=[0]",
    ]
    args = ["--config", str(REPO / "configs" / "demo.yaml")] + [a for o in overrides for a in ("--set", o)]
    assert main(["demo-data", str(data), "--n-train", "6", "--n-test", "2", "--height", "64", "--width", "64"]) == 0
    for stage in (["folds"], ["train", "--fold", "0"]):
        assert main([*stage, *args]) == 0, stage
    return load_config(REPO / "configs" / "demo.yaml", overrides)


@pytest.mark.slow
def test_end_to_end_demo_kernel_runs_offline_and_submits(tmp_path, fake_wheels):
    pytest.importorskip("kseg.predict")
    pytest.importorskip("kseg.train")
    cfg = trained_demo_run(tmp_path)
    kernel = build_kernel(cfg, "infer", owner=OWNER, out_root=tmp_path / "kernels", competition="kseg-demo",
                          wheels=fake_wheels)
    report = run_local(kernel, Path(cfg.data.root), timeout=900)
    assert report.ok, report.summary()


@pytest.mark.slow  # ensurepip takes seconds
def test_clean_env_builds_the_kaggle_image_venv_once(tmp_path):
    requirements = tmp_path / "image.txt"
    requirements.write_text("# nothing beyond the standard library\n")
    python = kseg_kaggle.kaggle_image_venv(tmp_path / "venvs", requirements, base_python=Path(sys.executable))
    assert python.is_file() and (python.parents[1] / ".complete").is_file()
    stamp = (python.parents[1] / ".complete").stat().st_mtime_ns
    assert kseg_kaggle.kaggle_image_venv(tmp_path / "venvs", requirements, base_python=Path(sys.executable)) == python
    assert (python.parents[1] / ".complete").stat().st_mtime_ns == stamp  # cached, not rebuilt


def _fake_python(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_find_python_passes_over_a_pyenv_shim_to_the_pyenv_interpreter(tmp_path, monkeypatch):
    # As on this machine: `python3.12` on PATH is a pyenv shim that fails (3.12 is installed, not selected).
    shims = tmp_path / "shims"
    _fake_python(shims / "python3.12", "echo \"pyenv: python3.12: command not found\" >&2; exit 127")
    _fake_python(tmp_path / "pyenv" / "versions" / "3.12.1" / "bin" / "python3.12", "echo 3.12")
    newest = _fake_python(tmp_path / "pyenv" / "versions" / "3.12.10" / "bin" / "python3.12", "echo 3.12")
    monkeypatch.setenv("PATH", str(shims))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    assert kseg_kaggle.python_candidates("3.12")[:3] == [shims / "python3.12", newest,
                                                      tmp_path / "pyenv/versions/3.12.1/bin/python3.12"]
    assert kseg_kaggle.find_python("3.12") == newest


def test_find_python_is_none_when_no_interpreter_reports_the_version(tmp_path, monkeypatch):
    _fake_python(tmp_path / "bin" / "python3.99", "echo 3.11")  # a wrong name for what it runs
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    assert kseg_kaggle.find_python("3.99") is None


# What pip 26 prints when the index cannot be reached (seen against a closed port) and for a missing pin.
PIP_UNREACHABLE = (
    "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection "
    "broken by 'NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=9): Failed to establish a new "
    "connection: [Errno 111] Connection refused\")': /simple/tf-keras/\n"
    "ERROR: Could not find a version that satisfies the requirement tf-keras==2.19.0 (from versions: none)\n"
    "ERROR: No matching distribution found for tf-keras==2.19.0\n")
PIP_NO_SUCH_PIN = ("ERROR: Could not find a version that satisfies the requirement tf-keras==2.99.0 (from "
                   "versions: 2.18.0, 2.19.0)\nERROR: No matching distribution found for tf-keras==2.99.0\n")


@pytest.mark.parametrize("stderr,unreachable", [(PIP_UNREACHABLE, True), (PIP_NO_SUCH_PIN, False)])
def test_download_wheels_tells_an_unreachable_index_from_a_missing_pin(tmp_path, monkeypatch, stderr, unreachable):
    import subprocess

    monkeypatch.setattr(bundle.subprocess, "run",
                        lambda cmd, **_: subprocess.CompletedProcess(cmd, 1, stdout="", stderr=stderr))
    with pytest.raises(ConfigError, match="No matching distribution") as caught:
        kseg_kaggle.download_wheels(["tf-keras==2.19.0"], tmp_path / "wheels")
    assert isinstance(caught.value, kseg_kaggle.PackageIndexUnreachable) == unreachable
    assert ("package index is unreachable" in str(caught.value)) == unreachable


def _run(*cmd: object) -> str:
    import subprocess

    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def kaggle_image_python() -> Path:
    """The stand-in image's interpreter: ``KSEG_KAGGLE_IMAGE_PYTHON`` if set, else the venv that
    ``run-local --clean-env`` builds (once, cached in kernels/.kaggle-image-venvs/) with a Python 3.12
    found on this machine. Skips, saying what is missing, without a Python 3.12 or the package index."""
    if os.environ.get("KSEG_KAGGLE_IMAGE_PYTHON"):
        return Path(os.environ["KSEG_KAGGLE_IMAGE_PYTHON"])
    base = kseg_kaggle.find_python()
    if base is None:
        pytest.skip(f"no Python {kseg_kaggle.KAGGLE_IMAGE_PYTHON} (Kaggle's image) on this machine: looked at "
                    f"{', '.join(map(str, kseg_kaggle.python_candidates()))}; install one (pyenv install 3.12) or set "
                    "KSEG_KAGGLE_IMAGE_PYTHON to a venv built from kernels/kaggle-image-requirements.txt")
    try:
        return kseg_kaggle.kaggle_image_venv(REPO / "kernels" / kseg_kaggle.IMAGE_VENVS_DIR, base_python=base)
    except kseg_kaggle.PackageIndexUnreachable as error:
        pytest.skip(f"the stand-in venv needs the package index once, and it is unreachable: {error}")


def _image_without_tf_keras(python: Path, dest: Path) -> Path:
    """A venv that sees every package of the stand-in image but tf-keras (symlinks into its site-packages,
    seconds instead of a second 2.7 GB build): an image whose TensorFlow has no tf-keras beside it."""
    base = _run(python, "-c", "import sys; print(sys._base_executable)")
    _run(base, "-m", "venv", "--without-pip", dest)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    source, target = Path(_run(python, "-c", purelib)), Path(_run(dest / "bin" / "python", "-c", purelib))
    for entry in source.iterdir():
        if not entry.name.lower().startswith("tf_keras") and not (target / entry.name).exists():
            (target / entry.name).symlink_to(entry)
    return dest / "bin" / "python"


@pytest.mark.slow
@pytest.mark.kaggle_image  # not in make test: make test-kaggle-image (.ci/run runs it)
@pytest.mark.parametrize("image", ["with-tf-keras", "without-tf-keras"])
def test_end_to_end_demo_kernel_on_the_kaggle_image_stand_in(tmp_path, kaggle_image_python, image):
    """The same kernel on the stand-in image (Python 3.12, TensorFlow 2.19, no segmentation-models), with the
    real bundled wheels from the package index: the offline install and the tf-keras choice for real. With
    the image's own tf-keras 2.19 the kernel uses it; without it, it installs the bundled 2.19 wheel."""
    pytest.importorskip("kseg.train")
    python = kaggle_image_python
    if image == "without-tf-keras":
        python = _image_without_tf_keras(python, tmp_path / "image-without-tf-keras")
    if os.environ.get("KSEG_WHEELS"):
        wheels = sorted(Path(os.environ["KSEG_WHEELS"]).glob("*.whl"))
    else:
        try:
            wheels = kseg_kaggle.download_wheels(kseg_kaggle.bundled_requirements(), tmp_path / "wheels")
        except kseg_kaggle.PackageIndexUnreachable as error:
            pytest.skip(f"the bundled wheels come from the package index, and it is unreachable: {error}")
    cfg = trained_demo_run(tmp_path)
    kernel = build_kernel(cfg, "infer", owner=OWNER, out_root=tmp_path / "kernels", competition="kseg-demo",
                          wheels=wheels)
    report = run_local(kernel, Path(cfg.data.root), timeout=1800, python=python)
    assert report.ok, report.summary()
    log = (tmp_path / "kernels" / ".run-local" / kernel.name / "kernel-stdout.log").read_text()
    installed = next(line for line in log.splitlines() if line.startswith("installing offline:"))
    assert "segmentation-models" in installed and "keras-applications" in installed
    image_tf = _run(python, "-c", "import importlib.metadata as m; print(m.version('tensorflow'))")
    minor = ".".join(image_tf.split(".")[:2])
    if image == "with-tf-keras":
        assert f"kseg kernel: the image's tf-keras {minor}." in log and "tf_keras-" not in installed
    else:
        assert f"tf_keras-{minor}." in installed, installed



def test_the_former_module_name_still_imports_for_one_release():
    import kseg.kernels

    assert kseg.kernels.build_kernel is build_kernel and kseg.kernels.push is push
    assert set(kseg.kernels.__all__) == set(kseg_kaggle.__all__)
