"""Speed of the OOF post-processing search: kseg's reuse + joblib against post-processing every grid point.

The OOF set imitates a trained run: kseg.demo ground truth (Sartorius size, 520x704) turned into the
training targets (kseg.targets) and then blurred and noised, stored as uint8 like the OOF npz files.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from scipy import ndimage

from kseg.config import DEFAULTS, load_config
from kseg.data import load_records
from kseg.demo import make_demo_data
from kseg.metric import image_score
from kseg.postprocess import instances_from_probs
from kseg.search import Grid, score_grid
from kseg.targets import make_targets

from .timing import best_seconds

OofSet = list[tuple[np.ndarray, np.ndarray]]


def make_oof_set(n_images: int, height: int, width: int, seed: int = 0) -> OofSet:
    """(truth labels, uint8 probabilities) pairs: demo truth → targets → blur → Gaussian noise."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_demo_data(Path(tmp) / "demo", seed=seed, n_train=n_images, n_test=1, height=height, width=width)
        cfg = load_config(None, [f"data.root={root}", "data.schema.preset=sartorius"])
        records = load_records(cfg, progress=False)
    classes = sorted({record.cls for record in records})
    oof = []
    for record in records:
        targets = make_targets(record.labels, "instance", classes.index(record.cls), len(classes), border_width=2)
        noisy = ndimage.gaussian_filter(targets, sigma=(1.5, 1.5, 0)) + rng.normal(0, 0.15, targets.shape)
        oof.append((record.labels.astype(np.int32), (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)))
    return oof


def naive_search(oof: OofSet, grid: Grid) -> np.ndarray:
    """Post-process from scratch and score at every grid point, one image after the other."""
    points = grid.points()
    return np.array([[image_score(truth, instances_from_probs(probs, params)) for params in points] for truth, probs in oof])


def kseg_search(oof: OofSet, grid: Grid, n_jobs: int) -> np.ndarray:
    """What ``kseg search`` runs: one watershed per threshold pair, min_area as a filter, images in parallel."""
    return np.stack(Parallel(n_jobs=n_jobs)(delayed(score_grid)(truth, probs, grid) for truth, probs in oof))


def run(quick: bool = False) -> str:
    """Markdown section: search time naive vs kseg (serial and 2 jobs), plus one image's post-processing time."""
    if quick:
        n_images, height, width, repeats = 3, 128, 160, 1
        grid = Grid("instance", {"fg_threshold": (0.4, 0.6), "seed_threshold": (0.5, 0.7), "min_area": (0, 16)},
                    {"fill_holes": True})
    else:
        n_images, height, width, repeats = 12, 520, 704, 3
        axes = DEFAULTS["postprocess"]["grid"]
        grid = Grid("instance", {key: tuple(axes[key]) for key in ("fg_threshold", "seed_threshold", "min_area")},
                    {"fill_holes": True})
    oof = make_oof_set(n_images, height, width)
    n_points = len(grid.points())

    start = time.perf_counter()
    naive_scores = naive_search(oof, grid)
    naive_s = time.perf_counter() - start  # minutes at full size, so it runs once
    serial_s = best_seconds(lambda: kseg_search(oof, grid, n_jobs=1), repeats)
    parallel_scores = kseg_search(oof, grid, n_jobs=2)  # also starts the worker pool before timing
    parallel_s = best_seconds(lambda: kseg_search(oof, grid, n_jobs=2), repeats)
    assert np.allclose(naive_scores, parallel_scores), "the reuse path must give exactly the naive scores"

    truth, probs = oof[0]
    params = DEFAULTS["postprocess"]["default"]
    postprocess_ms = best_seconds(lambda: instances_from_probs(probs, params), 5 * repeats) * 1e3
    prediction = instances_from_probs(probs, params)
    score_ms = best_seconds(lambda: image_score(truth, prediction), 5 * repeats) * 1e3
    best = naive_scores.mean(axis=0).max()

    lines = [
        "## Post-processing search on OOF predictions",
        "",
        f"{n_images} synthetic OOF images of {height}x{width} (demo truth → training targets, blurred, noise σ 0.15), "
        f"a grid of {n_points} parameter sets ({' × '.join(f'{len(v)} {k}' for k, v in grid.axes.items())}), every image scored at every point (best mean score "
        f"{best:.3f}; kseg's scores equal the naive ones). Naive = `instances_from_probs` + `image_score` per point "
        f"and image, serial, timed once; kseg = one watershed per threshold pair with `min_area` as an area filter, "
        f"best of {repeats}.{' Quick mode.' if quick else ''}",
        "",
        "| search | seconds | ms per image × grid point | speed-up vs naive |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in (("naive, serial", naive_s), ("kseg reuse, 1 job", serial_s), ("kseg reuse, 2 jobs (joblib)", parallel_s)):
        per_point_ms = seconds / (n_images * n_points) * 1e3
        lines.append(f"| {name} | {seconds:.2f} | {per_point_ms:.2f} | {naive_s / seconds:.1f}× |")
    lines += [
        "",
        f"One {height}x{width} image at `postprocess.default`: post-processing (watershed, hole filling, area filter) "
        f"{postprocess_ms:.1f} ms, scoring {score_ms:.1f} ms.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
