"""The one timing rule of every benchmark: best wall time of a few calls, after an optional warm-up."""
from __future__ import annotations

import time
from typing import Callable


def best_seconds(function: Callable[[], object], repeats: int, warmup: bool = False) -> float:
    """Best wall time of ``repeats`` calls: the one least disturbed by other processes. ``warmup`` makes one
    untimed call first (graph tracing, thread pools and first-call caches are not steady-state speed)."""
    if warmup:
        function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best
