"""Run-length encoding of masks as Kaggle writes it: 1-indexed ``start length`` pairs.

Sartorius flattens the image row by row (``order="C"``); DSB 2018, TGS, Airbus and Severstal
flatten it column by column (``order="F"``). SIIM-ACR pneumothorax (2019) writes a second variant,
``encode_relative``/``decode_relative``: column-major, each start counted from the end of the previous
run, ``-1`` for an empty mask. Every string is validated strictly, because a
silently wrong mask poisons training and scoring without anyone noticing; a problem raises
one ``RLEError`` naming where the string came from and the offending value.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from kseg.errors import RLEError

__all__ = ["RLEError", "ORDERS", "decode", "encode", "encode_labels", "decode_labels", "decode_relative",
           "encode_relative", "EMPTY_RELATIVE"]

ORDERS = ("C", "F")

# A character that can never be part of a valid token: a cheap first check before parsing.
_FORBIDDEN_CHARACTER = re.compile(r"[^0-9\s-]")
_INTEGER_TOKEN = re.compile(r"-?[0-9]+")
_MAX_TOKEN_DIGITS = 18  # longer tokens may not fit in int64


def _check_order(order: str, where: str = "") -> None:
    if order not in ORDERS:
        raise RLEError(_prefixed(where, f"unknown RLE order {order!r}; expected 'C' (row-major) or 'F' (column-major)"))


def _prefixed(where: str, problem: str) -> str:
    return f"{where}: {problem}" if where else problem


def _check_shape(shape: tuple[int, int], where: str) -> tuple[int, int]:
    if len(shape) != 2 or min(int(shape[0]), int(shape[1])) < 1:
        raise RLEError(_prefixed(where, f"image shape must be (height, width) with both >= 1, got {tuple(shape)}"))
    return int(shape[0]), int(shape[1])


def _token_problem(tokens: list[str]) -> str:
    """Why these tokens are not all integers that fit a pixel position (called only once parsing failed)."""
    for position, token in enumerate(tokens, start=1):
        if not _INTEGER_TOKEN.fullmatch(token):
            return f"token {position} is {token!r}, not an integer"
        if len(token.lstrip("-")) > _MAX_TOKEN_DIGITS:
            return f"token {position} is {token}, too large to be a pixel position"
    raise AssertionError(f"no bad token among {tokens!r}")


def _tokens(rle: str | float | None, where: str) -> list[str]:
    """Tokens of one RLE cell after the per-string checks (type, characters, pairs); [] for a missing mask."""
    if rle is None or (isinstance(rle, (float, np.floating)) and math.isnan(rle)):
        return []
    if not isinstance(rle, str):
        raise RLEError(_prefixed(where, f"expected an RLE string, got {type(rle).__name__} {rle!r}"))
    tokens = rle.split()
    if _FORBIDDEN_CHARACTER.search(rle):
        raise RLEError(_prefixed(where, _token_problem(tokens)))
    if len(tokens) % 2:
        raise RLEError(_prefixed(where, f"odd number of tokens ({len(tokens)}); expected 'start length' pairs"))
    return tokens


def _run_problem(starts: np.ndarray, lengths: np.ndarray, shape: tuple[int, int]) -> str:
    """The first problem among one string's 1-indexed runs, in words (called only once a problem is known)."""
    height, width = shape
    n_pixels = height * width
    starts, lengths = starts.tolist(), lengths.tolist()  # Python ints: no int64 overflow in start + length
    ends = [start + length - 1 for start, length in zip(starts, lengths)]
    for run, (start, length, end) in enumerate(zip(starts, lengths, ends), start=1):
        if start < 1:
            return f"run {run} starts at {start}; starts are 1-indexed and must be >= 1"
        if length < 1:
            return f"run {run} (start {start}) has length {length}; lengths must be >= 1"
        if end > n_pixels:
            return (f"run {run} starts at {start} and has length {length}, past the end of the "
                    f"{height}x{width} image ({n_pixels} pixels)")
        if run > 1 and start <= starts[run - 2]:
            return f"run {run} starts at {start}, not after run {run - 1} (start {starts[run - 2]}); runs must be in increasing order"
        if run > 1 and start <= ends[run - 2]:
            return (f"run {run} starts at {start}, inside run {run - 1} (pixels {starts[run - 2]}-{ends[run - 2]}); "
                    f"runs must not overlap")
    raise AssertionError("no bad run")


def _parse_runs(
    rles: Sequence[str | float | None], shape: tuple[int, int], wheres: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated 0-indexed run starts, run lengths and the number of runs of each string.

    All strings are converted and checked together (a handful of numpy calls instead of a dozen per
    string); only when something is wrong is the offending string examined alone to name the problem.
    """
    token_lists = [_tokens(rle, where) for rle, where in zip(rles, wheres)]
    runs_per_string = np.array([len(tokens) // 2 for tokens in token_lists], dtype=np.int64)
    try:
        values = np.array([token for tokens in token_lists for token in tokens], dtype=np.int64)
    except (ValueError, OverflowError):
        for tokens, where in zip(token_lists, wheres):
            try:
                np.array(tokens, dtype=np.int64)
            except (ValueError, OverflowError):
                raise RLEError(_prefixed(where, _token_problem(tokens))) from None
        raise
    starts, lengths = values[0::2], values[1::2]
    ends = starts + lengths - 1  # 1-indexed, inclusive; may wrap around only for runs flagged below
    n_pixels = shape[0] * shape[1]
    bad = (starts < 1) | (lengths < 1) | (lengths > n_pixels + 1 - starts)
    owner = np.repeat(np.arange(len(token_lists)), runs_per_string)
    bad[1:] |= (owner[1:] == owner[:-1]) & (starts[1:] <= ends[:-1])
    if bad.any():
        culprit = int(owner[np.argmax(bad)])
        own_runs = owner == culprit
        raise RLEError(_prefixed(wheres[culprit], _run_problem(starts[own_runs], lengths[own_runs], shape)))
    return starts - 1, lengths, runs_per_string


def _run_pixels(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat indices of every pixel covered by the runs, without a Python loop over runs."""
    total = int(lengths.sum())
    run_offsets = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(starts - run_offsets, lengths)


def decode(rle: str | float | None, shape: tuple[int, int], order: str = "C", *, where: str = "") -> np.ndarray:
    """Boolean (H, W) mask of one RLE string; ``None``, ``""`` and NaN (pandas' empty cell) give an empty mask."""
    _check_order(order, where)
    shape = _check_shape(shape, where)
    starts, lengths, _ = _parse_runs([rle], shape, [where])
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    flat[_run_pixels(starts, lengths)] = True
    return flat.reshape(shape, order=order)


def encode(mask: np.ndarray, order: str = "C") -> str:
    """RLE string of a 2-D mask (non-zero = foreground); ``''`` for an empty mask."""
    starts, lengths = _mask_runs(mask, order)
    runs = np.empty(2 * starts.size, dtype=np.int64)
    runs[0::2], runs[1::2] = starts + 1, lengths
    return " ".join(map(str, runs.tolist()))


def _mask_runs(mask: np.ndarray, order: str) -> tuple[np.ndarray, np.ndarray]:
    """0-indexed starts and lengths of the foreground runs of a 2-D mask flattened in ``order``."""
    _check_order(order)
    if mask.ndim != 2:
        raise RLEError(f"can only encode a 2-D mask, got shape {mask.shape}")
    flat = mask.ravel(order=order).astype(bool)
    padded = np.concatenate(([False], flat, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # alternate: run start and run end (exclusive)
    return edges[0::2], edges[1::2] - edges[0::2]


def encode_labels(labels: np.ndarray, order: str = "C") -> dict[int, str]:
    """RLE of every non-zero label of a label image, in one pass over the image (not one per instance).

    Runs of constant value are found once on the flattened image; only those runs (far fewer than
    pixels) are then grouped by label, so the cost does not grow with the number of instances.
    """
    _check_order(order)
    if labels.ndim != 2:
        raise RLEError(f"can only encode a 2-D label image, got shape {labels.shape}")
    flat = labels.ravel(order=order)
    if flat.size == 0:
        return {}
    run_starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    run_lengths = np.diff(np.append(run_starts, flat.size))
    run_labels = flat[run_starts]
    foreground = run_labels != 0
    run_starts, run_lengths, run_labels = run_starts[foreground], run_lengths[foreground], run_labels[foreground]
    if run_labels.size == 0:
        return {}
    by_label = np.argsort(run_labels, kind="stable")  # stable: runs of one label stay in pixel order
    run_starts, run_lengths, run_labels = run_starts[by_label], run_lengths[by_label], run_labels[by_label]
    tokens = np.empty(2 * run_starts.size, dtype=np.int64)
    tokens[0::2] = run_starts + 1
    tokens[1::2] = run_lengths
    token_text = list(map(str, tokens.tolist()))
    label_bounds = np.concatenate(([0], np.flatnonzero(run_labels[1:] != run_labels[:-1]) + 1, [run_labels.size]))
    return {
        int(run_labels[first]): " ".join(token_text[2 * first:2 * stop])
        for first, stop in zip(label_bounds[:-1].tolist(), label_bounds[1:].tolist())
    }


def decode_labels(
    rles: Sequence[str | float | None],
    shape: tuple[int, int],
    order: str = "C",
    *,
    wheres: Sequence[str] | None = None,
) -> tuple[np.ndarray, int]:
    """Paint instances 1..n (input order) into one ``int32`` label image; also count overlapping pixels.

    Real annotations overlap (Sartorius has thousands of such pixels), so the rule is explicit and
    deterministic: a pixel keeps the label of the first string that claims it. An empty string still
    consumes its label number so labels stay aligned with rows. Returns ``(labels, overlap_pixels)``
    where ``overlap_pixels`` counts pixels claimed by more than one instance.
    """
    if wheres is None:
        wheres = [f"instance {index}" for index in range(1, len(rles) + 1)]
    elif len(wheres) != len(rles):
        raise ValueError(f"got {len(wheres)} where-strings for {len(rles)} RLE strings")
    _check_order(order, wheres[0] if wheres else "")
    shape = _check_shape(shape, wheres[0] if wheres else "")
    n_pixels = shape[0] * shape[1]
    starts, lengths, runs_per_string = _parse_runs(rles, shape, wheres)
    flat = np.zeros(n_pixels, dtype=np.int32)
    pixels = _run_pixels(starts, lengths)
    run_labels = np.repeat(np.arange(1, len(rles) + 1, dtype=np.int32), runs_per_string)
    pixel_labels = np.repeat(run_labels, lengths)  # non-decreasing: input order
    claims = np.bincount(pixels, minlength=n_pixels)
    overlap_pixels = int(np.count_nonzero(claims > 1))
    contested = claims[pixels] > 1
    flat[pixels[~contested]] = pixel_labels[~contested]
    if overlap_pixels:
        # Only the few contested claims are sorted; a stable sort keeps input order among the claims
        # of one pixel, so the first claim comes first.
        pixels, pixel_labels = pixels[contested], pixel_labels[contested]
        by_pixel = np.argsort(pixels, kind="stable")
        pixels, pixel_labels = pixels[by_pixel], pixel_labels[by_pixel]
        first_claim = np.concatenate(([True], pixels[1:] != pixels[:-1]))
        flat[pixels[first_claim]] = pixel_labels[first_claim]
    return flat.reshape(shape, order=order), overlap_pixels


# SIIM writes this for an image without pneumothorax, where the standard encoding writes nothing.
EMPTY_RELATIVE = "-1"


def encode_relative(mask: np.ndarray, order: str = "F") -> str:
    """SIIM-ACR relative RLE of a 2-D mask: ``offset length`` pairs, ``"-1"`` when the mask is empty.

    The first offset is the 0-based flat index of the first run; every later one is the number of
    background pixels between the end of the previous run and this run's start. SIIM flattens column
    by column (``order="F"``, the default); ``order`` exists so the two encoders stay symmetric.
    """
    starts, lengths = _mask_runs(mask, order)
    if starts.size == 0:
        return EMPTY_RELATIVE
    previous_ends = np.concatenate(([0], starts[:-1] + lengths[:-1]))
    runs = np.empty(2 * starts.size, dtype=np.int64)
    runs[0::2], runs[1::2] = starts - previous_ends, lengths
    return " ".join(map(str, runs.tolist()))


def _relative_problem(offsets: np.ndarray, lengths: np.ndarray, shape: tuple[int, int]) -> str:
    """The first problem among one relative string's runs, in words (called only once a problem is known)."""
    height, width = shape
    n_pixels = height * width
    end = 0  # 0-based, exclusive end of the previous run
    for run, (offset, length) in enumerate(zip(offsets.tolist(), lengths.tolist()), start=1):
        if offset < 0:
            if run == 1:
                return (f"run 1 starts at offset {offset}; the first offset is a 0-based pixel index and must be "
                        f">= 0 ({EMPTY_RELATIVE!r} alone marks an empty mask)")
            return (f"run {run} has offset {offset}; offsets after the first count the background pixels since "
                    f"the end of run {run - 1} and must be >= 0")
        if length < 1:
            return f"run {run} (offset {offset}) has length {length}; lengths must be >= 1"
        start, end = end + offset, end + offset + length
        if end > n_pixels:
            return (f"run {run} covers 0-based pixels {start}-{end - 1}, past the end of the "
                    f"{height}x{width} image ({n_pixels} pixels)")
    raise AssertionError("no bad run")


def decode_relative(
    rle: str | float | None, shape: tuple[int, int], order: str = "F", *, where: str = ""
) -> np.ndarray:
    """Boolean (H, W) mask of one SIIM-ACR relative RLE string (see ``encode_relative``).

    ``"-1"`` is SIIM's empty mask; ``None``, ``""`` and NaN are empty too, as in ``decode``, so a
    missing prediction reads like the standard encoding's. Leading spaces (SIIM writes ``", 175349 7 ..."``)
    are harmless. Any other problem raises one ``RLEError`` naming ``where``, the run and the value.
    """
    _check_order(order, where)
    shape = _check_shape(shape, where)
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    if isinstance(rle, str) and rle.strip() == EMPTY_RELATIVE:
        return flat.reshape(shape, order=order)
    tokens = _tokens(rle, where)
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        raise RLEError(_prefixed(where, _token_problem(tokens))) from None
    offsets, lengths = values[0::2], values[1::2]
    n_pixels = flat.size
    # Each offset and length is checked against the image size before summing, so the sums cannot overflow.
    if (offsets < 0).any() or (lengths < 1).any() or (offsets > n_pixels).any() or (lengths > n_pixels).any() \
            or int(offsets.sum()) + int(lengths.sum()) > n_pixels:
        raise RLEError(_prefixed(where, _relative_problem(offsets, lengths, shape)))
    ends = np.cumsum(offsets + lengths)
    flat[_run_pixels(ends - lengths, lengths)] = True
    return flat.reshape(shape, order=order)
