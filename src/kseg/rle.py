"""Run-length encoding of masks as Kaggle writes it: 1-indexed ``start length`` pairs.

Sartorius flattens the image row by row (``order="C"``); DSB 2018, TGS, Airbus and Severstal
flatten it column by column (``order="F"``). SIIM-ACR pneumothorax (2019) writes a second variant,
``order="F-relative"``: column-major, each start counted from the end of the previous run, ``-1`` for
an empty mask (``encode_relative``/``decode_relative`` are the same with the order as an argument).

The variant is a value of ``order``, not a separate argument, because ``order`` already travels from
``data.schema.rle_order`` to every decode and encode call (train.csv, submission writing and validation,
scoring, OOF search, kernels): a new order value reaches all of them with no call site changed, and a
config says what the CSV holds in one key. What differs beyond the runs, the text of an empty mask,
comes from :func:`empty_rle` and :func:`is_empty`, so no caller tests for ``""`` itself.

Every string is validated strictly, because a silently wrong mask poisons training and scoring without
anyone noticing; a problem raises one ``RLEError`` naming where the string came from and the offending value.
"""
from __future__ import annotations

import math
import re
from typing import Literal, Sequence

import numpy as np

from kseg.errors import RLEError

__all__ = ["RLEError", "ORDERS", "RELATIVE", "decode", "encode", "encode_labels", "decode_labels", "decode_relative",
           "encode_relative", "EMPTY_RELATIVE", "empty_rle", "is_empty", "decode_classes", "first_overlapping_row"]

# Suffix of an order whose starts count from the end of the previous run (SIIM-ACR), e.g. "F-relative".
RELATIVE = "-relative"
_PIXEL_ORDERS = ("C", "F")
ORDERS = (*_PIXEL_ORDERS, *(order + RELATIVE for order in _PIXEL_ORDERS))
# SIIM writes this for an image without pneumothorax, where the standard encoding writes nothing.
EMPTY_RELATIVE = "-1"

# A character that can never be part of a valid token: a cheap first check before parsing.
_FORBIDDEN_CHARACTER = re.compile(r"[^0-9\s-]")
_INTEGER_TOKEN = re.compile(r"-?[0-9]+")
_MAX_TOKEN_DIGITS = 18  # longer tokens may not fit in int64


def _check_order(order: str, where: str = "") -> tuple[Literal["C", "F"], bool]:
    """The numpy pixel order (``"C"``/``"F"``) of an RLE order, and whether its starts are relative."""
    if order not in ORDERS:
        raise RLEError(_prefixed(where, f"unknown RLE order {order!r}; expected 'C' (row-major), 'F' (column-major), "
                                        f"or either with {RELATIVE!r} (SIIM-ACR: starts counted from the previous "
                                        f"run)"))
    return ("F" if order.startswith("F") else "C"), order.endswith(RELATIVE)


def empty_rle(order: str) -> str:
    """What an empty mask is written as in ``order``: ``""``, or ``"-1"`` for a relative order (SIIM)."""
    return EMPTY_RELATIVE if _check_order(order)[1] else ""


def is_empty(rle: str | float | None, order: str) -> bool:
    """Whether an RLE cell is an empty mask: ``None``, NaN, blank, and for a relative order also ``"-1"``.

    A blank cell is empty in every order (a missing prediction); ``"-1"`` only where SIIM's format
    defines it, since in the standard encoding it is a malformed string Kaggle would reject.
    """
    relative = _check_order(order)[1]
    if rle is None or (isinstance(rle, (float, np.floating)) and math.isnan(rle)):
        return True
    return isinstance(rle, str) and (rle.strip() == "" or (relative and rle.strip() == EMPTY_RELATIVE))


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


def _tokens(rle: str | float | None, where: str, relative: bool) -> list[str]:
    """Tokens of one RLE cell after the per-string checks (type, characters, pairs); [] for an empty mask."""
    if rle is None or (isinstance(rle, (float, np.floating)) and math.isnan(rle)):
        return []
    if not isinstance(rle, str):
        raise RLEError(_prefixed(where, f"expected an RLE string, got {type(rle).__name__} {rle!r}"))
    tokens = rle.split()
    if relative and tokens == [EMPTY_RELATIVE]:
        return []
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
    rles: Sequence[str | float | None], shape: tuple[int, int], wheres: Sequence[str], relative: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated 0-indexed run starts, run lengths and the number of runs of each string.

    All strings are converted and checked together (a handful of numpy calls instead of a dozen per
    string); only when something is wrong is the offending string examined alone to name the problem.
    Relative strings are checked in their own terms, then turned into absolute starts for the same path.
    """
    token_lists = [_tokens(rle, where, relative) for rle, where in zip(rles, wheres)]
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
    n_pixels = shape[0] * shape[1]
    owner = np.repeat(np.arange(len(token_lists)), runs_per_string)
    if relative:
        starts = _absolute_starts(starts, lengths, runs_per_string, owner, shape, wheres)
    ends = starts + lengths - 1  # 1-indexed, inclusive; may wrap around only for runs flagged below
    bad = (starts < 1) | (lengths < 1) | (lengths > n_pixels + 1 - starts)
    bad[1:] |= (owner[1:] == owner[:-1]) & (starts[1:] <= ends[:-1])
    if bad.any():
        culprit = int(owner[np.argmax(bad)])
        own_runs = owner == culprit
        raise RLEError(_prefixed(wheres[culprit], _run_problem(starts[own_runs], lengths[own_runs], shape)))
    return starts - 1, lengths, runs_per_string


def _absolute_starts(offsets: np.ndarray, lengths: np.ndarray, runs_per_string: np.ndarray, owner: np.ndarray,
                     shape: tuple[int, int], wheres: Sequence[str]) -> np.ndarray:
    """1-indexed absolute starts of relative runs (``owner``: the string of each run), validated in relative
    terms so that an error speaks of the offset the file holds, not of a start computed from it."""
    n_pixels = shape[0] * shape[1]
    # Each offset and length is bounded by the image size before summing, so the sums cannot overflow.
    bad = (offsets < 0) | (lengths < 1) | (offsets > n_pixels) | (lengths > n_pixels)
    if not bad.any():
        ends = np.cumsum(offsets + lengths)  # 0-based exclusive ends, as if all strings were one
        string_base = np.concatenate(([0], ends))[np.cumsum(runs_per_string) - runs_per_string]
        ends -= np.repeat(string_base, runs_per_string)
        bad = ends > n_pixels
    if bad.any():
        culprit = int(owner[np.argmax(bad)])
        own_runs = owner == culprit
        raise RLEError(_prefixed(wheres[culprit], _relative_problem(offsets[own_runs], lengths[own_runs], shape)))
    return ends - lengths + 1


def _run_pixels(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat indices of every pixel covered by the runs, without a Python loop over runs."""
    total = int(lengths.sum())
    run_offsets = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(starts - run_offsets, lengths)


def decode(rle: str | float | None, shape: tuple[int, int], order: str = "C", *, where: str = "") -> np.ndarray:
    """Boolean (H, W) mask of one RLE string; ``None``, ``""`` and NaN (pandas' empty cell) give an empty mask,
    as does ``"-1"`` in a relative order."""
    pixel_order, relative = _check_order(order, where)
    shape = _check_shape(shape, where)
    starts, lengths, _ = _parse_runs([rle], shape, [where], relative)
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    flat[_run_pixels(starts, lengths)] = True
    return flat.reshape(shape, order=pixel_order)


def encode(mask: np.ndarray, order: str = "C") -> str:
    """RLE string of a 2-D mask (non-zero = foreground); :func:`empty_rle` for an empty mask."""
    pixel_order, relative = _check_order(order)
    starts, lengths = _mask_runs(mask, pixel_order)
    if starts.size == 0:
        return empty_rle(order)
    runs = np.empty(2 * starts.size, dtype=np.int64)
    runs[0::2] = _first_tokens(starts, lengths, np.array([0]), relative)
    runs[1::2] = lengths
    return " ".join(map(str, runs.tolist()))


def _first_tokens(starts: np.ndarray, lengths: np.ndarray, string_firsts: np.ndarray, relative: bool) -> np.ndarray:
    """First token of each run from its 0-indexed start: the 1-indexed start, or in a relative order the
    background pixels since the previous run of the same string ended (``string_firsts``: the index of
    each string's first run, whose offset is its 0-based start)."""
    if not relative:
        return starts + 1
    previous_ends = np.concatenate(([0], starts[:-1] + lengths[:-1]))
    previous_ends[string_firsts] = 0
    return starts - previous_ends


def _mask_runs(mask: np.ndarray, order: Literal["C", "F"]) -> tuple[np.ndarray, np.ndarray]:
    """0-indexed starts and lengths of the foreground runs of a 2-D mask flattened in pixel ``order``."""
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
    pixel_order, relative = _check_order(order)
    if labels.ndim != 2:
        raise RLEError(f"can only encode a 2-D label image, got shape {labels.shape}")
    flat = labels.ravel(order=pixel_order)
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
    label_bounds = np.concatenate(([0], np.flatnonzero(run_labels[1:] != run_labels[:-1]) + 1, [run_labels.size]))
    tokens = np.empty(2 * run_starts.size, dtype=np.int64)
    tokens[0::2] = _first_tokens(run_starts, run_lengths, label_bounds[:-1], relative)
    tokens[1::2] = run_lengths
    token_text = list(map(str, tokens.tolist()))
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
    pixel_order, relative = _check_order(order, wheres[0] if wheres else "")
    shape = _check_shape(shape, wheres[0] if wheres else "")
    n_pixels = shape[0] * shape[1]
    starts, lengths, runs_per_string = _parse_runs(rles, shape, wheres, relative)
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
    return flat.reshape(shape, order=pixel_order), overlap_pixels


def decode_classes(
    rles: Sequence[str | float | None],
    class_ids: Sequence[int],
    shape: tuple[int, int],
    order: str = "C",
    *,
    fill: int = 0,
    wheres: Sequence[str] | None = None,
) -> tuple[np.ndarray, int]:
    """A class map (``uint16``) from one row per class: the pixels of row ``i`` get ``class_ids[i]``, pixels in
    no row get ``fill`` (0 = background, or a void value). Returns ``(class_map, overlap_pixels)``; rows of an
    exclusive task must not overlap, which the caller decides (first row wins, as :func:`decode_labels`)."""
    if len(class_ids) != len(rles):
        raise ValueError(f"got {len(class_ids)} class ids for {len(rles)} RLE strings")
    labels, overlap = decode_labels(rles, shape, order, wheres=wheres)
    lookup = np.array([fill, *class_ids], dtype=np.uint16)
    return lookup[labels], overlap


def first_overlapping_row(rles: Sequence[str | float | None], shape: tuple[int, int], order: str) -> int:
    """0-based position of the first row whose mask shares a pixel with an earlier row (the error path of an
    overlap: one decode per row); 0 when none does."""
    claimed = np.zeros(shape, dtype=bool)
    for position, value in enumerate(rles):
        mask = decode(value, shape, order)
        if np.any(mask & claimed):
            return position
        claimed |= mask
    return 0


def _relative_order(order: str, where: str = "") -> str:
    """The relative variant of a pixel order (``"F"`` → ``"F-relative"``)."""
    if order not in _PIXEL_ORDERS:
        raise RLEError(_prefixed(where, f"unknown RLE order {order!r}; expected 'C' (row-major) or 'F' (column-major)"))
    return order + RELATIVE


def encode_relative(mask: np.ndarray, order: str = "F") -> str:
    """SIIM-ACR relative RLE of a 2-D mask: ``offset length`` pairs, ``"-1"`` when the mask is empty.

    The first offset is the 0-based flat index of the first run; every later one is the number of
    background pixels between the end of the previous run and this run's start. SIIM flattens column
    by column (``order="F"``, the default); ``order`` exists so the two encoders stay symmetric.
    Same as ``encode(mask, order + "-relative")``.
    """
    return encode(mask, _relative_order(order))


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
    Same as ``decode(rle, shape, order + "-relative", where=where)``.
    """
    return decode(rle, shape, _relative_order(order, where), where=where)
