"""The kseg kernel entry point: `kseg kernel build` copies this module as the kernel's ``kernel.py`` with
its ``SETTINGS`` (JSON) filled in (:func:`kseg.kaggle.bundle.kernel_script`); kept free of kseg imports
until the code dataset is on sys.path.

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

SETTINGS: dict = {}  # the built kernel.py holds the kernel's settings here, as JSON (bundle.kernel_script)

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
    attached = "\n  ".join(_listing()) or "(nothing)"
    looked = f"{candidates[0]}, {candidates[1]}" + ("" if kind == "competition" else f" and for a {MARKER}")
    raise SystemExit(f"kseg kernel: {kind} {ref} not found (looked at {looked}); attached inputs:\n  {attached}")


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
