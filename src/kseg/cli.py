"""The ``kseg`` command line. Heavy modules are imported inside each command so that ``kseg score`` and
``kseg validate`` answer in about a second without loading TensorFlow."""
from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .config import Config, load_config
from .console import console
from .errors import KsegError, KsegWarning
from .tasks import TASKS


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.set or ())


def _fold_arg(value: str) -> int:
    """``--fold K`` as an integer, or one clear error instead of int()'s traceback."""
    if not value.strip().isascii() or not value.strip().isdigit():
        raise KsegError(f"--fold expects a fold index (0, 1, ...) or 'all', got {value!r}")
    return int(value)


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from .demo import make_demo_data

    root = make_demo_data(Path(args.dir), seed=args.seed, n_train=args.n_train, n_test=args.n_test,
                          height=args.height, width=args.width, kind=args.kind, force=args.force)
    print(f"demo competition written to {root}")
    return 0


def _cmd_folds(args: argparse.Namespace) -> int:
    from .folds import command_folds

    command_folds(_config(args))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import command_train

    fold = None if args.fold is None else "all" if args.fold == "all" else _fold_arg(args.fold)
    command_train(_config(args), fold, resume=args.resume)
    return 0


def _cmd_oof(args: argparse.Namespace) -> int:
    from .train import command_oof

    command_oof(_config(args))
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from .search import command_search

    command_search(_config(args))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import command_predict

    command_predict(_config(args), Path(args.out) if args.out else None)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import command_run

    command_run(_config(args), force=args.force)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import command_report

    command_report(_config(args))
    return 0


def _cmd_overlay(args: argparse.Namespace) -> int:
    from .overlay import command_overlay

    command_overlay(_config(args), args.ids, args.source, Path(args.out) if args.out else None)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from .data import PRESETS, Schema, n_classes_of, read_annotations, read_submission_csv, schema_from_config
    from .metric import score_frames, task_metric

    shapes, n_classes = None, 0
    if args.config:
        cfg = _config(args)
        schema, task, metric = schema_from_config(cfg), cfg.data.task, cfg.data.metric
        n_classes = n_classes_of(cfg) or 0
        if not (schema.height_col and schema.width_col):  # TGS, Severstal: the RLE needs the test images' sizes
            from .data import image_size, list_test_images

            shapes = {image_id: image_size(path) for image_id, path in list_test_images(cfg)}
    elif args.schema:
        if args.schema not in PRESETS:
            raise KsegError(f"unknown schema preset '{args.schema}' (known: {', '.join(sorted(PRESETS))})")
        schema, task, metric = Schema(**PRESETS[args.schema]), args.task, "auto"
    else:
        raise KsegError("kseg score needs --config CFG or --schema PRESET to know the columns")
    if args.metric is not None:
        metric = args.metric
    task_metric(task, metric)  # a metric that cannot score the task is an error before any file is read
    truth = read_annotations(Path(args.truth), schema, "truth CSV")
    pred = read_submission_csv(Path(args.pred), schema, "prediction CSV")
    report = score_frames(truth, pred, schema, shapes, task=task, truth_name=args.truth, pred_name=args.pred,
                          allow_overlap=args.allow_overlap, metric=metric, n_classes=n_classes)
    if report.overlaps:
        print(f"warning: {args.pred}: {len(report.overlaps)} image(s) have overlapping predicted instances "
              f"({sum(report.overlaps.values())} pixels claimed twice; first row wins); Kaggle would reject "
              f"this file", file=sys.stderr)
    if args.json:
        print(json.dumps({"score": report.score, "per_class": report.per_class, "per_image": report.per_image}, indent=2))
        return 0
    print(f"{'class':<20} {'score':>8}")
    for name, value in sorted((report.per_class or {}).items()):
        print(f"{name:<20} {value:8.4f}")
    print(f"{f'all ({len(report.per_image)} images)':<20} {report.score:8.4f}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .submission import command_validate

    return command_validate(Path(args.submission), _config(args))


def _cmd_kernel_build(args: argparse.Namespace) -> int:
    from .kaggle import build_kernel, build_train_kernels

    cfg, out_root = _config(args), Path(args.out_root)
    if args.fold == "all":
        if args.kind != "train":
            raise KsegError("--fold all builds one training kernel per fold: use it with --kind train")
        build_train_kernels(cfg, args.owner, out_root, args.competition, enable_gpu=args.gpu,
                            accelerator=args.accelerator, session_timeout=args.session_timeout)
        return 0
    fold = None if args.fold is None else _fold_arg(args.fold)
    build_kernel(cfg, kind=args.kind, fold=fold, owner=args.owner, out_root=out_root,
                 competition=args.competition, from_kernels=args.from_kernels, enable_gpu=args.gpu,
                 accelerator=args.accelerator, session_timeout=args.session_timeout)
    return 0


def _cmd_kernel_run_local(args: argparse.Namespace) -> int:
    from .kaggle import IMAGE_VENVS_DIR, kaggle_image_venv, run_local

    if args.clean_env:
        if args.python:
            raise KsegError("--clean-env builds its own interpreter: drop --python")
        args.python = str(kaggle_image_venv(Path(args.kernel_dir).resolve().parent / IMAGE_VENVS_DIR,
                                            base_python=Path(args.base_python) if args.base_python else None))

    extra = {}
    for item in args.extra or ():
        slug, sep, folder = item.partition("=")
        if not sep:
            raise KsegError(f"--extra expects SLUG=DIR, got '{item}'")
        extra[slug] = Path(folder)
    report = run_local(Path(args.kernel_dir), Path(args.input), timeout=args.timeout, extra_datasets=extra or None,
                       python=Path(args.python) if args.python else None, layout=args.layout,
                       scale_test=args.scale_test, time_limit=args.time_limit)
    return 0 if report.ok else 1


def _cmd_kernel_push(args: argparse.Namespace) -> int:
    from .kaggle import push_many

    return push_many([Path(d) for d in args.kernel_dir], dry_run=args.dry_run, dataset_timeout=args.dataset_timeout,
                     push_on_timeout=args.push_on_timeout)


def _cmd_kernel_follow(args: argparse.Namespace) -> int:
    from .kaggle import competition as kaggle_cli

    poll = {"interval": args.interval, "timeout": args.wait_timeout}
    if args.kernel_command == "status":
        return kaggle_cli.command_status(args.kernel, wait=args.wait, **poll)
    if args.kernel_command == "logs":
        return kaggle_cli.command_logs(args.kernel, wait=args.wait, **poll)
    kaggle_cli.command_output(args.kernel, Path(args.path) if args.path else None, wait=args.wait, **poll)
    return 0


def _cmd_kaggle_download(args: argparse.Namespace) -> int:
    from .kaggle.competition import command_download

    command_download(_config(args), args.competition, force=args.force)
    return 0


def _cmd_kaggle_submit(args: argparse.Namespace) -> int:
    from .kaggle.competition import command_submit

    command_submit(_config(args), args.kernel, args.version, competition=args.competition, file_name=args.file,
                   message=args.message, wait=not args.no_wait, interval=args.interval, timeout=args.wait_timeout)
    return 0


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="experiment YAML (configs/*.yaml)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=2 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
            config: bool = True, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        if config:
            _add_config_args(p)
        p.set_defaults(handler=handler)
        return p

    p = add("demo-data", _cmd_demo_data, "generate a synthetic competition: Sartorius-format cells (the demo) or "
            "Severstal-format organs (--kind multiclass, or --kind dicom as CT slices)", config=False)
    p.add_argument("dir")
    p.add_argument("--kind", default="sartorius", help="sartorius (the demo), multiclass (organs, PNG) or dicom "
                   "(the organs as CT slices)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=24)
    p.add_argument("--n-test", type=int, default=6)
    p.add_argument("--height", type=int, default=520)
    p.add_argument("--width", type=int, default=704)
    p.add_argument("--force", action="store_true", help="write into DIR even if it holds files kseg did not write")

    add("folds", _cmd_folds, "write folds.csv (stratified group k-fold) and print the fold table")
    p = add("train", _cmd_train, "train one fold or all folds; writes weights, curves and OOF predictions")
    p.add_argument("--fold", help="fold index or 'all' (default: train.folds)")
    p.add_argument("--resume", action="store_true", help="continue interrupted folds from their last epoch")
    add("oof", _cmd_oof, "rewrite the trained folds' out-of-fold predictions for the current tta / predict.tile")
    add("search", _cmd_search, "search post-processing parameters on out-of-fold predictions")
    p = add("predict", _cmd_predict, "fold ensemble x TTA on the test images -> validated submission")
    p.add_argument("--out", help="submission path (default: output.submission)")
    p = add("run", _cmd_run, "the main job: folds, training, OOF search, prediction, validation")
    p.add_argument("--force", action="store_true", help="redo every stage even if up to date")

    add("report", _cmd_report, "write report.html into the run: OOF scores, search, errors, training curves, "
                               "stage times (self-contained, images embedded)")
    p = add("overlay", _cmd_overlay, "PNG overlays of images: the truth, the OOF prediction's errors or a test "
                                     "prediction")
    p.add_argument("--ids", nargs="+", required=True, metavar="ID", help="image ids")
    # Checked by kseg.overlay (which this parser does not import, to stay light): truth, oof or test.
    p.add_argument("--source", default="oof", help="truth, oof (default) or test (the submission's prediction)")
    p.add_argument("--out", help="folder for the PNGs (default: <output.dir>/overlays/<source>)")

    p = add("score", _cmd_score, "score a prediction CSV against a truth CSV with the competition metric", config=False)
    p.add_argument("truth")
    p.add_argument("pred")
    p.add_argument("--config", "-c")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--schema", help="schema preset instead of a config (sartorius, dsb2018, siim, severstal)")
    p.add_argument("--task", default="instance", choices=list(TASKS))
    p.add_argument("--metric", help="metric by name (default: the config's data.metric, else the task's own): "
                   "map_iou, f2_iou, dice, iou, tgs_ap_iou, mean_iou_classes, dice_classes")
    p.add_argument("--json", action="store_true", help="print score and per-image scores as JSON")
    p.add_argument("--allow-overlap", action="store_true",
                   help="score predictions whose instances overlap (Kaggle rejects them) with a warning")

    p = add("validate", _cmd_validate, "check a submission file against the test images")
    p.add_argument("submission")

    kernel = sub.add_parser("kernel", help="build, run offline and push Kaggle kernels")
    ksub = kernel.add_subparsers(dest="kernel_command", required=True)
    p = add("build", _cmd_kernel_build, "write kernels/<slug>/ and the datasets it needs", parent=ksub)
    p.add_argument("--kind", choices=["infer", "train"], default="infer")
    p.add_argument("--fold", help="fold index, or 'all' for one training kernel per fold")
    p.add_argument("--owner", required=True, help="your Kaggle user name")
    p.add_argument("--competition", help="competition slug (default: the config's kaggle.competition)")
    p.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="enable the GPU (default: on for train kernels; for inference kaggle.infer_gpu)")
    p.add_argument("--accelerator",
                   help="machine_shape in the metadata: gpu/gpu-t4 = NvidiaTeslaT4, gpu-p100, tpu, none = CPU")
    p.add_argument("--session-timeout", type=int, metavar="SECONDS",
                   help="stop the Kaggle run after this many seconds (kaggle kernels push -t)")
    p.add_argument("--out-root", default="kernels")
    p.add_argument("--from-kernels", action="store_true",
                   help="infer kernel ensembles the per-fold train kernels' outputs")
    p = add("run-local", _cmd_kernel_run_local, "run a kernel as Kaggle would: offline, time-limited", config=False,
            parent=ksub)
    p.add_argument("kernel_dir")
    p.add_argument("--input", required=True, help="folder holding the competition data")
    p.add_argument("--timeout", type=float, default=9 * 3600, help="wall-clock limit in seconds (Kaggle: 9 h)")
    p.add_argument("--python", help="interpreter of a clean venv built from kernels/kaggle-image-requirements.txt")
    p.add_argument("--clean-env", action="store_true",
                   help="build (once, cached) and use a fresh venv from kernels/kaggle-image-requirements.txt")
    p.add_argument("--base-python",
                   help="interpreter for --clean-env (default: the first Python 3.12 that runs: PATH, pyenv, uv)")
    p.add_argument("--extra", action="append", metavar="SLUG=DIR", help="mount DIR as the input SLUG")
    p.add_argument("--layout", choices=["current", "legacy"], default="current",
                   help="how inputs are mounted: current (competitions/, datasets/OWNER/, notebooks/OWNER/) or "
                        "legacy (all at /kaggle/input/SLUG)")
    p.add_argument("--scale-test", type=int, default=1, metavar="N",
                   help="repeat the test images N times under new ids: memory and run time of a larger hidden set")
    p.add_argument("--time-limit", type=float, default=9 * 3600,
                   help="the competition's run-time limit in seconds, for the --scale-test estimate (default 9 h)")
    p = add("push", _cmd_kernel_push, "upload datasets and push the kernel(s) with the kaggle CLI", config=False,
            parent=ksub)
    p.add_argument("kernel_dir", nargs="+", help="kernel folder(s), e.g. kernels/NAME-train-fold* for every fold")
    p.add_argument("--dry-run", action="store_true", help="print the kaggle commands without running them")
    p.add_argument("--dataset-timeout", type=float, default=600,
                   help="seconds to wait for each uploaded dataset version to be ready (default 600)")
    p.add_argument("--push-on-timeout", action="store_true",
                   help="push the kernel even if a dataset is not ready in time (it may see the old version)")

    def add_wait(p: argparse.ArgumentParser, flag: bool = True) -> None:
        if flag:
            p.add_argument("--wait", action="store_true", help="wait until the kernel's run has ended")
        p.add_argument("--interval", type=float, default=30, help="seconds between polls (default 30)")
        p.add_argument("--wait-timeout", type=float, default=12 * 3600, help="give up after this many seconds")

    for verb, text in (("status", "status of a pushed kernel's latest run"),
                       ("logs", "log of a pushed kernel's latest run"),
                       ("output", "download a pushed kernel's output (default: kernels/outputs/SLUG, for run-local)")):
        p = add(verb, _cmd_kernel_follow, text, config=False, parent=ksub)
        p.add_argument("kernel", help="built kernel folder or OWNER/SLUG")
        add_wait(p)
        if verb == "output":
            p.add_argument("-p", "--path", help="destination folder")

    kaggle = sub.add_parser("kaggle", help="competition data and submissions with the kaggle CLI")
    gsub = kaggle.add_subparsers(dest="kaggle_command", required=True)
    p = add("download", _cmd_kaggle_download, "download and unzip the competition data into data.root", parent=gsub)
    p.add_argument("--competition", help="competition slug (default: kaggle.competition)")
    p.add_argument("--force", action="store_true", help="download again even if the archive is present")
    p = add("submit", _cmd_kaggle_submit, "submit a kernel version to the code competition and fetch its score",
            parent=gsub)
    p.add_argument("--kernel", required=True, help="built kernel folder or OWNER/SLUG")
    p.add_argument("--version", required=True, type=int, help="kernel version (printed by kseg kernel push)")
    p.add_argument("--file", default="submission.csv", help="output file of the kernel (default submission.csv)")
    p.add_argument("-m", "--message", help="submission description (default: kseg OWNER/SLUG vN)")
    p.add_argument("--competition", help="competition slug (default: kaggle.competition)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the score")
    add_wait(p, flag=False)
    return parser


def _print_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   file: Any = None, line: str | None = None) -> None:
    """kseg's caveats as one ``warning:`` line on stdout, between the progress lines they belong to; other
    libraries' warnings as Python prints them."""
    if issubclass(category, KsegWarning):
        print(f"warning: {message}", flush=True)
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


_SHOW_WARNING = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(), console():
            warnings.simplefilter("always", KsegWarning)  # every caveat, not only the first from each line
            warnings.showwarning = _print_warning
            return args.handler(args)
    except KsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (training can continue with --resume)", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2


# Modules whose innermost frame names the file operation that failed (pathlib.mkdir, shutil.move, ...).
_FILE_MODULES = ("pathlib", "shutil", "tempfile", "os", "genericpath", "posixpath", "ntpath")


def os_error_message(exc: OSError) -> str:
    """One line naming the path and the operation of a filesystem error (a full disk, a file where a
    folder should be, no permission), instead of a traceback."""
    operation = "access"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if Path(frame.filename).stem in _FILE_MODULES:
            operation = frame.name.lstrip("_")
            break
    reason = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(paths) if paths else "a file"
    return f"cannot {operation} {where}: {reason}"


if __name__ == "__main__":
    sys.exit(main())
