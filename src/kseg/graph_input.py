"""The training input pipeline as TensorFlow graph ops only, for a TPU (``train.pipeline: graph``).

The default (host) pipeline runs albumentations inside ``tf.numpy_function`` behind a Python generator:
right for a CPU or GPU, but a TPU's input pipeline cannot call back into Python (on a TPU node it runs
on a remote host; on a TPU VM Python callbacks serialise it behind the GIL). This one holds the cached
images and targets as tensors, draws every epoch's images from the sampler up front (a stream of
``(image index, augmentation seed)`` pairs, exactly the draws the host pipeline makes), and crops and
augments with stateless random ops seeded per sample, so a run is reproducible and resumes where it
stopped.

It translates the transforms of ``train.augment`` that have an exact graph version (:data:`GRAPH_TRANSFORMS`,
with albumentations' own meaning of their arguments and defaults); any other transform or argument is a
config error that names it, never silently dropped. The backbone's input preprocessing is the per-pixel
affine map its numpy version computes, measured once (:func:`affine_preprocess`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import albumentations as A
import numpy as np

from .augment import build_augment
from .errors import ConfigError

__all__ = ["GRAPH_TRANSFORMS", "GraphAugment", "graph_augment", "affine_preprocess", "graph_train_dataset",
           "python_callbacks"]

# Each transform's arguments that have a graph version; any other argument given is a config error.
GRAPH_TRANSFORMS: dict[str, frozenset[str]] = {
    "HorizontalFlip": frozenset({"p"}),
    "VerticalFlip": frozenset({"p"}),
    "RandomRotate90": frozenset({"p"}),
    "Transpose": frozenset({"p"}),
    "Affine": frozenset({"scale", "rotate", "keep_ratio", "p"}),
    "RandomBrightnessContrast": frozenset({"brightness_limit", "contrast_limit", "brightness_by_max", "p"}),
}


@dataclass(frozen=True)
class GraphAugment:
    """One transform of ``train.augment`` with its arguments as albumentations normalised them."""

    name: str
    p: float
    params: Mapping[str, Any]


def graph_augment(spec: list, size: int) -> list[GraphAugment]:
    """``train.augment`` as graph transforms, or a :class:`ConfigError` naming the item that has none.

    The spec is first checked (and built) exactly as the host pipeline checks it, so the two pipelines
    accept the same names and arguments and read defaults and scalar ranges the same way.
    """
    pipeline = build_augment(spec, size, train=True)
    built = list(pipeline.transforms)[1:]  # the first is the random crop every training pipeline starts with
    supported = ", ".join(GRAPH_TRANSFORMS)
    transforms = []
    for index, (item, transform) in enumerate(zip(spec, built), start=1):
        (name, kwargs), = item.items()
        where = f"train.augment item {index} ({name})"
        if name not in GRAPH_TRANSFORMS:
            raise ConfigError(f"{where}: train.pipeline graph has no graph version of {name}; it runs {supported}. "
                              "Remove it or use train.pipeline host")
        unsupported = sorted(set(kwargs or {}) - GRAPH_TRANSFORMS[name])
        if unsupported:
            raise ConfigError(f"{where}: train.pipeline graph supports the arguments "
                              f"{', '.join(sorted(GRAPH_TRANSFORMS[name]))} of {name}, not {', '.join(unsupported)}")
        transforms.append(GraphAugment(name, float(transform.p), _params(transform)))
    return transforms


def _params(transform: A.BasicTransform) -> dict[str, Any]:
    if isinstance(transform, A.Affine):
        return {"scale_x": transform.scale["x"], "scale_y": transform.scale["y"], "rotate": transform.rotate,
                "keep_ratio": transform.keep_ratio}
    if isinstance(transform, A.RandomBrightnessContrast):
        return {"brightness": transform.brightness_limit, "contrast": transform.contrast_limit,
                "by_max": transform.brightness_by_max}
    return {}


def affine_preprocess(preprocess: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The backbone's preprocessing as ``y = x @ matrix + offset`` per pixel (3 x 3 and 3).

    Every preprocessing segmentation_models and kseg's own U-Net use (scaling, mean/std per channel,
    Caffe's RGB→BGR with mean subtraction) is such a map; it is measured from the numpy function on
    probe pixels and checked on random ones, because keras-applications' own tensor path cannot run
    inside a traced tf.data function.
    """
    probes = np.zeros((1, 4, 1, 3), np.uint8)
    for channel in range(3):
        probes[0, channel + 1, 0, channel] = 100
    out = np.asarray(preprocess(probes), np.float64)[0, :, 0, :]
    offset = out[0]
    matrix = (out[1:] - offset) / 100.0
    check = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    expected = np.asarray(preprocess(check), np.float64)
    if not np.allclose(check.astype(np.float64) @ matrix + offset, expected, rtol=1e-4, atol=1e-3):
        raise ConfigError("train.pipeline graph: the backbone's input preprocessing is not a per-pixel affine map, "
                          "so it has no graph version; use train.pipeline host")
    return matrix.astype(np.float32), offset.astype(np.float32)


def _reflect_indices(tf: Any, length: Any, before: Any, total: Any) -> Any:
    """Indices of a reflect-101 padding (OpenCV's BORDER_REFLECT_101, albumentations' crop padding) of
    ``length`` positions to ``total``, ``before`` of them in front; any amount of padding."""
    positions = tf.range(total) - before
    period = tf.maximum(2 * (length - 1), 1)
    folded = tf.math.floormod(positions, period)
    return tf.minimum(tf.where(folded >= length, period - folded, folded), length - 1)


def _random_crop(tf: Any, image: Any, target: Any, size: int, seed: Any) -> tuple[Any, Any]:
    """A ``size`` x ``size`` crop at a uniform position, reflect-padded (centred) when the image is smaller."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    padded_h, padded_w = tf.maximum(height, size), tf.maximum(width, size)
    rows = _reflect_indices(tf, height, (padded_h - height) // 2, padded_h)
    cols = _reflect_indices(tf, width, (padded_w - width) // 2, padded_w)
    top = tf.random.stateless_uniform((), seed, 0, padded_h - size + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform((), seed + [0, 1], 0, padded_w - size + 1, dtype=tf.int32)
    rows, cols = rows[top:top + size], cols[left:left + size]

    def crop(array: Any) -> Any:
        return tf.gather(tf.gather(array, rows, axis=0), cols, axis=1)

    return crop(image), crop(target)


def _uniform(tf: Any, seed: Any, bounds: Sequence[float]) -> Any:
    return tf.random.stateless_uniform((), seed, float(bounds[0]), float(bounds[1]))


def _affine(tf: Any, image: Any, target: Any, params: Mapping[str, Any], seed: Any) -> tuple[Any, Any]:
    """Rotation and scaling about the crop centre, constant 0 outside (albumentations' Affine defaults):
    bilinear for the image, nearest for the target."""
    scale_x = _uniform(tf, seed, params["scale_x"])
    scale_y = scale_x if params["keep_ratio"] else _uniform(tf, seed + [0, 1], params["scale_y"])
    angle = _uniform(tf, seed + [0, 2], params["rotate"]) * (math.pi / 180.0)
    size = tf.cast(tf.shape(image)[0], tf.float32)
    centre = (size - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel -> input pixel: the inverse of albumentations' forward map (scale, then rotate by
    # [[cos, sin], [-sin, cos]], about the centre).
    a0, a1 = cos / scale_x, -sin / scale_x
    b0, b1 = sin / scale_y, cos / scale_y
    transform = tf.stack([a0, a1, centre - a0 * centre - a1 * centre,
                          b0, b1, centre - b0 * centre - b1 * centre, 0.0, 0.0])[None]
    shape = tf.shape(image)[:2]

    def warp(array: Any, interpolation: str) -> Any:
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=array[None], transforms=transform, output_shape=shape, fill_value=0.0,
            interpolation=interpolation, fill_mode="CONSTANT")[0]

    image = tf.clip_by_value(tf.round(warp(image, "BILINEAR")), 0.0, 255.0)
    return image, warp(target, "NEAREST")


def _brightness_contrast(tf: Any, image: Any, params: Mapping[str, Any], seed: Any) -> Any:
    """``clip(image * (1 + contrast) + brightness * (255, or the image's mean))`` truncated to whole grey levels,
    as albumentations does to a uint8 image."""
    alpha = 1.0 + _uniform(tf, seed, params["contrast"])
    beta = _uniform(tf, seed + [0, 1], params["brightness"])
    beta = beta * (255.0 if params["by_max"] else tf.reduce_mean(image))
    return tf.floor(tf.clip_by_value(image * alpha + beta, 0.0, 255.0))


def _apply(tf: Any, transform: GraphAugment, image: Any, target: Any, seed: Any) -> tuple[Any, Any]:
    if transform.name == "HorizontalFlip":
        return tf.reverse(image, [1]), tf.reverse(target, [1])
    if transform.name == "VerticalFlip":
        return tf.reverse(image, [0]), tf.reverse(target, [0])
    if transform.name == "Transpose":
        return tf.transpose(image, [1, 0, 2]), tf.transpose(target, [1, 0, 2])
    if transform.name == "RandomRotate90":
        turns = tf.random.stateless_uniform((), seed, 0, 4, dtype=tf.int32)
        return tf.image.rot90(image, turns), tf.image.rot90(target, turns)
    if transform.name == "Affine":
        return _affine(tf, image, target, transform.params, seed)
    return _brightness_contrast(tf, image, transform.params, seed), target


def graph_train_dataset(images: Sequence[np.ndarray], targets: Sequence[np.ndarray], indices: np.ndarray,
                        seeds: np.ndarray, size: int, transforms: Sequence[GraphAugment],
                        preprocess: tuple[np.ndarray, np.ndarray], batch_size: int) -> Any:
    """Batches of augmented ``size`` crops of ``images[indices[k]]``, the k-th augmented with ``seeds[k]``.

    ``images`` are uint8 (H, W, 3) and ``targets`` uint8 (H, W, C), any sizes; they are held as two flat
    tensors with each image's offset and shape, so no Python runs per sample.
    """
    import tensorflow as tf

    n_channels = targets[0].shape[-1]
    shapes = np.array([image.shape[:2] for image in images], np.int64)
    offsets = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])[:-1]]).astype(np.int64)
    flat_images = tf.constant(np.concatenate([image.reshape(-1, 3) for image in images]))
    flat_targets = tf.constant(np.concatenate([target.reshape(-1, n_channels) for target in targets]))
    shapes_t, offsets_t = tf.constant(shapes), tf.constant(offsets)
    matrix, offset = (tf.constant(value) for value in preprocess)

    def sample(index: Any, sample_seed: Any) -> tuple[Any, Any]:
        height, width = shapes_t[index][0], shapes_t[index][1]
        start, stop = offsets_t[index], offsets_t[index] + height * width
        image = tf.reshape(flat_images[start:stop], tf.stack([height, width, 3]))
        target = tf.reshape(flat_targets[start:stop], tf.stack([height, width, n_channels]))
        base = tf.stack([sample_seed, tf.constant(0, tf.int64)])
        image, target = _random_crop(tf, image, target, size, base)  # uint8: only the crop is converted
        image, target = tf.cast(image, tf.float32), tf.cast(target, tf.float32)
        for number, transform in enumerate(transforms, start=1):
            seed = base + [0, 16 * number]
            fires = tf.random.stateless_uniform((), seed) < transform.p
            # tf.cond traces both branches now, inside this iteration: the closures see its values.
            image, target = tf.cond(fires, lambda: _apply(tf, transform, image, target, seed + [0, 3]),
                                    lambda: (image, target))
        image = tf.tensordot(image, matrix, axes=1) + offset
        return tf.ensure_shape(image, (size, size, 3)), tf.ensure_shape(target, (size, size, n_channels))

    dataset = tf.data.Dataset.from_tensor_slices((indices.astype(np.int64), seeds.astype(np.int64)))
    dataset = dataset.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


# Ops through which a tf.data graph calls back into Python (tf.numpy_function, tf.py_function, from_generator).
_PYTHON_OPS = ("PyFunc", "EagerPyFunc", "PyFuncStateless", "GeneratorDataset")


def python_callbacks(dataset: Any) -> list[str]:
    """The Python-callback ops in ``dataset``'s graph and its functions (none for a TPU-ready pipeline)."""
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    return sorted({node.op for node in nodes if node.op in _PYTHON_OPS})
