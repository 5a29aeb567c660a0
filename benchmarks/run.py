"""``make bench``: run the benchmark sections and write BENCHMARKS.md atomically.

Each ``benchmarks/bench_*.py`` exposes ``run(quick: bool) -> str`` returning a Markdown section that puts
kseg and the naive way side by side, measured in the same run on this machine. Each section is also kept
in ``benchmarks/results/<name>.md``, so ``--only bench_real`` reruns one section and BENCHMARKS.md is
reassembled from all of them.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import kseg  # noqa: F401  (sets the Keras 2 environment before any TensorFlow import)
from kseg.files import write_text

SECTIONS = ("bench_core", "bench_post", "bench_train", "bench_infer", "bench_gpu", "bench_real", "bench_ablation")
RESULTS = Path(__file__).parent / "results"


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = f"{usable} cores" if usable == os.cpu_count() else f"{usable} of {os.cpu_count()} cores (pinned)"
    return f"{cores} ({cpu}), Python {platform.python_version()}, no GPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, printed only: checks every section runs")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    args = parser.parse_args(argv)
    for name in SECTIONS if args.only is None else args.only:  # `--only` alone just reassembles
        start = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        section = importlib.import_module(f"benchmarks.{name}").run(quick=args.quick).strip()
        if args.quick:
            print(section)
            continue
        stamp = (f"_({name}: {time.perf_counter() - start:.0f} s, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
                 f"{machine_line()})_")
        write_text(RESULTS / f"{name}.md", f"{section}\n\n{stamp}\n")
        print(f"[bench] {name} done in {time.perf_counter() - start:.0f} s", flush=True)
    if args.quick:
        return 0
    parts = [
        "# kseg benchmarks",
        f"Assembled by `make bench` on {machine_line()}. "
        "Every table measures kseg and the naive way side by side in the same run.",
    ]
    parts += [(RESULTS / f"{name}.md").read_text() for name in SECTIONS if (RESULTS / f"{name}.md").is_file()]
    write_text(args.out, "\n\n".join(part.strip() for part in parts) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
