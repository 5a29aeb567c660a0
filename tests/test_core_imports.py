"""The numeric core never imports the deep-learning stack: scoring, validating, searching and writing a
submission must work in a Kaggle kernel (or a notebook) that has no TensorFlow, and import in milliseconds."""
from __future__ import annotations

import subprocess
import sys

CORE = ["rle", "classmaps", "metric", "postprocess", "tta", "search", "submission", "normalize", "plan", "data", "folds",
        "targets", "config", "run", "files", "errors", "dicom", "eda", "analysis", "overlay", "report", "demo",
        "channels", "tasks"]
HEAVY = ["tensorflow", "tf_keras", "keras", "segmentation_models", "albumentations"]


def test_core_modules_leave_the_deep_learning_stack_unloaded():
    # One interpreter, the modules imported one by one: the first that loads a heavy package is named.
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module('kseg.' + name)\n"
        f"    loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "    assert not loaded, f'kseg.{name} imported ' + ', '.join(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
