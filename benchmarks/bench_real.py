"""Does each stage help on real data? ISBI 2012 (EM, cells separated by membranes) and Sartorius (phase
contrast, touching neurons), held-out test images, the competition metric (mAP over IoU 0.50:0.05:0.95).

Same run, same test images: a classical Otsu + watershed baseline, a plain notebook-style U-Net (one split,
foreground only, threshold 0.5, connected components, no TTA) with the same backbone and the same number
of training steps as ONE kseg fold, then kseg adding one stage at a time.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from skimage.measure import label

import kseg  # noqa: F401
from kseg import rle
from kseg.config import load_config
from kseg.data import load_records, read_image
from kseg.files import atomic_path
from kseg.folds import command_folds
from kseg.metric import dice, image_score
from kseg.model import preprocess_fn
from kseg.postprocess import instances_from_probs, predict_class
from kseg.predict import load_fold_models, params_for, read_postprocess
from kseg.search import command_search
from kseg.targets import read_channels
from kseg.train import command_train
from kseg.tta import predict_image

from .baselines import fit_otsu_watershed, otsu_watershed, predict_plain_unet, train_plain_unet

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
WORK = REPO / "runs" / "bench_real"
COLUMNS = ["id", "annotation", "height", "width", "group"]


@dataclass(frozen=True)
class Budget:
    size: int
    epochs: int
    steps: int
    batch: int
    folds: int


def _write_competition(root: Path, train: dict[str, tuple[np.ndarray, np.ndarray, str]],
                       test: dict[str, tuple[np.ndarray, np.ndarray, str]]) -> None:
    """A kseg-readable competition folder: images, row-major RLE CSVs with a group column."""
    import cv2

    for split, items, csv_name in (("train", train, "train.csv"), ("test", test, "test_truth.csv")):
        (root / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for image_id, (image, labels, group) in items.items():
            cv2.imwrite(str(root / split / f"{image_id}.png"), image)
            encoded = rle.encode_labels(labels, "C")
            h, w = labels.shape
            rows += [(image_id, s, h, w, group) for s in encoded.values()] or [(image_id, "", h, w, group)]
        with atomic_path(root / csv_name) as tmp:
            pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)


def build_isbi(root: Path, quick: bool) -> None:
    """30 consecutive EM slices in 5 blocks of 6 (a block is a group: neighbours are near-duplicates).
    Instances are the cells: connected components of the interior label. The last block is the test set."""
    import cv2

    src = SHARED / "isbi2012_membrane" / "train"
    items = {}
    for i in range(30):
        image = cv2.imread(str(src / "image" / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
        interior = cv2.imread(str(src / "label" / f"{i}.png"), cv2.IMREAD_GRAYSCALE) > 127
        if quick:
            image, interior = image[:128, :128], interior[:128, :128]
        items[f"slice{i:02d}"] = (image, label(interior, connectivity=1), f"block{i // 6}")
    test = {k: v for k, v in items.items() if v[2] == "block4"}
    _write_competition(root, {k: v for k, v in items.items() if k not in test}, test)


def build_sartorius(root: Path, quick: bool) -> None:
    """The two fully annotated real images, each cut into 4 tiles of 260x352 so that folds exist:
    0030fd0e6378 (395 cells) is the training set (a tile is a group), 0f08d640930b (105 cells) the test."""
    import cv2

    src = SHARED / "sartorius_mini"
    sources = {"0030fd0e6378": "train.csv", "0f08d640930b": "train_0f08d640930b_DERIVED.csv"}
    tiles: dict[str, dict] = {"0030fd0e6378": {}, "0f08d640930b": {}}
    for image_id, csv_name in sources.items():
        frame = pd.read_csv(src / csv_name)
        labels, _ = rle.decode_labels(frame["annotation"].tolist(), (520, 704), "C")
        image = cv2.imread(str(src / "train" / f"{image_id}.png"), cv2.IMREAD_GRAYSCALE)
        for r in range(2):
            for c in range(2):
                window = (slice(r * 260, (r + 1) * 260), slice(c * 352, (c + 1) * 352))
                tile_labels, tile_image = labels[window], image[window]
                if quick:
                    tile_labels, tile_image = tile_labels[:128, :128], tile_image[:128, :128]
                tile_id = f"{image_id}_{r}{c}"
                tiles[image_id][tile_id] = (tile_image, tile_labels, tile_id)
    _write_competition(root, tiles["0030fd0e6378"], tiles["0f08d640930b"])


def _config(name: str, root: Path, budget: Budget, quick: bool, work: Path):
    grid = ("{fg_threshold: [0.4, 0.5], seed_threshold: [0.5, 0.7], min_area: [0, 20]}" if quick else
            "{fg_threshold: [0.3, 0.4, 0.5, 0.6], seed_threshold: [0.3, 0.5, 0.6, 0.7, 0.8], min_area: [0, 20, 50, 100]}")
    return load_config(None, [
        f"name={name}", f"data.root={root}", "data.test_dir=test", "data.test_truth=test_truth.csv",
        "data.schema={id_col: id, rle_col: annotation, height_col: height, width_col: width, rle_order: C, "
        "group_col: group, submission_cols: [id, predicted]}",
        f"folds.n_splits={budget.folds}", "model.backbone=resnet18", "model.encoder_weights=null",
        f"train.size={budget.size}", f"train.epochs={budget.epochs}", f"train.steps_per_epoch={budget.steps}",
        f"train.batch_size={budget.batch}", "train.early_stopping=100", "train.verbose=0",
        f"postprocess.grid={grid}", "tta=[identity, hflip, vflip, hvflip]",
        f"output.dir={work / 'run'}",
    ])


def _test_records(cfg):
    """The held-out test images with their truth, loaded (and validated) like training data."""
    test_cfg = copy.deepcopy(cfg)
    test_cfg["data"].update(train_csv="test_truth.csv", train_dir="test")
    return load_records(test_cfg, progress=False)


def _mean_scores(truths: list[np.ndarray], preds: list[np.ndarray]) -> tuple[float, float]:
    """(competition metric, foreground Dice) averaged over images."""
    return (float(np.mean([image_score(t, p) for t, p in zip(truths, preds)])),
            float(np.mean([dice(t > 0, p > 0) for t, p in zip(truths, preds)])))


def evaluate_dataset(name: str, build: Callable[[Path, bool], None], budget: Budget,
                     quick: bool) -> tuple[list[tuple], dict]:
    """Rows (method, mAP, Dice, time) on the held-out test images, and the OOF search report."""
    work = WORK / ("quick" if quick else "full") / name
    root = work / "data"
    build(root, quick)  # deterministic: a rerun rebuilds the same files
    cfg = _config(name, root, budget, quick, work)
    tests = _test_records(cfg)
    truths = [r.labels for r in tests]
    images = [read_image(r.image_path) for r in tests]
    rows: list[tuple] = []

    train_records = load_records(cfg, progress=False)
    fitted = fit_otsu_watershed([read_image(r.image_path) for r in train_records], [r.labels for r in train_records])
    start = time.perf_counter()
    preds = [otsu_watershed(image, fitted["bright_objects"], fitted["min_area"]) for image in images]
    rows.append(("Otsu + watershed (classical, tuned on train)", *_mean_scores(truths, preds),
                 f"{time.perf_counter() - start:.1f}s"))

    start = time.perf_counter()
    plain = train_plain_unet([read_image(r.image_path) for r in train_records], [r.labels > 0 for r in train_records],
                             "resnet18", budget.size, budget.epochs, budget.steps, budget.batch, 1e-3, seed=42)
    preds = [predict_plain_unet(plain, image) for image in images]
    rows.append(("plain notebook U-Net (1 split, fg only, thr 0.5, CC, no TTA)", *_mean_scores(truths, preds),
                 f"{time.perf_counter() - start:.0f}s"))

    start = time.perf_counter()
    command_folds(cfg)
    command_train(cfg, "all", resume=True)  # a rerun after an interruption keeps the folds already trained
    train_seconds = time.perf_counter() - start
    searched = command_search(cfg)
    models = load_fold_models(cfg)
    preprocess = preprocess_fn(cfg)
    _, classes = read_channels(Path(cfg["output"]["dir"]), cfg["data"]["task"])
    chosen = read_postprocess(cfg)
    default = cfg["postprocess"]["default"]
    per_fold_plain, per_fold_tta = [], []
    for image in images:
        x = preprocess(image)
        per_fold_plain.append([predict_image(fn, x, ["identity"]) for fn in models])
        per_fold_tta.append([predict_image(fn, x, cfg["tta"]) for fn in models])

    def instances(probs: np.ndarray, params: dict | None) -> np.ndarray:
        cls = predict_class(probs, classes) if classes else None
        return instances_from_probs(probs, params or params_for(chosen, cls), cfg["data"]["task"])

    variants = [
        ("kseg, fold 0 only, no TTA, default post-processing", lambda p, t: instances(p[0], default)),
        ("+ OOF-searched post-processing", lambda p, t: instances(p[0], None)),
        ("+ TTA (4 flips)", lambda p, t: instances(t[0], None)),
        (f"+ fold ensemble ({len(models)} folds) = full kseg", lambda p, t: instances(np.mean(t, axis=0), None)),
        ("(full kseg without TTA)", lambda p, t: instances(np.mean(p, axis=0), None)),
    ]
    for title, make in variants:
        preds = [make(p, t) for p, t in zip(per_fold_plain, per_fold_tta)]
        rows.append((title, *_mean_scores(truths, preds), f"{train_seconds:.0f}s train" if "full" in title else ""))
    return rows, searched


def run(quick: bool = False) -> str:
    if not SHARED.is_dir():
        return f"## Real data\n\nSkipped: {SHARED} not found (the real-data folder is not shipped with kseg)."
    budgets = {
        "isbi2012": Budget(size=64, epochs=1, steps=2, batch=2, folds=2) if quick else
        Budget(size=256, epochs=6, steps=10, batch=8, folds=4),
        "sartorius": Budget(size=64, epochs=1, steps=2, batch=2, folds=2) if quick else
        Budget(size=256, epochs=6, steps=10, batch=8, folds=4),
    }
    builders = {"isbi2012": build_isbi, "sartorius": build_sartorius}
    out = ["## Real data: does each stage help?", "", __doc__.strip().replace("\n", " "), ""]
    for name, build in builders.items():
        b = budgets[name]
        rows, oof = evaluate_dataset(name, build, b, quick)
        out += [f"### {name}", "",
                f"Training budget per model: {b.epochs} epochs x {b.steps} steps x batch {b.batch} at {b.size}px, "
                f"resnet18 U-Net from scratch (no ImageNet weights here); kseg: {b.folds} group folds.", "",
                "| method | mAP@[.5:.95] | foreground Dice | time |", "|---|---|---|---|"]
        out += [f"| {t} | {s:.4f} | {d:.4f} | {tm} |" for t, s, d, tm in rows]
        out += ["", f"Out-of-fold on the training images (what the search sees): default parameters with TTA "
                f"{oof['oof_score_default']:.4f}, searched without TTA {oof['oof_score_plain']:.4f}, "
                f"searched with TTA {oof['oof_score']:.4f}.", ""]
    out.append("Balanced sampling cannot be measured on these two real sets: each has a single class "
               "(EM cells; shsy5y) and no empty images. Its effect is shown per class on the demo data "
               "(bench_train).")
    return "\n".join(out)
