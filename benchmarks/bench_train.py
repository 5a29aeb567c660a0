"""Throughput of the training input pipeline: kseg's cached, parallel tf.data vs a plain keras Sequence.

Both kseg pipelines are measured: ``host`` (albumentations in tf.data threads, the default off a TPU) and
``graph`` (TensorFlow ops only, what a TPU runs: kseg.graph_input), with the same augmentation; and kseg's
own U-Net's training step without and with XLA (``train.jit_compile``).

Synthetic demo competition (704x520 images, quick mode: 128x96), 256 px crops (quick: 64), batch 8,
U-Net resnet18 with random weights on CPU. Measured:

- pipeline alone: iterate the data for N batches, no model;
- pipeline + training: ``model.fit`` for N steps fed by that data;
- model alone: ``model.fit`` on one batch held in memory, i.e. what the model can consume.

The naive way is the usual notebook ``keras.utils.Sequence``: ``__getitem__`` reads each image from
disk, builds its targets and augments it, with Keras' defaults (``workers=1``: no worker threads).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import kseg  # noqa: F401  (selects tf-keras before TensorFlow loads)
from kseg.augment import build_augment
from kseg.config import Config, load_config, with_values
from kseg.data import load_records, read_image
from kseg.demo import make_demo_data
from kseg.targets import channel_names, make_targets
from kseg.train import SampleCache, Sampler, compile_model, graph_dataset, run_classes, train_dataset

from .timing import best_seconds

PIPELINE_TARGET = 3.0  # the pipeline alone should deliver at least 3x what the model consumes


def _config(data_root: Path, out: Path, size: int, batch_size: int) -> Config:
    return load_config(None, [
        f"data.root={data_root}", "data.schema.preset=sartorius", "model.backbone=resnet18",
        "model.encoder_weights=null", f"train.size={size}", f"train.batch_size={batch_size}", "train.verbose=0",
        f"output.dir={out}",
    ])


def _best_epoch_seconds(fit: Callable[[Any], None], keras: Any) -> float:
    """Fastest epoch of a ``model.fit`` call, the first (graph tracing, thread start-up) excluded."""
    durations: list[float] = []
    started: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: started.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: durations.append(time.perf_counter() - started[-1]),
    )
    fit(timer)
    return min(durations[1:])


def run(quick: bool = False) -> str:
    import tf_keras as keras

    from kseg.model import build_model, preprocess_fn

    size, batch, steps, repeats = (64, 4, 3, 1) if quick else (256, 8, 8, 2)
    height, width, n_train = (96, 128, 8) if quick else (520, 704, 16)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_demo_data(Path(tmp) / "data", seed=0, n_train=n_train, n_test=1, height=height, width=width)
        cfg = _config(root, Path(tmp) / "run", size, batch)
        records = load_records(cfg, progress=False)
        classes = run_classes(records, "instance")
        n_channels = len(channel_names("instance", classes))
        preprocess = preprocess_fn(cfg)
        cache_start = time.perf_counter()
        cache = SampleCache.from_records(records, "instance", classes, 2, progress=False)
        cache_seconds = time.perf_counter() - cache_start
        def sampler() -> Sampler:
            return Sampler(range(len(records)), [r.cls for r in records], [r.n_instances == 0 for r in records],
                           0.0, None, seed=0, fold=0, epoch_size=steps * batch)

        dataset = train_dataset(cache, sampler(), cfg, preprocess)
        graph = graph_dataset(cache, sampler(), cfg, preprocess)  # every epoch's crops in one stream

        augment = build_augment(cfg.train.augment, size, train=True)
        rng = np.random.default_rng(0)

        class NaiveSequence(keras.utils.Sequence):
            """Everything per sample on the training thread, every epoch: read, targets, augment."""

            def __len__(self) -> int:
                return steps

            def __getitem__(self, _: int) -> tuple[np.ndarray, np.ndarray]:
                images, targets = [], []
                for index in rng.integers(0, len(records), size=batch):
                    record = records[index]
                    cls_index = classes.index(record.cls)
                    out = augment(image=read_image(record.image_path),
                                  mask=make_targets(record.labels, "instance", cls_index, len(classes), 2))
                    images.append(preprocess(out["image"]))
                    targets.append(out["mask"])
                return np.stack(images), np.stack(targets)

        naive = NaiveSequence()
        kseg_pipeline = steps * batch / best_seconds(lambda: sum(1 for _ in dataset), repeats, warmup=True)
        graph_pipeline = steps * batch / best_seconds(lambda: sum(1 for _ in graph.take(steps)), repeats, warmup=True)
        naive_pipeline = steps * batch / best_seconds(lambda: [naive[i] for i in range(steps)], repeats, warmup=True)

        model = build_model(cfg, n_channels)
        compile_model(model, cfg, n_channels)
        epochs = 1 + repeats

        def fit_on(data: Any, **kwargs: Any) -> float:
            seconds = _best_epoch_seconds(
                lambda timer: model.fit(data, epochs=epochs, verbose=0, callbacks=[timer], **kwargs), keras)
            return steps * batch / seconds

        model_alone = fit_on(dataset.take(1).cache().repeat(), steps_per_epoch=steps)
        kseg_training = fit_on(dataset)
        graph_training = fit_on(graph, steps_per_epoch=steps)
        naive_training = fit_on(naive, workers=1, use_multiprocessing=False)

        one_batch = dataset.take(1).cache().repeat()
        scratch = {}  # kseg's own U-Net (model.arch unet_scratch), without and with XLA (train.jit_compile)
        for jit in (False, True):
            scratch_cfg = with_values(cfg, {"model.arch": "unet_scratch", "train.jit_compile": jit})
            model = build_model(scratch_cfg, n_channels)
            compile_model(model, scratch_cfg, n_channels)
            scratch[jit] = fit_on(one_batch, steps_per_epoch=steps)

    headroom = kseg_pipeline / model_alone
    verdict = "met" if headroom >= PIPELINE_TARGET else "**not met**"
    lines = [
        "## Training input pipeline",
        "",
        f"Images per second feeding a U-Net resnet18 (random weights, CPU) with {size} px crops, batch {batch}, "
        f"from {n_train} synthetic {width}x{height} images{' (quick mode)' if quick else ''}; "
        f"{steps} steps per measurement, best of {repeats} after a warm-up. kseg decodes every image and target "
        f"once ({cache_seconds:.1f} s for all {n_train}) and crops, augments and preprocesses in parallel "
        "tf.data threads; the naive `keras.utils.Sequence` reads, builds targets and augments each sample in "
        "`__getitem__` with Keras' defaults (`workers=1`, no multiprocessing: no worker threads).",
        "",
        "| data path | pipeline alone, img/s | pipeline + training, img/s |",
        "|---|---:|---:|",
        f"| kseg tf.data, host (albumentations) | {kseg_pipeline:.1f} | {kseg_training:.1f} |",
        f"| kseg tf.data, graph (TensorFlow ops, TPU-ready) | {graph_pipeline:.1f} | {graph_training:.1f} |",
        f"| naive Sequence | {naive_pipeline:.1f} | {naive_training:.1f} |",
        f"| kseg host / naive | {kseg_pipeline / naive_pipeline:.1f}× | {kseg_training / naive_training:.2f}× |",
        f"| kseg graph / host | {graph_pipeline / kseg_pipeline:.2f}× | {graph_training / kseg_training:.2f}× |",
        "",
        f"The model alone (one batch held in memory) consumes {model_alone:.1f} img/s, so the kseg host pipeline "
        f"delivers {headroom:.1f}× what training needs and the graph one {graph_pipeline / model_alone:.1f}×. Target: pipeline alone ≥ {PIPELINE_TARGET:g}× what "
        f"the model consumes — {verdict}.",
        "",
        f"XLA (`train.jit_compile`) on kseg's own U-Net (`model.arch: unet_scratch`, the from-scratch default), the "
        f"model alone on the same batch: {scratch[False]:.1f} img/s without, {scratch[True]:.1f} img/s with, "
        f"{scratch[True] / scratch[False]:.2f}×. segmentation_models' decoders cannot be compiled (their "
        "upsampling gradient has no XLA kernel).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
