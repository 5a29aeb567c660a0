"""k-fold training: random crops from an in-memory cache, whole-image validation, OOF probabilities.

For each fold the model trains on the other folds and validates on this one. Images are decoded,
normalised (``model.input_norm``) and their targets built once per run and kept in memory (competition
images are small), so an epoch only samples, crops and augments. Training length is counted in optimizer
steps (``steps_per_epoch``, with a floor for small folds) under a per-step warm-up + cosine schedule, and
the checkpoint kept is the one with the best competition metric on the whole validation images.
Sampling is class-balanced on request; augmentation runs in the tf.data threads with a per-sample seed,
so a run is reproducible regardless of thread scheduling. After training, the best weights predict every
validation image at full resolution, without and with TTA; those out-of-fold (OOF) probabilities are what
the post-processing search is tuned on.

``train.strategy`` picks the devices (a TPU, every GPU, or one device) and ``train.mixed_precision`` the dtype
policy; ``train.batch_size`` is per replica and the learning rate follows :func:`scaled_lr`.

TensorFlow is imported inside the functions that need it, so the sampler can be used (and tested)
without it.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import platform
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import config as config_module
from .augment import augment_for_orientation, build_augment, seed_pipeline
from .channels import check_extra_channels
from .config import Config, TrainSection
from .data import ImageRecord, class_names, image_reader, load_records, read_image
from .errors import ConfigError, DataError
from .files import atomic_path, child_path, write_json, write_text
from .folds import command_folds, read_folds
from .graph_input import affine_preprocess, graph_augment, graph_train_dataset
from .metric import TaskScores
from .normalize import Polarity, fit_polarity, input_normaliser, stretched
from .plan import (
    check_plan_config,
    fingerprint,
    make_plan,
    read_plan,
    rescale_image,
    rescale_labels,
    restore_probabilities,
    write_plan,
)
from .postprocess import instances_from_probs, validate_params
from .run import RunDir
from .targets import channel_names, make_targets, read_channels
from .tasks import task_of
from .tta import VIEWS, predict_image, views_for_orientation

log = logging.getLogger(__name__)

__all__ = [
    "SampleCache", "Sampler", "sampling_probabilities", "check_train_config", "run_classes", "train_dataset",
    "steps_per_epoch", "lr_at_step", "Validator", "compile_model", "command_train",
]

# Whether a larger or a smaller value of each train.monitor is better.
MONITOR_MODES = {"val_score": "max", "val_loss": "min"}
EMPTY = "empty"
# Next to a fold's OOF files: the TTA views and tiling they were written with (kseg oof compares).
OOF_META = "oof.json"
ENV_PACKAGES = ("tensorflow", "tf_keras", "segmentation_models", "albumentations", "numpy")


# ----------------------------------------------------------------------------------------------- sampling

def _class_label(cls: str | None) -> str:
    return "all" if cls is None else str(cls)


def sampling_probabilities(classes: Sequence[str | None], empty: Sequence[bool], class_power: float,
                           empty_fraction: float | None) -> np.ndarray:
    """Probability of drawing each image.

    Class ``k`` gets a share proportional to ``count_k ** class_power`` (0: every class equally often,
    1: natural frequency), split evenly over its images. With ``empty_fraction`` set, images without
    any instance get that share of the draws in total (class-weighted among themselves) and the others
    the rest; if one of the two groups has no image, the other gets everything.
    """
    labels = np.array([_class_label(c) for c in classes], dtype=object)
    empty = np.asarray(empty, dtype=bool)
    if len(labels) != len(empty) or not len(labels):
        raise ValueError("sampling needs one class and one empty flag per image, and at least one image")

    def class_weighted(members: np.ndarray) -> np.ndarray:
        probs = np.zeros(len(labels))
        if not members.any():
            return probs
        counts = Counter(labels[members])
        total = sum(count ** float(class_power) for count in counts.values())
        for i in np.flatnonzero(members):
            count = counts[labels[i]]
            probs[i] = count ** float(class_power) / total / count
        return probs

    if empty_fraction is None or empty.all() or not empty.any():
        return class_weighted(np.ones(len(labels), bool))
    return (1.0 - empty_fraction) * class_weighted(~empty) + empty_fraction * class_weighted(empty)


class Sampler:
    """Draws an epoch of training images (positions into ``indices``) and remembers what it drew.

    Epoch ``e`` of fold ``k`` always uses the random stream ``(seed, k, e)``, so a resumed run draws
    the same images as an uninterrupted one. Each draw also carries a seed for its augmentation.
    """

    def __init__(self, indices: Sequence[int], classes: Sequence[str | None], empty: Sequence[bool],
                 class_power: float, empty_fraction: float | None, seed: int, fold: int, epoch_size: int) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.classes = list(classes)
        self.empty = np.asarray(empty, dtype=bool)
        self.probabilities = sampling_probabilities(self.classes, self.empty, class_power, empty_fraction)
        self.seed, self.fold, self.epoch_size = seed, fold, epoch_size
        self.next_epoch = 0
        self.drawn: dict[int, np.ndarray] = {}

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(cache indices, augmentation seeds) of one epoch."""
        rng = np.random.default_rng([self.seed, self.fold, epoch])
        positions = rng.choice(len(self.indices), size=self.epoch_size, p=self.probabilities)
        augment_seeds = rng.integers(0, 2**31 - 1, size=self.epoch_size)
        self.drawn[epoch] = positions
        return self.indices[positions], augment_seeds

    def draw_next(self) -> tuple[np.ndarray, np.ndarray]:
        """The next epoch's draw; tf.data calls this once per pass over the training dataset."""
        epoch = self.next_epoch
        self.next_epoch += 1
        return self.draw(epoch)

    def histogram(self, epoch: int) -> dict[str, int]:
        """Images drawn in ``epoch`` per class (``all`` without classes) plus the number of empty ones."""
        positions = self.drawn.get(epoch, np.zeros(0, np.int64))
        drawn = Counter(_class_label(self.classes[p]) for p in positions)
        counts = {name: drawn[name] for name in sorted({_class_label(c) for c in self.classes})}
        counts[EMPTY] = int(self.empty[positions].sum())
        return counts


# ------------------------------------------------------------------------------------------------ config

def check_train_config(cfg: Config) -> None:
    """The rules of ``train.*``/``tta`` beyond the types :func:`kseg.config.load_config` checked (extra channel
    and view names, the training-length keys together, the default post-processing), before any data is read
    or any model is built."""
    check_extra_channels(cfg.model)
    check_plan_config(cfg.train)
    validate_params(cfg.postprocess.default, cfg.data.task)  # the validation score uses it
    if cfg.train.pipeline == "graph":
        graph_augment(cfg.train.augment, cfg.train.size)  # a transform without a graph version fails here
    if cfg.train.jit_compile:
        from .model import model_arch
        from .unet import SCRATCH_ARCH

        arch = model_arch(cfg.model)
        if arch != SCRATCH_ARCH:
            raise ConfigError(f"train.jit_compile needs model.arch unet_scratch, got {arch}: XLA cannot "
                              "compile the gradient of the nearest-neighbour upsampling in segmentation_models' "
                              "decoders (ResizeNearestNeighborGrad); set train.jit_compile false")
    unknown = [view for view in cfg.tta if view not in VIEWS]
    if unknown:
        raise ConfigError(f"tta: unknown view(s) {', '.join(map(repr, unknown))}; valid views: {', '.join(VIEWS)}")


def run_classes(records: Sequence[ImageRecord], task: str) -> list[str]:
    """Image classes that get a target channel: sorted record classes; none for a binary task or without
    classes, and none for multiclass (its classes are per pixel: ``data.class_names``)."""
    if task_of(task).one_mask_per_image:
        return []
    return sorted({str(record.cls) for record in records if record.cls is not None})


# ------------------------------------------------------------------------------------------------- data

@dataclass
class SampleCache:
    """Decoded, normalised uint8 RGB images and uint8 {0,1} targets at the plan's scale, built once and
    shared by every fold.

    Images are normalised whole (``model.input_norm``) and rescaled (``plan.json``) before any crop,
    exactly as prediction does; targets are built from the rescaled labels.
    """

    images: list[np.ndarray]
    targets: list[np.ndarray]

    @classmethod
    def from_records(cls, records: Sequence[ImageRecord], task: str, classes: Sequence[str], border_width: int,
                     progress: bool = True,
                     normalise: Callable[[np.ndarray], np.ndarray] = lambda image: image,
                     scale: float = 1.0, read: Callable[[Path], np.ndarray] = read_image) -> "SampleCache":
        images, targets = [], []
        for record in tqdm(records, desc="cache images", disable=not progress):
            images.append(rescale_image(normalise(read(record.image_path)), scale))
            cls_index = classes.index(str(record.cls)) if classes and record.cls is not None else None
            labels = rescale_labels(record.labels, scale)
            targets.append(make_targets(labels, task, cls_index, len(classes), border_width).astype(np.uint8))
        return cls(images, targets)


def _parallel_calls(cfg: Config) -> int:
    import tensorflow as tf

    return cfg.train.workers or tf.data.AUTOTUNE


def train_dataset(cache: SampleCache, sampler: Sampler, cfg: Config,
                  preprocess: Callable[[np.ndarray], np.ndarray], replicas: int = 1) -> Any:
    """tf.data pipeline of augmented ``train.size`` crops: one epoch = ``sampler.epoch_size`` samples, in global
    batches of ``train.batch_size`` x ``replicas`` (Keras splits each one over the replicas).

    The generator yields only (index, seed) pairs; decoding was done once in the cache, and the crop,
    augmentation and preprocessing run in parallel tf.data threads. Each thread has its own
    albumentations pipeline, reseeded per sample, so the output does not depend on thread timing.
    """
    import tensorflow as tf

    size = cfg.train.size
    spec = cfg.train.augment
    seed = cfg.train.seed
    n_channels = cache.targets[0].shape[-1]
    build_augment(spec, size, train=True)  # fail on a bad spec here, not inside a tf.data thread
    # One pipeline per OS thread, keyed by thread id: TF runs numpy_function from C++ threads whose Python
    # thread state is recreated on every call, so threading.local would forget the pipeline each time.
    pipelines: dict[int, Any] = {}

    def generate() -> Any:
        indices, seeds = sampler.draw_next()
        yield from zip(indices, seeds)

    def load(index: np.int64, sample_seed: np.int64) -> tuple[np.ndarray, np.ndarray]:
        pipeline = pipelines.get(threading.get_ident())
        if pipeline is None:
            pipeline = pipelines[threading.get_ident()] = build_augment(spec, size, train=True, seed=seed)
        seed_pipeline(pipeline, int(sample_seed))
        out = pipeline(image=cache.images[index], mask=cache.targets[index])
        return preprocess(out["image"]), out["mask"].astype(np.float32)

    def load_tensors(index: Any, sample_seed: Any) -> tuple[Any, Any]:
        image, target = tf.numpy_function(load, [index, sample_seed], [tf.float32, tf.float32], stateful=False)
        return tf.ensure_shape(image, (size, size, 3)), tf.ensure_shape(target, (size, size, n_channels))

    signature = (tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(sampler.epoch_size))
    dataset = dataset.map(load_tensors, num_parallel_calls=_parallel_calls(cfg))
    # The sampler, not a file list, is the source: a strategy must not try to shard it by files (it would
    # also drop the cardinality on the way).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = dataset.with_options(options)
    return dataset.batch(cfg.train.batch_size * replicas, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def graph_dataset(cache: SampleCache, sampler: Sampler, cfg: Config, preprocess: Callable[[np.ndarray], np.ndarray],
                  replicas: int = 1, first_epoch: int = 0) -> Any:
    """The ``train.pipeline: graph`` input (:mod:`kseg.graph_input`): the draws of every epoch from
    ``first_epoch`` on, made now, as one stream of batches that ``fit`` reads ``steps_per_epoch`` at a time.

    The sampler draws exactly what it draws for the host pipeline, so the per-class draws in
    ``history.csv`` and a resumed run's epochs are the same.
    """
    draws = [sampler.draw(epoch) for epoch in range(first_epoch, cfg.train.epochs)]
    sampler.next_epoch = cfg.train.epochs
    indices, seeds = (np.concatenate(parts) for parts in zip(*draws))
    return graph_train_dataset(cache.images, cache.targets, indices, seeds, cfg.train.size,
                               graph_augment(cfg.train.augment, cfg.train.size), affine_preprocess(preprocess),
                               cfg.train.batch_size * replicas)


# ------------------------------------------------------------------------------------------------ model

def compile_model(model: Any, cfg: Config, n_channels: int, replicas: int = 1, weights: np.ndarray | None = None) -> None:
    """Adam at ``train.lr`` scaled for ``replicas``, the configured loss (``weights`` per channel: see
    ``model.build_loss``), and soft Dice of the foreground channel as a metric.

    ``train.jit_compile`` compiles the per-replica training step with XLA, as Keras' own ``jit_compile`` does,
    but leaves prediction (validation, OOF) uncompiled: whole images of many sizes would each compile anew.
    It is refused by :func:`check_train_config` for segmentation_models' architectures, whose decoders'
    nearest-neighbour upsampling has no XLA gradient (``ResizeNearestNeighborGrad``, on CPU and GPU). A TPU
    compiles everything itself. ``train.steps_per_execution`` goes to Keras; validation and OOF then predict
    through :func:`_predict_fn`, since ``predict_on_batch`` would read that many batches from its one batch.
    """
    import segmentation_models as sm
    import tensorflow as tf
    import tf_keras as keras

    from .model import build_loss

    if cfg.train.jit_compile and not isinstance(model.distribute_strategy, tf.distribute.TPUStrategy):
        from tensorflow.python.framework import config as tf_config

        # XLA has no deterministic MaxPool gradient, and determinism is process-wide: an earlier run in this
        # process may have turned it on. Such a run is reproducible up to float rounding.
        tf_config.disable_op_determinism()
        model.train_step = tf.function(model.train_step, jit_compile=True, reduce_retracing=True)
        log.info("[train] the training step is compiled with XLA (train.jit_compile)")

    ema = cfg.train.ema
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=scaled_lr(cfg.train.lr, replicas), use_ema=ema is not None,
                                        ema_momentum=0.99 if ema is None else float(ema)),
        loss=build_loss(cfg, n_channels, weights),
        metrics=[sm.metrics.FScore(class_indexes=[0], name="fg_dice")],
        steps_per_execution=cfg.train.steps_per_execution,
    )


def _tpu_strategy(tf: Any) -> Any:
    """A TPUStrategy when a TPU is attached (Kaggle/Colab TPU VMs), else None."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, RuntimeError):
        return None
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _strategy(name: str) -> Any:
    """The ``train.strategy`` named; ``auto`` takes a TPU, else several GPUs, else the one device there is."""
    import tensorflow as tf

    if name in ("auto", "tpu"):
        strategy = _tpu_strategy(tf)
        if strategy is not None:
            return strategy
        if name == "tpu":
            raise ConfigError("train.strategy is tpu, but no TPU is attached (TPUClusterResolver found none); "
                              "use auto, default or mirrored")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        # Every logical CPU device without a GPU: one on a plain CPU, more when they were configured (tests).
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.MirroredStrategy() if name == "auto" and len(gpus) > 1 else tf.distribute.get_strategy()


def _dtype_policy(mixed_precision: bool | str, strategy: Any, has_gpu: bool) -> str:
    """The Keras dtype policy for ``train.mixed_precision`` on this hardware (see config.DEFAULTS)."""
    import tensorflow as tf

    if isinstance(mixed_precision, str):
        return mixed_precision
    if not mixed_precision:
        return "float32"
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if has_gpu:
        return "mixed_float16"
    log.info("[train] train.mixed_precision: no GPU or TPU, so training runs in float32 (a CPU gains nothing from "
          "float16); set it to mixed_float16 or mixed_bfloat16 to force a policy")
    return "float32"


@dataclass(frozen=True)
class Accelerator:
    """What a run trains on: the tf.distribute strategy and the Keras dtype policy set for it."""

    strategy: Any
    policy: str
    pipeline: str = "host"

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def describe(self, train_cfg: TrainSection) -> dict[str, Any]:
        """Strategy, replicas, batches and learning rate, as printed and written to state.json/done.json."""
        return {"strategy": type(self.strategy).__name__, "replicas": self.replicas,
                "batch_per_replica": train_cfg.batch_size, "global_batch": train_cfg.batch_size * self.replicas,
                "lr": scaled_lr(train_cfg.lr, self.replicas), "dtype_policy": self.policy, "pipeline": self.pipeline}


def _accelerator(train_cfg: TrainSection) -> Accelerator:
    """Create ``train.strategy``, set the dtype policy, and make CPU runs deterministic.

    On CPU, ops are made deterministic so that a seed fully determines a run (GPU kernels such as resize
    gradients have no deterministic version), except under ``train.jit_compile``, whose XLA MaxPool gradient
    has none. Under mixed_float16, ``compile`` wraps the optimizer in a LossScaleOptimizer; the sigmoid layer
    and so the loss stay float32 (model.build_model).
    """
    import tensorflow as tf
    import tf_keras as keras

    strategy = _strategy(train_cfg.strategy)
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    policy = _dtype_policy(train_cfg.mixed_precision, strategy, has_gpu)
    keras.mixed_precision.set_global_policy(policy)
    on_tpu = isinstance(strategy, tf.distribute.TPUStrategy)
    if not has_gpu and not on_tpu and not train_cfg.jit_compile:  # XLA: see compile_model
        tf.config.experimental.enable_op_determinism()
    pipeline = "graph" if train_cfg.pipeline == "graph" or (train_cfg.pipeline == "auto" and on_tpu) else "host"
    accelerator = Accelerator(strategy, policy, pipeline)
    log.info(f"[train] {type(strategy).__name__} with {accelerator.replicas} replica(s), dtype policy {policy}, "
             f"{pipeline} input pipeline")
    return accelerator


# -------------------------------------------------------------------------------------------- schedule

def steps_per_epoch(train_cfg: TrainSection, n_train: int, replicas: int = 1) -> int:
    """``train.steps_per_epoch``, or one pass over ``n_train`` images but at least ``min_steps_per_epoch``.

    An epoch of one pass collapses on small competitions (27 images at batch 8 are 3 steps, so 25 epochs
    train 75 steps) and the floor keeps the number of optimizer steps meaningful there; on large sets the
    pass dominates, as usual. Crops are drawn with replacement, so any batch size works with any fold.
    A step takes ``batch_size`` crops on each of ``replicas`` devices, so more replicas make the pass shorter.
    """
    if train_cfg.steps_per_epoch:
        return int(train_cfg.steps_per_epoch)
    return max(math.ceil(n_train / (train_cfg.batch_size * replicas)), int(train_cfg.min_steps_per_epoch or 1))


def scaled_lr(lr: float, replicas: int) -> float:
    """The learning rate for ``replicas`` replicas: ``train.lr`` (tuned for one replica's batch) x sqrt(replicas).

    The global batch grows with the replicas. Linear scaling (Goyal et al., 2017) is SGD's rule; Adam's
    update is normalised by the gradient's second moment, and the rule that keeps its noise scale is the
    square root (Malladi et al., 2022). One replica keeps ``train.lr`` exactly.
    """
    return float(lr) * math.sqrt(replicas)


def lr_at_step(step: int, total_steps: int, base_lr: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` share of the steps, then cosine decay to zero.

    Per step rather than per epoch, so that the schedule has the same shape whether a run has 5 long
    epochs or 50 short ones.
    """
    warmup_steps = int(round(warmup * total_steps))
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _read_lr(optimizer: Any) -> float:
    """The optimizer's current learning rate; ``get_value`` also reads distributed (mirrored) variables."""
    import tf_keras as keras

    return float(keras.backend.get_value(optimizer.learning_rate))


# ---------------------------------------------------------------------------------------------- validation

def _predict_fn(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``model.predict_on_batch`` for a batch of any size under the model's strategy.

    Keras splits a batch over the replicas, so a batch smaller than the replica count (one validation image)
    leaves a replica an empty batch, on which the compiled BatchNorm fails. The batch is padded with copies of
    its last image to a multiple of the replicas, which run in parallel (no extra time), and cut back.

    Under ``train.steps_per_execution`` > 1, Keras would build a predict function that reads that many batches
    from the one batch it is given; it is built once for a single step instead (Keras decides when it builds
    the function, and keeps it until the next ``compile``).
    """
    steps = getattr(model, "_steps_per_execution", None)  # None: not a compiled Keras model (tests' stand-ins)
    several = 1 if steps is None else int(steps.numpy())
    if several > 1 and model.predict_function is None:
        steps.assign(1)
        model.make_predict_function()
        steps.assign(several)
    replicas = int(model.distribute_strategy.num_replicas_in_sync)
    if replicas == 1:
        return model.predict_on_batch

    def predict(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        padded = np.concatenate([batch, np.repeat(batch[-1:], -len(batch) % replicas, axis=0)])
        return np.asarray(model.predict_on_batch(padded))[:len(batch)]

    return predict


# train.val_images auto: whole validation images up to this many pixels (at the plan's scale) per epoch, at least
# VAL_MIN_IMAGES. The checkpoint is chosen by their score: on 8 small images (256² polyp frames) that score
# varied more between epochs than training changed it, and the first of four epochs was kept (BENCHMARKS.md).
VAL_PIXELS = 8_000_000
VAL_MIN_IMAGES = 8


def validation_count(cache: "SampleCache", indices: Sequence[int], val_images: int | str | None) -> int | None:
    """How many of the fold's validation images are scored after each epoch (None: all of them)."""
    if val_images != "auto":
        return val_images
    pixels = np.cumsum([cache.images[i].shape[0] * cache.images[i].shape[1] for i in indices])
    return max(VAL_MIN_IMAGES, int(np.searchsorted(pixels, VAL_PIXELS, side="right")))


def _spread(items: list, count: int | None) -> list:
    """``count`` items evenly spread over ``items`` (all of them when ``count`` is None or not smaller)."""
    if count is None or count >= len(items):
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


class Validator:
    """Scores the model on the fold's whole validation images, as the submission will be scored.

    At most ``train.val_images`` images are scored (auto: as many as fit in :data:`VAL_PIXELS` pixels), an
    even spread over the fold, since whole-image inference after every epoch can cost more than the epoch's
    training on a CPU or with few steps per epoch.
    ``val_score`` is the competition metric (``data.metric``: by default mAP over IoU thresholds for instances, Dice for binary masks)
    after ``postprocess.default`` (multiclass: mean IoU over the validation images' summed pixel counts);
    ``val_loss`` is the training loss on the same full images; ``val_fg_dice``
    the soft Dice of the foreground. Short runs with small batches make ``val_loss`` swing by orders of
    magnitude between epochs while the metric stays meaningful, so the checkpoint follows ``train.monitor``.
    """

    def __init__(self, cache: SampleCache, records: Sequence[ImageRecord], indices: Sequence[int], cfg: Config,
                 preprocess: Callable[[np.ndarray], np.ndarray], loss: Callable[[Any, Any], Any]) -> None:
        self.cache, self.records = cache, records
        self.indices = _spread(list(indices), validation_count(cache, indices, cfg.train.val_images))
        self.preprocess, self.loss = preprocess, loss
        self.task, self.metric = cfg.data.task, cfg.data.metric
        # A multiclass target holds background + one channel per class; the metric may score every class.
        self.n_classes = cache.targets[0].shape[-1] - 1 if task_of(self.task).class_per_pixel else 0
        self.params = validate_params(cfg.postprocess.default, self.task)
        self.tile = cfg.predict.tile

    def __call__(self, model: Any) -> dict[str, float]:
        import tensorflow as tf

        losses, soft_dice, scores = [], [], TaskScores(self.task, self.metric, self.n_classes)
        predict = _predict_fn(model)
        for index in self.indices:
            probs = predict_image(predict, self.preprocess(self.cache.images[index]), ["identity"], tile=self.tile)
            target = self.cache.targets[index].astype(np.float32)
            losses.append(float(self.loss(tf.constant(target[None]), tf.constant(probs[None]))))
            overlap = float((probs[..., 0] * target[..., 0]).sum())
            soft_dice.append((2 * overlap + 1.0) / (float(probs[..., 0].sum() + target[..., 0].sum()) + 1.0))
            truth = self.records[index].labels
            pred = instances_from_probs(restore_probabilities(probs, truth.shape), self.params, self.task)
            scores.add(truth, pred)
        return {"val_loss": float(np.mean(losses)), "val_fg_dice": float(np.mean(soft_dice)),
                "val_score": scores.score}


# -------------------------------------------------------------------------------------------- recording

def _save_curves(history: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, score_ax, lr_ax) = plt.subplots(1, 3, figsize=(15, 4))
    epochs = history["epoch"] + 1
    for column in ("loss", "val_loss"):
        if column in history:
            loss_ax.plot(epochs, history[column], marker="o", label=column)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_title(f"{title}: loss")
    loss_ax.legend()
    for column in ("val_score", "val_fg_dice"):
        if column in history:
            score_ax.plot(epochs, history[column], marker="o", label=column)
    score_ax.set_xlabel("epoch")
    score_ax.set_title("validation (whole images)")
    score_ax.legend()
    lr_ax.plot(epochs, history["lr"], marker="o")
    lr_ax.set_yscale("log")
    lr_ax.set_xlabel("epoch")
    lr_ax.set_title("learning rate (end of epoch)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _improves(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


@contextlib.contextmanager
def _averaged_weights(model: Any) -> Iterator[None]:
    """Inside, the model holds the optimizer's moving average of its weights (``train.ema``); the live weights
    come back on exit. Without an average, nothing changes."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under a loss-scale wrapper
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "_model_variables_moving_average", None):
        yield
        return
    live = model.get_weights()
    optimizer.finalize_variable_values(model.trainable_variables)
    try:
        yield
    finally:
        model.set_weights(live)


class FoldRecorder:
    """End-of-epoch bookkeeping of one fold, all written atomically so an interruption loses at most an epoch:
    the validation scores (added to the epoch's logs, so early stopping and the LR plateau see them),
    ``history.csv`` (metrics, learning rate, images drawn per class), ``curves.png``, ``last.weights.h5``,
    ``best.weights.h5`` (best ``train.monitor``) and ``state.json`` (what ``--resume`` needs, and ``setup``:
    the accelerator the fold trains on, see :meth:`Accelerator.describe`)."""

    def __init__(self, run: RunDir, fold: int, model: Any, sampler: Sampler, validator: Validator, monitor: str,
                 history: pd.DataFrame, epochs_done: int, best_value: float | None, best_epoch: int | None,
                 setup: Mapping[str, Any] | None = None) -> None:
        self.run, self.fold, self.model, self.sampler, self.validator = run, fold, model, sampler, validator
        self.setup = dict(setup or {})
        self.monitor, self.mode = monitor, MONITOR_MODES[monitor]
        self.rows = history.to_dict("records")
        self.epochs_done = epochs_done
        self.best_value, self.best_epoch = best_value, best_epoch
        self.stopped_early = False
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None) -> None:
        from .model import save_weights

        if logs is None:
            logs = {}
        with _averaged_weights(self.model):  # train.ema: the average is what is validated and kept as best
            logs.update(self.validator(self.model))
            value = float(logs[self.monitor])
            if _improves(value, self.best_value, self.mode):
                self.best_value, self.best_epoch = value, epoch
                save_weights(self.model, self.run.weights(self.fold))
        drawn = self.sampler.histogram(epoch)
        log.info(f"[train] epoch {epoch + 1}: " + ", ".join(f"{k} {logs[k]:.4f}" for k in ("loss", "val_loss", "val_score")
                                                         if k in logs)
              + "; images drawn: " + ", ".join(f"{k} {v}" for k, v in drawn.items()))
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items() if k != "lr"},
                          "lr": _read_lr(self.model.optimizer), "seconds": round(time.perf_counter() - self.started, 1),
                          **{f"drawn_{k}": v for k, v in drawn.items()}})
        history = pd.DataFrame(self.rows)
        with atomic_path(self.run.history(self.fold)) as tmp:
            history.to_csv(tmp, index=False)
        _save_curves(history, self.run.curves(self.fold), self.run.fold(self.fold).name)
        save_weights(self.model, self.run.last_weights(self.fold))  # the live weights: training resumes from them
        self.epochs_done = epoch + 1
        self.write_state()

    def write_state(self) -> None:
        write_json(self.run.state(self.fold), {
            "epoch": self.epochs_done, "monitor": self.monitor, "best_value": self.best_value,
            "best_epoch": self.best_epoch, "lr": _read_lr(self.model.optimizer), "stopped_early": self.stopped_early,
            **self.setup,
        })


class _StepSchedule:
    """Sets the learning rate before every batch from the global step (epoch × steps + batch), so a resumed
    fold continues the schedule where it stopped."""

    def __init__(self, optimizer: Any, steps: int, epochs: int, base_lr: float, warmup: float) -> None:
        self.optimizer, self.steps, self.total = optimizer, steps, steps * epochs
        self.base_lr, self.warmup, self.epoch = base_lr, warmup, 0

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        lr = lr_at_step(self.epoch * self.steps + batch, self.total, self.base_lr, self.warmup)
        self.optimizer.learning_rate.assign(lr)


def _callbacks(cfg: Config, recorder: FoldRecorder, steps: int, lr: float) -> list:
    """The recorder first: it adds the validation scores to the logs the later callbacks read. ``lr`` is the
    base learning rate, ``train.lr`` scaled for the replicas."""
    import tf_keras as keras

    train = cfg.train
    monitor, mode = recorder.monitor, recorder.mode
    callbacks: list = [keras.callbacks.LambdaCallback(on_epoch_end=recorder.on_epoch_end)]
    if train.scheduler == "cosine":
        schedule = _StepSchedule(recorder.model.optimizer, steps, train.epochs, lr, train.warmup)
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_begin=schedule.on_epoch_begin,
                                                        on_train_batch_begin=schedule.on_train_batch_begin))
    elif train.scheduler == "plateau":
        # Halve the learning rate well before early stopping would give up.
        patience = max(1, train.early_stopping // 2) if train.early_stopping else 3
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5, patience=patience,
                                                           min_lr=lr / 64, verbose=train.verbose))
    if train.early_stopping:
        # On resume the baseline is the best value so far, so patience counts from the resumed epoch.
        stopper = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=train.early_stopping,
                                                baseline=recorder.best_value, verbose=train.verbose)
        callbacks.append(stopper)
        callbacks.append(keras.callbacks.LambdaCallback(
            on_train_end=lambda logs: setattr(recorder, "stopped_early", stopper.stopped_epoch > 0)))
    return callbacks


# ----------------------------------------------------------------------------------------------- OOF

def _write_oof(model: Any, cache: SampleCache, records: Sequence[ImageRecord], indices: Sequence[int],
               cfg: Config, preprocess: Callable[[np.ndarray], np.ndarray], oof_dir: Path) -> None:
    """Probabilities of every validation image at full resolution (restored from the plan's scale), as
    uint8 ×255: ``plain`` and ``tta``.

    The ``identity`` view of the TTA is the plain prediction, so it is computed once and averaged in.
    """
    tile, views = cfg.predict.tile, list(cfg.tta)
    others = [view for view in views if view != "identity"]
    predict = _predict_fn(model)
    (oof_dir / OOF_META).unlink(missing_ok=True)  # until every file is rewritten, they are not of these views
    for index in tqdm(indices, desc=f"OOF {oof_dir.parent.name}", disable=not cfg.train.verbose):
        oof_path = child_path(oof_dir, f"{records[index].id}.npz", "OOF file of image id")
        image = preprocess(cache.images[index])
        plain = predict_image(predict, image, ["identity"], tile=tile)
        if not others:
            tta = plain
        else:
            rest = predict_image(predict, image, others, tile=tile)
            tta = (rest * len(others) + plain * (len(views) - len(others))) / len(views)
        shape = records[index].shape
        plain, tta = restore_probabilities(plain, shape), restore_probabilities(tta, shape)
        as_uint8 = {name: np.round(np.clip(probs, 0.0, 1.0) * 255).astype(np.uint8)
                    for name, probs in (("plain", plain), ("tta", tta))}
        with atomic_path(oof_path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **as_uint8)
    write_json(oof_dir / OOF_META, {**_oof_settings(cfg), "images": len(indices)})


def _oof_settings(cfg: Config) -> dict[str, Any]:
    """What a fold's OOF files depend on beyond its weights: the TTA views (already oriented) and the tiling."""
    return {"views": list(cfg.tta), "tile": cfg.predict.tile}


def command_oof(cfg: Config) -> list[Path]:
    """``kseg oof``: rewrite the OOF predictions of every trained fold whose files were written with other TTA
    views or tiling than ``cfg`` now asks for, from its ``best.weights.h5``; returns the folds rewritten.

    Training writes them too (the images are in memory then), so after ``kseg train`` this only checks; after
    an edit of ``tta`` or ``predict.tile`` it predicts the validation images again instead of retraining.
    """
    from .model import build_model, load_weights, preprocess_fn

    check_train_config(cfg)
    out = config_module.output_dir(cfg)
    plan = read_plan(out)
    oriented = oriented_config(cfg, plan.orientation)
    wanted = _oof_settings(oriented)
    run = RunDir(out)
    trained = run.folds_with(run.done(0).name)
    if not trained:
        raise DataError(f"no trained fold (fold*/done.json) in {out}: run `kseg train` with this config first")

    def written_with(fold: int) -> dict | None:
        meta = run.oof(fold) / OOF_META
        try:
            return {k: v for k, v in json.loads(meta.read_text()).items() if k in wanted} if meta.is_file() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None

    stale = [k for k in trained if written_with(k) != wanted]
    if not stale:
        log.info(f"[oof] every trained fold's OOF was written with views {', '.join(wanted['views'])} and tile "
              f"{wanted['tile']}: up to date")
        return []
    task = cfg.data.task
    records = load_records(cfg, progress=bool(cfg.train.verbose))
    fold_of = _fold_assignment(cfg, records)
    channels, _ = read_channels(out, task)
    target_classes = class_names(cfg, records) or run_classes(records, task)
    preprocess = preprocess_fn(cfg)
    for fold in stale:
        val = [records[i] for i in np.flatnonzero(fold_of == fold)]
        log.info(f"[oof] fold {fold}: {len(val)} validation images, views {', '.join(wanted['views'])}")
        cache = SampleCache.from_records(val, task, target_classes, cfg.train.border_width,
                                         progress=bool(cfg.train.verbose),
                                         normalise=input_normaliser(cfg, plan.invert), scale=plan.scale,
                                         read=image_reader(cfg))
        model = build_model(cfg, len(channels))
        load_weights(model, run.weights(fold))
        _write_oof(model, cache, val, range(len(val)), oriented, preprocess, run.oof(fold))
    return [run.fold(k) for k in stale]


# --------------------------------------------------------------------------------------------- one fold

def fold_channel_weights(cfg: Config, cache: SampleCache, train_indices: Sequence[int], n_channels: int) -> np.ndarray | None:
    """``train.channel_weights`` of one fold: the config's list, or (``auto``) from the pixel counts of each
    channel in the fold's training targets, so no validation pixel shapes the loss."""
    from .model import channel_weights

    if cfg.train.channel_weights != "auto":
        return channel_weights(cfg, n_channels)
    counts = np.zeros(n_channels, np.int64)
    for index in train_indices:
        counts += cache.targets[index].reshape(-1, n_channels).sum(axis=0, dtype=np.int64)
    return channel_weights(cfg, n_channels, counts)


def _read_state(run: RunDir, fold: int) -> dict | None:
    state_path, last = run.state(fold), run.last_weights(fold)
    if not (state_path.is_file() and last.is_file()):
        return None
    return json.loads(state_path.read_text())


def _train_fold(cfg: Config, fold: int, records: Sequence[ImageRecord], fold_of: np.ndarray, cache: SampleCache,
                n_channels: int, accelerator: Accelerator, resume: bool, planned_steps: int | None = None) -> Path:
    import tf_keras as keras

    from .model import build_model, describe_model, load_weights, preprocess_fn

    train_cfg = cfg.train
    run = RunDir.of(cfg)
    fold_dir = run.fold(fold)
    train_indices = np.flatnonzero(fold_of != fold)
    val_indices = np.flatnonzero(fold_of == fold)
    replicas = accelerator.replicas
    setup = accelerator.describe(train_cfg)
    steps = planned_steps or steps_per_epoch(train_cfg, len(train_indices), replicas)
    log.info(f"\n[train] fold {fold}: {len(train_indices)} training images, {len(val_indices)} validation images, "
          f"{steps} steps of {setup['global_batch']} ({setup['batch_per_replica']} per replica x {replicas} "
          f"replica(s)), lr {setup['lr']:.3g}")

    keras.utils.set_random_seed(train_cfg.seed)
    state = _read_state(run, fold) if resume else None
    if state is None:  # a fresh start: stale markers of an earlier run must not mark this one done or resumable
        for marker in (run.done(fold), run.state(fold)):
            marker.unlink(missing_ok=True)
    initial_epoch = state["epoch"] if state else 0
    weights = fold_channel_weights(cfg, cache, train_indices, n_channels)
    if weights is not None:
        setup["channel_weights"] = [round(float(w), 4) for w in weights]
        log.info(f"[train] fold {fold}: channel weights {', '.join(f'{w:.2f}' for w in weights)} "
              f"(train.channel_weights {train_cfg.channel_weights})")
    with accelerator.strategy.scope():
        model = build_model(cfg, n_channels)
        compile_model(model, cfg, n_channels, replicas, weights)
    log.info(f"[train] fold {fold}: {describe_model(model)}")
    if state:
        load_weights(model, run.last_weights(fold))
        model.optimizer.learning_rate.assign(state["lr"])
        log.info(f"[train] fold {fold}: resuming after epoch {initial_epoch} "
              f"(best {state['monitor']} {state['best_value']})")
        if state.get("replicas", replicas) != replicas:
            log.info(f"[train] fold {fold}: it trained on {state['replicas']} replica(s), now {replicas}: the global "
                  f"batch, the steps per epoch and the learning rate schedule change from here")

    sampler = Sampler(train_indices, [records[i].cls for i in train_indices],
                      [records[i].n_instances == 0 for i in train_indices], train_cfg.sampler.class_power,
                      train_cfg.sampler.empty_fraction, train_cfg.seed, fold, steps * setup["global_batch"])
    sampler.next_epoch = initial_epoch
    preprocess = preprocess_fn(cfg)
    history_path = run.history(fold)
    history = pd.read_csv(history_path) if state and history_path.is_file() else pd.DataFrame()
    if len(history):
        history = history[history["epoch"] < initial_epoch]
    monitor = train_cfg.monitor
    resumable = state is not None and state.get("monitor") == monitor
    validator = Validator(cache, records, val_indices, cfg, preprocess, model.loss)
    recorder = FoldRecorder(run, fold, model, sampler, validator, monitor, history, initial_epoch,
                            state["best_value"] if resumable else None, state["best_epoch"] if resumable else None,
                            setup)
    finished = state is not None and (state["stopped_early"] or initial_epoch >= train_cfg.epochs)
    if not finished:
        fold_dir.mkdir(parents=True, exist_ok=True)
        graph = accelerator.pipeline == "graph"
        model.fit(
            graph_dataset(cache, sampler, cfg, preprocess, replicas, initial_epoch) if graph
            else train_dataset(cache, sampler, cfg, preprocess, replicas),
            steps_per_epoch=steps if graph else None,  # graph: one stream for all epochs, read an epoch at a time
            epochs=train_cfg.epochs, initial_epoch=initial_epoch, verbose=train_cfg.verbose,
            callbacks=_callbacks(cfg, recorder, steps, setup["lr"]),
        )
        recorder.write_state()  # records whether early stopping ended the fold

    best = run.weights(fold)
    load_weights(model, best)
    _write_oof(model, cache, records, val_indices, cfg, preprocess, run.oof(fold))
    write_json(run.done(fold), {
        "fold": fold, "epochs": recorder.epochs_done, "steps_per_epoch": steps, "best_epoch": recorder.best_epoch,
        "monitor": monitor, "best_value": recorder.best_value, "oof_images": len(val_indices), **setup,
    })
    return best


# ------------------------------------------------------------------------------------------- run files

def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _environment() -> dict:
    versions = {name: getattr(importlib.import_module(name), "__version__", None) for name in ENV_PACKAGES}
    return {"git_commit": _git_commit(), "python": platform.python_version(), "packages": versions}


def _fold_assignment(cfg: Config, records: Sequence[ImageRecord]) -> np.ndarray:
    """Fold of each record; creates ``folds.csv`` when missing and keeps a copy in the run directory."""
    path = config_module.folds_path(cfg)
    if not path.is_file():
        command_folds(cfg)
    folds = read_folds(path, [record.id for record in records], cfg=cfg, groups={r.id: r.group for r in records})
    run_copy = RunDir.of(cfg).folds_csv
    if path.resolve() != run_copy.resolve():
        with atomic_path(run_copy) as tmp:
            folds.to_csv(tmp, index=False)
    fold_by_id = dict(zip(folds["id"], folds["fold"].astype(int)))
    return np.array([fold_by_id[record.id] for record in records])


def _folds_to_train(fold: int | str | list[int], available: Sequence[int]) -> list[int]:
    if fold == "all":
        return list(available)
    wanted = fold if isinstance(fold, list) else [fold]
    missing = [k for k in wanted if not (config_module.is_int(k) and k in available)]
    if not missing:
        return sorted(set(wanted))
    raise ConfigError(f"fold(s) {', '.join(map(repr, missing))} not in the folds file; available folds: "
                      f"{', '.join(map(str, available))} or 'all'")


def oriented_config(cfg: Config, orientation: str) -> Config:
    """``cfg`` with the augmentation and TTA views a planned orientation allows (plan.orientation_plan):
    what training and its OOF predictions use."""
    return config_module.with_values(cfg, {"train.augment": augment_for_orientation(cfg.train.augment, orientation),
                                           "tta": views_for_orientation(cfg.tta, orientation)})


def _fit_polarity(cfg: Config, records: Sequence[ImageRecord]) -> Polarity:
    """``model.invert: auto``'s rule, from the training images and their labels (normalize.fit_polarity)."""
    if task_of(cfg.data.task).class_per_pixel:  # every pixel is some class: there is no object and ground
        return Polarity("none", f"task {cfg.data.task}: no objects on a ground to compare, nothing inverted")
    read = image_reader(cfg)
    norm, scope = cfg.model.input_norm, cfg.model.input_norm_scope
    samples = ((stretched(read(record.image_path), norm, scope), record.labels) for record in records)
    return fit_polarity(tqdm(samples, total=len(records), desc="polarity", disable=not cfg.train.verbose))


def command_train(cfg: Config, fold: int | str | list[int] | None = None, resume: bool = False) -> list[Path]:
    """Train the requested fold(s) (None: ``train.folds``) and write the run directory; returns each
    fold's best weights file.

    With ``resume``, folds that have ``done.json`` are skipped and an interrupted fold continues from
    ``last.weights.h5`` at the epoch in ``state.json`` (optimizer moments restart; the learning rate and
    best val_loss are restored). Without it, each requested fold is trained from scratch.
    """
    check_train_config(cfg)
    task = cfg.data.task
    out = config_module.output_dir(cfg)
    records = load_records(cfg, progress=bool(cfg.train.verbose))
    classes = run_classes(records, task)
    # multiclass: one channel per pixel class (and no image classes); the others: per image class, if any.
    target_classes = class_names(cfg, records) or classes
    channels = channel_names(task, target_classes)
    from .model import build_loss

    build_loss(cfg, len(channels))  # bad loss or channel weights fail before the images are cached

    out.mkdir(parents=True, exist_ok=True)
    fold_of = _fold_assignment(cfg, records)
    write_text(out / "config.yaml", config_module.dump(cfg))
    write_json(out / "env.json", _environment())
    write_json(RunDir(out).channels, {"channels": channels, "classes": classes, "task": task})
    fp = fingerprint([record.labels for record in records], [record.cls for record in records], task_of(task).class_per_pixel)
    requested = _folds_to_train(cfg.train.folds if fold is None else fold, sorted(set(fold_of.tolist())))
    plan = make_plan(fp, cfg.train, task, requested)
    if cfg.model.invert == "auto":
        plan = replace(plan, invert=_fit_polarity(cfg, records))
        log.info(f"[plan] model.invert auto: {plan.invert.reason}")
    write_plan(out, fp, plan)
    log.info(f"[plan] {len(records)} images, median object diameter {fp.median_diameter} px: {plan.reason}")
    requested = plan.folds
    pending = [k for k in requested if not (resume and RunDir(out).done(k).is_file())]
    for k in sorted(set(requested) - set(pending)):
        log.info(f"[train] fold {k}: done.json exists, skipping (--resume)")
    if pending:
        import tf_keras as keras

        from .model import preprocess_fn

        previous_policy = keras.mixed_precision.global_policy()
        accelerator = _accelerator(cfg.train)
        oriented = oriented_config(cfg, plan.orientation)
        try:
            if accelerator.pipeline == "graph":  # auto on a TPU: fail before the images are cached
                graph_augment(oriented.train.augment, cfg.train.size)
                affine_preprocess(preprocess_fn(cfg))
            cache = SampleCache.from_records(records, task, target_classes, cfg.train.border_width,
                                             progress=bool(cfg.train.verbose),
                                             normalise=input_normaliser(cfg, plan.invert),
                                             scale=plan.scale, read=image_reader(cfg))
            for k in pending:
                start = time.perf_counter()
                _train_fold(oriented, k, records, fold_of, cache, len(channels), accelerator, resume,
                            plan.steps_per_epoch)
                log.info(f"[train] fold {k} finished in {time.perf_counter() - start:.0f}s")
        finally:  # the policy is global: prediction and search later in the same process build float32 models
            keras.mixed_precision.set_global_policy(previous_policy)
    return [RunDir(out).weights(k) for k in requested]
