"""Evidence for defaults: one kseg default against its alternative, on real sets, at the same step budget.

A default is chosen by evidence across sets, never tuned to one. Each variant here is a named list of
``--set`` overrides on top of the scoreboard's own (from scratch, 256 px crops, batch 8); every run gets
the same fixed number of optimizer steps (``--steps``, not seconds, so runs on a busy machine compare
fairly) and is repeated for several ``train.seed`` values, because one short from-scratch run on a few
dozen images varies by more than most defaults change. Scored like the scoreboard: the set's metric on
its held-out images, from kseg's own submission, per class where the set has a report column.

``python -m benchmarks.bench_ablation --sets mixed_nuclei,he_nuclei --variant invert_auto=model.invert=auto``
(repeatable; several overrides of one variant are separated by ``;``)
compares ``invert_auto`` with the defaults and writes ``benchmarks/results/ablation/<name>.md``; with
``--section`` the tables kept there become the BENCHMARKS.md section (``python -m benchmarks.run --only
bench_ablation`` reassembles without rerunning).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

import kseg  # noqa: F401  (sets the Keras 2 environment before any TensorFlow import)
from kseg.config import load_config, submission_path
from kseg.data import load_records
from kseg.files import write_text
from kseg.pipeline import command_run
from kseg.predict import read_fold_scores

from .bench_real import (
    CONFIGS,
    FROM_SCRATCH,
    KSEG_EPOCHS,
    METRIC_NAMES,
    RESULTS,
    WORK,
    _commit,
    _side_config,
    _submission_labels,
    _test_set,
)
from .real_sets import SETS, SHARED, prepare

ABLATIONS = RESULTS / "ablation"
DEFAULT_STEPS = 250
DEFAULT_SEEDS = (0, 1)


@dataclass
class RunScore:
    """One ``kseg run`` of an ablation: the held-out score, the score per report class, its seconds, and,
    when it trained several folds, each fold model's and the ensemble's held-out score (the run's own
    ``fold_scores.json``: every fold post-processed as the ensemble is), so a variant that trains more
    folds shows what the ensemble adds over its best fold."""

    score: float
    per_class: dict[str, float]
    seconds: float
    folds: dict[str, float] = field(default_factory=dict)
    ensemble: float | None = None


def kseg_score(name: str, overrides: Sequence[str], steps: int, seed: int, work: Path) -> RunScore:
    """The :class:`RunScore` of one ``kseg run`` on set ``name``."""
    root = prepare(name)
    run_dir = work / f"seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a run of another variant or seed must not be reused
    cfg = load_config(CONFIGS / f"{name}.yaml", [
        f"data.root={root}", f"output.dir={run_dir}", *FROM_SCRATCH, "train.verbose=0", "train.size=256",
        "train.batch_size=8", f"train.epochs={KSEG_EPOCHS}", f"train.budget_steps={steps}", f"train.seed={seed}",
        *overrides])
    test = _test_set(cfg, SETS[name].report_col)
    start = time.perf_counter()
    command_run(cfg)
    seconds = time.perf_counter() - start
    records = load_records(_side_config(cfg, "test_truth.csv", "test"), progress=False)
    row = test.row("", _submission_labels(cfg, [r.id for r in records], [r.shape for r in records]))
    result = RunScore(row.score, row.per_class, seconds)
    fold_scores = read_fold_scores(submission_path(cfg))
    if fold_scores is not None and len(fold_scores["per_fold"]) > 1:
        result.folds, result.ensemble = fold_scores["per_fold"], fold_scores["ensemble"]
    return result


def _row(name: str, task: str, defaults: Sequence[RunScore], variant: Sequence[RunScore], run: str) -> str:
    """One table row: mean over seeds, the change, each seed's score, per-class means, and the ``run`` it
    comes from (steps, seeds, date, commit): rows of one table are measured in different runs."""
    mean_d, mean_v = float(np.mean([r.score for r in defaults])), float(np.mean([r.score for r in variant]))
    per_class = "; ".join(f"{c} {np.mean([r.per_class[c] for r in defaults]):.3f} → "
                          f"{np.mean([r.per_class[c] for r in variant]):.3f}" for c in sorted(defaults[0].per_class))
    return (f"| {name} | {METRIC_NAMES[task][0]} | {mean_d:.4f} | {mean_v:.4f} | {mean_v - mean_d:+.4f} | "
            f"{', '.join(f'{r.score:.4f}' for r in defaults)} | {', '.join(f'{r.score:.4f}' for r in variant)} | {per_class} "
            f"| {run} |")


def _ensemble_line(name: str, label: str, runs: Sequence[RunScore], seeds: Sequence[int]) -> str | None:
    """What the fold ensemble of ``label``'s runs on set ``name`` adds over its best single fold, per seed and
    on average; None when they trained one fold."""
    if not all(r.folds for r in runs):
        return None
    gains = [(r.ensemble or 0.0) - max(r.folds.values()) for r in runs]
    per_seed = "; ".join(f"seed {seed}: ensemble {r.ensemble:.4f}, folds {', '.join(f'{v:.4f}' for v in r.folds.values())}"
                         for seed, r in zip(seeds, runs))
    return (f"- {name}, {label}: the ensemble of {len(runs[0].folds)} folds scores {float(np.mean(gains)):+.4f} "
            f"against its best single fold (mean over seeds; {per_seed})")


def run_label(steps: int, seeds: Sequence[int]) -> str:
    """Where a row comes from: its optimizer steps, seeds, date and commit."""
    return (f"{steps} steps, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}, "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, `{_commit()}`")


TABLE_HEAD = ["| set | metric | defaults (mean) | variant (mean) | change | defaults per seed | variant per seed "
              "| per class (defaults → variant) | run |", "|---|---|---|---|---|---|---|---|---|"]


ENSEMBLE_HEAD = ("Fold ensembles, where a run trained several folds (each fold model and the ensemble scored on the "
                 "held-out images, post-processed alike, from the run's own `fold_scores.json`):")


def _merged_table(path: Path, variant: str, overrides: Sequence[str], rows: Mapping[str, str],
                  ensembles: Mapping[str, Sequence[str]]) -> str:
    """The variant's table with ``rows`` (by set) replacing or joining the rows already kept in ``path``,
    so ablations of one variant run over different sets (one process per core) end in one table; each row
    names its own run. ``ensembles``: the sets' :func:`_ensemble_line` lines, kept and replaced the same way."""
    kept: dict[str, str] = {}
    kept_ensembles: dict[str, list[str]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            cells = line.split("|")
            if line.startswith("| ") and line not in TABLE_HEAD and len(cells) > 2 and cells[1].strip() != "set":
                kept[cells[1].strip()] = line
            elif line.startswith("- "):
                kept_ensembles.setdefault(line[2:].split(",")[0], []).append(line)
    kept.update(rows)
    kept_ensembles.update({name: list(lines) for name, lines in ensembles.items()})
    ensemble_lines = [line for name in sorted(kept_ensembles) for line in kept_ensembles[name]]
    return "\n".join([
        f"### `{variant}`: {' '.join(overrides)}", "",
        "The defaults and the variant train on the same seeds and steps (train.budget_steps); each row's run "
        "column gives them, with the date and commit.", "", *TABLE_HEAD, *(kept[name] for name in sorted(kept)),
        *(["", ENSEMBLE_HEAD, "", *ensemble_lines] if ensemble_lines else [])])


def ablate(variants: Mapping[str, Sequence[str]], sets: Sequence[str], steps: int, seeds: Sequence[int]) -> None:
    """Per set: the defaults once per seed, then each variant on the same seeds; each variant's table
    (``results/ablation/<variant>.md``) is rewritten after every set, so a long run keeps what it finished."""
    for name in sets:
        task = load_config(CONFIGS / f"{name}.yaml", [f"data.root={prepare(name)}"]).data.task
        results = {}
        for label, extra in (("defaults", []), *variants.items()):
            runs = [kseg_score(name, extra, steps, seed, WORK / "ablation" / name / label) for seed in seeds]
            results[label] = runs
            print(f"[ablation] {name} {label}: {[round(r.score, 4) for r in runs]} "
                  f"({', '.join(f'{r.seconds:.0f}s' for r in runs)})", flush=True)
        for variant, overrides in variants.items():
            path = ABLATIONS / f"{variant}.md"
            row = _row(name, task, results["defaults"], results[variant], run_label(steps, seeds))
            lines = [line for label in ("defaults", variant)
                     if (line := _ensemble_line(name, label, results[label], seeds)) is not None]
            write_text(path, _merged_table(path, variant, overrides, {name: row}, {name: lines}) + "\n")


def run(quick: bool = False) -> str:
    """The BENCHMARKS.md section: every ablation table kept in ``results/ablation`` (they are run by hand,
    each over its own sets: see the module docstring)."""
    if quick or not ABLATIONS.is_dir():
        return "## Evidence for defaults\n\nNo ablation tables yet (`python -m benchmarks.bench_ablation`)."
    tables = [p.read_text().strip() for p in sorted(ABLATIONS.glob("*.md"))]
    return "\n\n".join(["## Evidence for defaults", __doc__.split("\n\n")[1].replace("\n", " "), *tables])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", required=True, help=f"comma-separated, from {', '.join(SETS)}")
    parser.add_argument("--variant", required=True, action="append",
                        help="NAME=key=value[;key=value...]: overrides to compare with the defaults (repeatable)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps per run")
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="comma-separated train.seed values")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        parser.error(f"{SHARED} not found: the ablations need the real sets")
    variants: dict[str, list[str]] = {}
    for text in args.variant:
        name, _, spec = text.partition("=")
        if not name or not spec or name == "defaults":
            parser.error(f"--variant must be NAME=key=value[;key=value...], got {text!r}")
        variants[name] = [part.strip() for part in spec.split(";") if part.strip()]
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in SETS or SETS[s].needs]
    if unknown:
        parser.error(f"unknown or untrainable set(s) {', '.join(unknown)}")
    ablate(variants, sets, args.steps, [int(s) for s in args.seeds.split(",") if s])
    for variant in variants:
        print((ABLATIONS / f"{variant}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
