"""Inference speed with 1, 4 and 8 TTA views: kseg predicts all views of an image as one batch; the naive
way calls the model once per view."""
from __future__ import annotations

import numpy as np

import kseg  # noqa: F401
from kseg.config import load_config
from kseg.model import build_model, preprocess_fn
from kseg.tta import VIEWS, apply_view, invert_view, pad_to_multiple, predict_image

from .timing import best_seconds

VIEW_SETS = {1: ["identity"], 4: ["identity", "hflip", "vflip", "hvflip"], 8: list(VIEWS)}


def naive_tta(model, image: np.ndarray, views: list[str]) -> np.ndarray:
    """One model call per view, as most notebooks write it."""
    padded, (h, w) = pad_to_multiple(image)
    outputs = [invert_view(v, model.predict(apply_view(v, padded[None]), verbose=0))[0] for v in views]
    return np.mean(outputs, axis=0)[:h, :w]


def run(quick: bool = False) -> str:
    height, width, repeats = (96, 128, 1) if quick else (520, 704, 3)
    cfg = load_config(None, ["model.backbone=resnet18", "model.encoder_weights=null"])
    model = build_model(cfg, 5)
    image = preprocess_fn(cfg)(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    rows = []
    for n_views, views in VIEW_SETS.items():
        kseg_s = best_seconds(lambda: predict_image(model.predict_on_batch, image, views), repeats, warmup=True)
        naive_s = best_seconds(lambda: naive_tta(model, image, views), repeats, warmup=True)
        rows.append(f"| {n_views} | {1 / kseg_s:.2f} | {1 / naive_s:.2f} | {naive_s / kseg_s:.2f}x |")
    return "\n".join([
        "## Inference with TTA",
        "",
        f"One {height}x{width} image, resnet18 U-Net with 5 output channels, CPU; images per second per model "
        f"(best of {repeats}). kseg runs all views that share a shape as one batch "
        "(`predict_image`); the naive way calls `model.predict` once per view. "
        "An ensemble of K folds costs K times these figures.",
        "",
        "| TTA views | kseg img/s | naive img/s | speed-up |",
        "|---|---|---|---|",
        *rows,
    ])
