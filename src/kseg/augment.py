"""Augmentation pipelines built from the config's ``train.augment`` list of ``{"Name": {kwargs}}`` items.

albumentations 2.x only *warns* about unknown keyword arguments and raises long pydantic errors for bad
values, so every item is checked here and turned into one :class:`~kseg.errors.ConfigError` that names
the item, the transform and the problem. The image and its multi-channel target go through the same
call (target as ``mask``), so every geometric transform moves them together.
"""
from __future__ import annotations

import copy
import difflib
import inspect
from typing import Any, Iterator, Mapping

import albumentations as A
import cv2
import numpy as np
from albumentations.core.composition import BaseCompose
from albumentations.core.transforms_interface import BasicTransform
from pydantic import ValidationError

from .errors import ConfigError

__all__ = ["build_augment", "augment_for_orientation", "seed_pipeline", "transform_names"]

Transform = BasicTransform | BaseCompose


def transform_names() -> list[str]:
    """Every transform and composition class albumentations exports by name."""
    return sorted(
        name for name in dir(A)
        if inspect.isclass(getattr(A, name)) and issubclass(getattr(A, name), (BasicTransform, BaseCompose))
    )


def _transform_class(name: str, where: str) -> type:
    candidate = getattr(A, name, None)
    if inspect.isclass(candidate) and issubclass(candidate, (BasicTransform, BaseCompose)):
        return candidate
    close = difflib.get_close_matches(name, transform_names(), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else " (see the albumentations 2.x transform list)"
    raise ConfigError(f"{where}: unknown albumentations transform {name!r}{hint}")


def _error_text(exc: Exception) -> str:
    """A one-line reason: pydantic errors become ``field: message`` pairs instead of a multi-line dump.

    albumentations re-raises its pydantic ``ValidationError`` as a ``ValueError``; the original is the cause.
    """
    validation = exc if isinstance(exc, ValidationError) else exc.__cause__
    if isinstance(validation, ValidationError):
        return "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in validation.errors())
    return " ".join(str(exc).split())


def _check_arguments(cls: type, kwargs: Mapping[str, Any], where: str) -> None:
    parameters = inspect.signature(cls.__init__).parameters
    accepted = [p for p in parameters if p != "self" and parameters[p].kind not in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        raise ConfigError(f"{where}: {cls.__name__} has no argument(s) {', '.join(map(repr, unknown))}; "
                          f"valid arguments: {', '.join(accepted)}")


def _build_item(item: Any, where: str) -> Transform:
    if not isinstance(item, Mapping) or len(item) != 1:
        raise ConfigError(f"{where}: each augmentation must be a single-key mapping like "
                          f"{{HorizontalFlip: {{p: 0.5}}}}, got {item!r}")
    (name, kwargs), = item.items()
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}: the arguments of {name} must be a mapping, got {kwargs!r}")
    cls = _transform_class(str(name), where)
    _check_arguments(cls, kwargs, where)
    kwargs = dict(kwargs)
    if issubclass(cls, BaseCompose):
        kwargs["transforms"] = _build_list(kwargs.get("transforms"), f"{where} {name}.transforms")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: bad arguments for {name}: {_error_text(exc)}") from None


def _build_list(spec: Any, where: str) -> list[Transform]:
    if spec is None:
        return []
    if not isinstance(spec, list):
        raise ConfigError(f"{where} must be a list of {{TransformName: {{kwargs}}}} items, got {spec!r}")
    return [_build_item(item, f"{where} item {index}") for index, item in enumerate(spec, start=1)]


def _leaves(transform: Transform) -> Iterator[BasicTransform]:
    if isinstance(transform, BaseCompose):
        for child in transform.transforms:
            yield from _leaves(child)
    else:
        yield transform


def _check_keeps_size(transforms: list[Transform], size: int) -> None:
    """Fail at build time, not deep inside tf.data, when a transform would change the crop size.

    Each transform runs once on a blank crop with ``p`` forced to 1, so even rarely applied ones are tested.
    """
    image = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size, 2), np.uint8)
    for index, transform in enumerate(transforms, start=1):
        for leaf in _leaves(transform):
            probe = copy.deepcopy(leaf)
            probe.p = 1.0
            output = probe(image=image, mask=mask)
            shapes = {output["image"].shape[:2], output["mask"].shape[:2]}
            if shapes != {(size, size)}:
                raise ConfigError(f"train.augment item {index}: {type(leaf).__name__} changes the {size}x{size} "
                                  f"training crop to {sorted(shapes)}; augmentations must keep train.size")


# Transforms that turn an image upside down or sideways, and the one that mirrors it: dropped from
# train.augment for an upright (or fixed) orientation (plan.orientation_plan).
_TURNS = {"VerticalFlip", "RandomRotate90", "Transpose", "D4", "SquareSymmetry"}
_MIRRORS = {"HorizontalFlip"}


def augment_for_orientation(spec: list, orientation: str) -> list:
    """``train.augment`` without the top-level transforms a planned orientation forbids (``free``: all kept)."""
    dropped = {"upright": _TURNS, "fixed": _TURNS | _MIRRORS}.get(orientation, set())

    def name(item: Any) -> str | None:
        return next(iter(item)) if isinstance(item, dict) and len(item) == 1 else None

    return [item for item in spec if name(item) not in dropped]


def build_augment(spec: list, size: int, train: bool, *, seed: int | None = None) -> A.Compose:
    """Training: reflect-pad to at least ``size``, random ``size``x``size`` crop, then the ``spec`` items.

    Validation (``train=False``) is the identity: validation sees whole images, padded to a multiple of
    32 by the prediction code. ``seed`` makes the pipeline reproducible (see :func:`seed_pipeline`).
    """
    if not train:
        return A.Compose([])
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"train.size must be a positive integer, got {size!r}")
    user_transforms = _build_list(spec, "train.augment")
    _check_keeps_size(user_transforms, size)
    # RandomCrop pads (reflecting) only images smaller than the crop; a separate PadIfNeeded would copy
    # every full-size image and target even when nothing needs padding (most of the per-sample cost).
    pipeline = A.Compose([
        A.RandomCrop(height=size, width=size, pad_if_needed=True, border_mode=cv2.BORDER_REFLECT_101),
        *user_transforms,
    ])
    if seed is not None:
        seed_pipeline(pipeline, seed)
    return pipeline


def _nodes(transform: Transform) -> Iterator[Transform]:
    yield transform
    if isinstance(transform, BaseCompose):
        for child in transform.transforms:
            yield from _nodes(child)


def seed_pipeline(pipeline: A.Compose, seed: int) -> None:
    """Give every transform of the pipeline its own random stream derived from ``seed``.

    albumentations 2.0.8 ``Compose(seed=...)``/``set_random_seed`` hands the *same* seed to every
    transform, so e.g. HorizontalFlip(p=0.5) and VerticalFlip(p=0.5) would always fire together.
    """
    nodes = list(_nodes(pipeline))
    for node, child_seed in zip(nodes, np.random.SeedSequence(seed).generate_state(len(nodes))):
        node.set_random_seed(int(child_seed))
