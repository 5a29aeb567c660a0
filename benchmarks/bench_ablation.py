"""Evidence for defaults: one kseg default against its alternative, on real sets, at the same step budget.

A default is chosen by evidence across sets, never tuned to one. Each variant here is a named list of
``--set`` overrides on top of the scoreboard's own (from scratch, 256 px crops, batch 8); every run gets
the same fixed number of optimizer steps (``--steps``, not seconds, so runs on a busy machine compare
fairly) and is repeated for several ``train.seed`` values, because one short from-scratch run on a few
dozen images varies by more than most defaults change. Scored like the scoreboard: the set's metric on
its held-out images, from kseg's own submission, per class where the set has a report column.

``python -m benchmarks.bench_ablation --sets mixed_nuclei,he_nuclei --variant invert_auto=model.invert=auto``
compares ``invert_auto`` with the defaults and writes ``benchmarks/results/ablation/<name>.md``; with
``--section`` the tables kept there become the BENCHMARKS.md section (``python -m benchmarks.run --only
bench_ablation`` reassembles without rerunning).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

import kseg  # noqa: F401  (sets the Keras 2 environment before any TensorFlow import)
from kseg.config import load_config
from kseg.data import load_records
from kseg.files import write_text
from kseg.pipeline import command_run

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


def kseg_score(name: str, overrides: Sequence[str], steps: int, seed: int, work: Path) -> tuple[float, dict[str, float], float]:
    """Mean held-out score, score per report class, and seconds of one ``kseg run`` on set ``name``."""
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
    return row.score, row.per_class, seconds


def ablation_table(variant: str, overrides: Sequence[str], sets: Sequence[str], steps: int,
                   seeds: Sequence[int]) -> str:
    """Markdown: per set, defaults vs ``variant`` (mean over seeds, each seed's score, per-class means)."""
    lines = [f"### `{variant}`: {' '.join(overrides)}", "",
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit `{_commit()}`. Every run: {steps} optimizer "
             f"steps (train.budget_steps), seeds {', '.join(map(str, seeds))}; the defaults and the variant train on "
             "the same seeds.", "",
             "| set | metric | defaults (mean) | variant (mean) | change | defaults per seed | variant per seed | per class (defaults → variant) |",
             "|---|---|---|---|---|---|---|---|"]
    for name in sets:
        task = load_config(CONFIGS / f"{name}.yaml", [f"data.root={prepare(name)}"])["data"]["task"]
        results = {}
        for label, extra in (("defaults", []), ("variant", list(overrides))):
            runs = [kseg_score(name, extra, steps, seed, WORK / "ablation" / name / label) for seed in seeds]
            results[label] = runs
            print(f"[ablation] {name} {label}: {[round(r[0], 4) for r in runs]} "
                  f"({', '.join(f'{r[2]:.0f}s' for r in runs)})", flush=True)
        mean = {k: float(np.mean([r[0] for r in v])) for k, v in results.items()}
        classes = sorted(results["defaults"][0][1])
        per_class = "; ".join(
            f"{c} {np.mean([r[1][c] for r in results['defaults']]):.3f} → {np.mean([r[1][c] for r in results['variant']]):.3f}"
            for c in classes)
        lines.append(f"| {name} | {METRIC_NAMES[task][0]} | {mean['defaults']:.4f} | {mean['variant']:.4f} | "
                     f"{mean['variant'] - mean['defaults']:+.4f} | "
                     f"{', '.join(f'{r[0]:.4f}' for r in results['defaults'])} | "
                     f"{', '.join(f'{r[0]:.4f}' for r in results['variant'])} | {per_class} |")
    return "\n".join(lines)


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
    parser.add_argument("--variant", required=True, help="NAME=key=value[,key=value...]: the overrides to compare")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps per run")
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="comma-separated train.seed values")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        parser.error(f"{SHARED} not found: the ablations need the real sets")
    name, _, spec = args.variant.partition("=")
    if not name or not spec:
        parser.error(f"--variant must be NAME=key=value[,key=value...], got {args.variant!r}")
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in SETS or SETS[s].needs]
    if unknown:
        parser.error(f"unknown or untrainable set(s) {', '.join(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    table = ablation_table(name, spec.split(","), sets, args.steps, seeds)
    write_text(ABLATIONS / f"{name}.md", table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
