"""``model.arch: unet_scratch`` — kseg's own U-Net, for training from scratch.

Without pretrained weights an ImageNet encoder is only a large random network: a resnet18 U-Net from
segmentation_models costs about twice the time per step of a plain U-Net of the notebooks and learns no
faster per step, so within a fixed compute budget it trains for half as many steps. This network is the
design the small-dataset medical and microscopy solutions use: (conv3x3-BN-ReLU) x 2 per level, max-pool
down, transposed convolution up, skips concatenated; with optional residual blocks, squeeze-and-excitation
(SE) and attention gates on the skips (Oktay et al. 2018). Its input is the normalised uint8 image scaled
to [-1, 1] (:func:`preprocess`).

Input height and width must be multiples of ``2 ** depth``; kseg pads to multiples of 32, so ``depth`` is
at most 5.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .config import ModelSection
from .errors import ConfigError

__all__ = ["SCRATCH_ARCH", "MAX_DEPTH", "check_scratch_config", "build_scratch_unet", "preprocess"]

SCRATCH_ARCH = "unet_scratch"
MAX_DEPTH = 5  # kseg pads inputs to multiples of 32 = 2 ** 5
SE_RATIO = 8


def check_scratch_config(model_cfg: ModelSection) -> None:
    """Reject the encoder keys that have no meaning without an encoder (``model.scratch.*`` itself is typed
    and checked when the config loads)."""
    if model_cfg.encoder_weights is not None:
        raise ConfigError(f"model.arch={SCRATCH_ARCH} has no pretrained encoder: set model.encoder_weights to null "
                          f"(got {model_cfg.encoder_weights!r}); model.init_from loads a full kseg weights file")
    if model_cfg.encoder_freeze:
        raise ConfigError(f"model.encoder_freeze=true has no meaning for model.arch={SCRATCH_ARCH} (no encoder)")


def build_scratch_unet(model_cfg: ModelSection, n_channels: int) -> Any:
    """The U-Net of ``model.scratch`` with ``n_channels`` linear outputs (kseg adds the sigmoid)."""
    import tf_keras as keras

    check_scratch_config(model_cfg)
    scratch = model_cfg.scratch
    layers = keras.layers
    filters, depth = int(scratch.filters), int(scratch.depth)

    def conv_bn_relu(x: Any, n: int) -> Any:
        x = layers.Conv2D(n, 3, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
        x = layers.BatchNormalization()(x)
        return layers.Activation("relu")(x)

    def block(x: Any, n: int) -> Any:
        y = conv_bn_relu(conv_bn_relu(x, n), n)
        if scratch.se:
            # Squeeze-and-excitation: rescale channels by a gate computed from their global means.
            gate = layers.GlobalAveragePooling2D(keepdims=True)(y)
            gate = layers.Conv2D(max(1, n // SE_RATIO), 1, activation="relu")(gate)
            gate = layers.Conv2D(n, 1, activation="sigmoid")(gate)
            y = layers.Multiply()([y, gate])
        if scratch.residual:
            shortcut = layers.Conv2D(n, 1, use_bias=False)(x) if x.shape[-1] != n else x
            y = layers.Add()([y, shortcut])
        return y

    def attention_gate(skip: Any, gating: Any, n: int) -> Any:
        # Additive attention: the decoder's coarser features decide which skip pixels pass.
        theta = layers.Conv2D(n, 1, use_bias=False)(skip)
        phi = layers.Conv2D(n, 1)(gating)
        psi = layers.Conv2D(1, 1, activation="sigmoid")(layers.Activation("relu")(layers.Add()([theta, phi])))
        return layers.Multiply()([skip, psi])

    inputs = layers.Input((None, None, 3))
    x, skips = inputs, []
    for level in range(depth):
        x = block(x, filters * 2 ** level)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = block(x, filters * 2 ** depth)
    for level in reversed(range(depth)):
        n = filters * 2 ** level
        x = layers.Conv2DTranspose(n, 2, strides=2, padding="same")(x)
        skip = attention_gate(skips[level], x, max(1, n // 2)) if scratch.attention else skips[level]
        x = block(layers.Concatenate()([x, skip]), n)
    outputs = layers.Conv2D(n_channels, 1, name="logits")(x)
    flags = "_".join(f for f in ("residual", "se", "attention") if getattr(scratch, f)) or "plain"
    return keras.Model(inputs, outputs, name=f"{SCRATCH_ARCH}_d{depth}_f{filters}_{flags}")


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (normalised by ``model.input_norm``) → float32 in [-1, 1]; a new array, the input untouched."""
    return np.asarray(images, dtype=np.float32) / 127.5 - 1.0
