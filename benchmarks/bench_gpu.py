"""Training and inference on GPUs: float32 against mixed_float16, one GPU against two, and whether the input
pipeline keeps them fed. Skipped, with a section that says so, where no GPU is visible.

Synthetic demo competition (704x520 images; quick mode 128x96), 256 px crops (quick: 64), batch 8 per GPU,
U-Net resnet34 (quick: resnet18) with random weights, as kseg trains it (``compile_model``, the replicas'
global batch). Measured for each dtype policy and GPU count:

- training, model alone: ``model.fit`` on one global batch held in memory, i.e. what the GPUs consume;
- training, fed by kseg's tf.data pipeline;
- TTA inference: one whole image, 4 views as one batch (``predict_image``), split over the GPUs.

The pipeline alone (no model) must deliver at least 1.5x the fastest consumption measured, or the GPUs wait
on the CPU. XLA (``train.jit_compile``) is measured on kseg's own U-Net (``unet_scratch``) on one GPU: it
cannot compile segmentation_models' decoders' upsampling gradient (see ``train.compile_model``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import kseg  # noqa: F401  (selects tf-keras before TensorFlow loads)
from kseg.config import with_values
from kseg.data import load_records
from kseg.demo import make_demo_data
from kseg.targets import channel_names
from kseg.train import SampleCache, Sampler, compile_model, run_classes, train_dataset
from kseg.tta import predict_image

from .bench_train import _best_epoch_seconds, _config
from .timing import best_seconds

PIPELINE_TARGET = 1.5  # the pipeline alone must deliver at least 1.5x what the GPUs consume
POLICIES = ("float32", "mixed_float16")
TTA_VIEWS = ["identity", "hflip", "vflip", "hvflip"]
TITLE = "## GPU training and inference"


def run(quick: bool = False) -> str:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return (f"{TITLE}\n\nSkipped: no GPU is visible to TensorFlow on this machine. Run `make bench` (or "
                "`python -m benchmarks.run --only bench_gpu`) where one is, to measure float32 against "
                "mixed_float16, one GPU against two, TTA inference and the input pipeline's headroom.\n")
    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    return measure([gpu.name for gpu in gpus], details.get("device_name", "GPU"), quick)


def _training_rates(model: Any, dataset: Callable[[], Any], crops: int, steps: int,
                    repeats: int) -> tuple[float, float]:
    """Crops per second of ``model.fit``: on one global batch held in memory, and fed by ``dataset()``."""
    import tf_keras as keras

    def fit_on(data: Any, **kwargs: Any) -> float:
        seconds = _best_epoch_seconds(
            lambda timer: model.fit(data, epochs=1 + repeats, verbose=0, callbacks=[timer], **kwargs), keras)
        return crops / seconds

    return fit_on(dataset().take(1).cache().repeat(), steps_per_epoch=steps), fit_on(dataset())


def measure(devices: list[str], device_name: str, quick: bool) -> str:
    """The section for ``devices`` (TensorFlow device names, one or two used), named ``device_name``."""
    import tensorflow as tf
    import tf_keras as keras

    from kseg.model import build_model, preprocess_fn

    size, batch, steps, repeats = (64, 2, 2, 1) if quick else (256, 8, 20, 2)
    height, width, n_train, backbone = (96, 128, 8, "resnet18") if quick else (520, 704, 16, "resnet34")
    counts = [1, 2] if len(devices) > 1 else [1]
    previous_policy = keras.mixed_precision.global_policy()
    rows, consumed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_demo_data(Path(tmp) / "data", seed=0, n_train=n_train, n_test=1, height=height, width=width)
        cfg = _config(root, Path(tmp) / "run", size, batch)
        cfg.model.backbone = backbone
        records = load_records(cfg, progress=False)
        classes = run_classes(records, "instance")
        n_channels = len(channel_names("instance", classes))
        preprocess = preprocess_fn(cfg)
        cache = SampleCache.from_records(records, "instance", classes, 2, progress=False)
        image = preprocess(cache.images[0])

        def dataset(replicas: int) -> Any:
            sampler = Sampler(range(len(records)), [r.cls for r in records], [r.n_instances == 0 for r in records],
                              0.0, None, seed=0, fold=0, epoch_size=steps * batch * replicas)
            return train_dataset(cache, sampler, cfg, preprocess, replicas)

        pipeline = steps * batch * max(counts) / best_seconds(lambda: sum(1 for _ in dataset(max(counts))),
                                                               repeats, warmup=True)
        try:
            for policy in POLICIES:
                keras.mixed_precision.set_global_policy(policy)
                for count in counts:
                    strategy = (tf.distribute.OneDeviceStrategy(devices[0]) if count == 1
                                else tf.distribute.MirroredStrategy(devices[:count]))
                    with strategy.scope():
                        model = build_model(cfg, n_channels)
                        compile_model(model, cfg, n_channels, count)
                    alone, fed = _training_rates(model, lambda: dataset(count), steps * batch * count, steps, repeats)
                    consumed.append(alone)
                    tta = 1 / best_seconds(lambda: predict_image(model.predict_on_batch, image, TTA_VIEWS), repeats,
                                           warmup=True)
                    rows.append(f"| Unet {backbone} | {policy} | {count} | {alone:.1f} | {fed:.1f} | {tta:.2f} |")
                for jit in (False, True):
                    scratch_cfg = with_values(cfg, {"model.arch": "unet_scratch", "train.jit_compile": jit})
                    with tf.distribute.OneDeviceStrategy(devices[0]).scope():
                        model = build_model(scratch_cfg, n_channels)
                        compile_model(model, scratch_cfg, n_channels)
                    alone, fed = _training_rates(model, lambda: dataset(1), steps * batch, steps, repeats)
                    consumed.append(alone)
                    rows.append(f"| unet_scratch{', XLA' if jit else ''} | {policy} | 1 | {alone:.1f} | {fed:.1f} | |")
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
    headroom = pipeline / max(consumed)
    verdict = "met" if headroom >= PIPELINE_TARGET else "**not met**"
    return "\n".join([
        TITLE,
        "",
        f"{device_name} ({len(devices)} visible), U-Net {backbone} with random weights, {size} px crops, batch "
        f"{batch} per GPU, from {n_train} synthetic {width}x{height} images{' (quick mode)' if quick else ''}; "
        f"{steps} steps per measurement, best of {repeats} after a warm-up. Training images per second (crops) "
        f"with one global batch held in memory (what the GPUs consume) and fed by kseg's tf.data pipeline; "
        f"TTA: whole {width}x{height} images per second, {len(TTA_VIEWS)} views as one batch split over the GPUs.",
        "",
        "| model | dtype policy | GPUs | training, model alone, img/s | training, fed by the pipeline, img/s | TTA img/s |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"The input pipeline alone delivers {pipeline:.1f} img/s, {headroom:.1f}× the fastest consumption above. "
        f"Target: ≥ {PIPELINE_TARGET:g}× — {verdict}.",
    ]) + "\n"


if __name__ == "__main__":
    print(run())
