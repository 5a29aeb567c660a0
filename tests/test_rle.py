"""RLE decode/encode: round trips, real Kaggle strings, COCO cross-check, SIIM's relative RLE, every malformed input."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kseg import rle
from kseg.rle import RLEError, decode, decode_labels, decode_relative, encode, encode_labels, encode_relative

SARTORIUS_SHAPE = (520, 704)
# Every order, relative ones included, so each property below holds for SIIM's format through the public API.
ORDERS = st.sampled_from(rle.ORDERS)
PIXEL_ORDERS = st.sampled_from(["C", "F"])
SHAPES = st.tuples(st.integers(1, 40), st.integers(1, 40))


def masks(dtype: type = bool, max_label: int = 1) -> st.SearchStrategy[np.ndarray]:
    return SHAPES.flatmap(lambda shape: arrays(dtype, shape, elements=st.integers(0, max_label)))


def coco_to_column_major(counts: list[int]) -> str:
    """Uncompressed COCO RLE (alternating background/foreground counts, starting with background) → our F-order text."""
    boundaries = np.cumsum([0, *counts])
    starts, lengths = boundaries[1::2] + 1, np.asarray(counts[1::2])
    return " ".join(f"{start} {length}" for start, length in zip(starts, lengths) if length)


@settings(max_examples=150, deadline=None)
@given(mask=masks(), order=ORDERS)
def test_round_trip(mask: np.ndarray, order: str) -> None:
    text = encode(mask, order)
    assert np.array_equal(decode(text, mask.shape, order), mask)


def test_orders_differ_as_documented() -> None:
    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 1] = mask[1, 1] = True  # a vertical pair: two row-major runs, one column-major run
    assert encode(mask, "C") == "2 1 6 1"
    assert encode(mask, "F") == "4 2"


@settings(max_examples=150, deadline=None)
@given(labels=masks(np.int32, max_label=6), order=ORDERS)
def test_encode_labels_equals_per_instance_encode(labels: np.ndarray, order: str) -> None:
    expected = {int(k): encode(labels == k, order) for k in np.unique(labels) if k != 0}
    assert encode_labels(labels, order) == expected


def test_encode_labels_keeps_label_values_of_any_int_dtype() -> None:
    labels = np.array([[0, 70000, 70000], [3, 0, 3]], dtype=np.int64)
    assert encode_labels(labels) == {3: "4 1 6 1", 70000: "2 2"}
    assert encode_labels(np.zeros((0, 5), dtype=np.uint16)) == {}


@settings(max_examples=100, deadline=None)
@given(stack=SHAPES.flatmap(lambda shape: st.lists(arrays(bool, shape), min_size=0, max_size=5)), order=ORDERS)
def test_decode_labels_matches_painting_loop(stack: list[np.ndarray], order: str) -> None:
    shape = stack[0].shape if stack else (3, 3)
    labels, overlap = decode_labels([encode(mask, order) for mask in stack], shape, order)
    expected = np.zeros(shape, dtype=np.int32)
    claims = np.zeros(shape, dtype=int)
    for label, mask in enumerate(stack, start=1):
        expected[mask & (expected == 0)] = label
        claims += mask
    assert labels.dtype == np.int32
    assert np.array_equal(labels, expected)
    assert overlap == int((claims > 1).sum())


def test_decode_labels_first_row_wins_and_counts_overlap_once() -> None:
    # pixels 1-4, 3-6 and 4-5 of a 1x8 image: pixels 3, 4, 5 are claimed twice or more.
    labels, overlap = decode_labels(["1 4", "", "3 4", "4 2"], (1, 8))
    assert labels.tolist() == [[1, 1, 1, 1, 3, 3, 0, 0]]  # the empty row still consumes label 2
    assert overlap == 3


def test_decode_labels_rejects_mismatched_wheres() -> None:
    with pytest.raises(ValueError, match="2 where-strings for 1"):
        decode_labels(["1 2"], (2, 2), wheres=["a", "b"])


@pytest.fixture(scope="module")
def sartorius_train(fixtures_dir: Path) -> pd.DataFrame:
    return pd.read_csv(fixtures_dir / "sartorius" / "train.csv")


def test_every_real_sartorius_string_round_trips(sartorius_train: pd.DataFrame) -> None:
    assert len(sartorius_train) == 395
    for row, (text, height, width) in enumerate(
        sartorius_train[["annotation", "height", "width"]].itertuples(index=False), start=1
    ):
        mask = decode(text, (height, width), "C", where=f"train.csv row {row}")
        assert mask.shape == SARTORIUS_SHAPE and mask.any()
        assert encode(mask, "C") == text


def test_real_sartorius_overlap_matches_source_notes(sartorius_train: pd.DataFrame) -> None:
    labels, overlap = decode_labels(sartorius_train["annotation"].tolist(), SARTORIUS_SHAPE, "C")
    assert overlap == 3354  # stated in tests/fixtures/SOURCE.md
    assert np.unique(labels[labels > 0]).size == 395


def test_coco_masks_agree_with_derived_row_major_csv(fixtures_dir: Path) -> None:
    coco = json.loads((fixtures_dir / "sartorius" / "0f08d640930b_from_t4e_val_fold0_part2.json").read_text())
    derived = pd.read_csv(fixtures_dir / "sartorius" / "train_0f08d640930b_DERIVED.csv")
    annotations = coco["annotations"]
    assert len(annotations) == len(derived) == 105
    coco_masks = []
    for annotation in annotations:
        segmentation = annotation["segmentation"]
        assert segmentation["size"] == list(SARTORIUS_SHAPE)
        mask = decode(coco_to_column_major(segmentation["counts"]), SARTORIUS_SHAPE, "F")
        assert mask.sum() == annotation["area"]
        coco_masks.append(mask)
    derived_masks = [
        decode(text, (height, width), "C", where=f"train_0f08d640930b_DERIVED.csv row {row}")
        for row, (text, height, width) in enumerate(derived[["annotation", "height", "width"]].itertuples(index=False), 1)
    ]
    assert sorted(mask.tobytes() for mask in coco_masks) == sorted(mask.tobytes() for mask in derived_masks)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("1 2 3", ["odd number of tokens (3)"]),
        ("12 a", ["token 2 is 'a'", "not an integer"]),
        ("12 3.5", ["'3.5'", "not an integer"]),
        ("0 5", ["run 1 starts at 0", ">= 1"]),
        ("-4 5", ["run 1 starts at -4"]),
        ("10 5 20 0", ["run 2 (start 20) has length 0"]),
        ("10 5 20 -3", ["has length -3"]),
        ("1 2 1200 80", ["run 2 starts at 1200 and has length 80", "past the end of the 30x40 image (1200 pixels)"]),
        ("10 5 12 3", ["run 2 starts at 12", "inside run 1 (pixels 10-14)"]),
        ("10 5 3 2", ["run 2 starts at 3", "not after run 1 (start 10)"]),
        ("10 5 10 2", ["run 2 starts at 10"]),
        ("1 12345678901234567890123", ["token 2 is 12345678901234567890123", "too large"]),
        ("1 2 5-3 4", ["token 3 is '5-3'", "not an integer"]),
        ("1 9223372036854775000", ["run 1 starts at 1 and has length 9223372036854775000", "past the end"]),
    ],
)
def test_malformed_strings_name_row_id_and_value(text: str, fragments: list[str]) -> None:
    where = "train.csv row 7 (id 0030fd0e6378)"
    with pytest.raises(RLEError) as raised:
        decode(text, (30, 40), "C", where=where)
    message = str(raised.value)
    assert message.startswith(where + ": ")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("second", "problem"),
    [("x 2", "token 1 is 'x'"), ("5 2 3 1", "run 2 starts at 3, not after run 1"), ("15 3", "run 1 starts at 15")],
)
def test_decode_labels_names_the_offending_row(second: str, problem: str) -> None:
    wheres = ["submission.csv row 1 (id a)", "submission.csv row 2 (id a)", "submission.csv row 3 (id a)"]
    with pytest.raises(RLEError, match=r"^submission\.csv row 2 \(id a\): " + re.escape(problem)):
        decode_labels(["1 2", second, "0 1"], (4, 4), wheres=wheres)


@pytest.mark.parametrize("value", [3.0, 7, b"1 2", ["1", "2"]])
def test_non_string_values_are_rejected(value: object) -> None:
    with pytest.raises(RLEError, match=r"row 3: expected an RLE string, got"):
        decode(value, (4, 4), where="row 3")  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ["c", "row", ""])
def test_unknown_order_is_rejected(order: str) -> None:
    with pytest.raises(RLEError, match="unknown RLE order"):
        decode("1 2", (4, 4), order)
    with pytest.raises(RLEError, match="unknown RLE order"):
        encode(np.ones((2, 2), dtype=bool), order)
    with pytest.raises(RLEError, match="unknown RLE order"):
        encode_labels(np.ones((2, 2), dtype=np.int32), order)
    with pytest.raises(RLEError, match="unknown RLE order"):
        decode_labels(["1 2"], (4, 4), order)


@pytest.mark.parametrize("shape", [(0, 4), (4,), (3, -1)])
def test_bad_shape_is_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(RLEError, match="image shape must be"):
        decode("1 2", shape, where="row 1")  # type: ignore[arg-type]


def test_non_2d_arrays_cannot_be_encoded() -> None:
    with pytest.raises(RLEError, match=r"2-D mask, got shape \(2, 2, 2\)"):
        encode(np.ones((2, 2, 2), dtype=bool))
    with pytest.raises(RLEError, match=r"2-D label image, got shape \(4,\)"):
        encode_labels(np.ones(4, dtype=np.int32))


@pytest.mark.parametrize("missing", [None, float("nan"), np.float32("nan"), "", "   \n"])
def test_missing_values_decode_to_an_empty_mask(missing: object) -> None:
    mask = decode(missing, (5, 6), "F")  # type: ignore[arg-type]
    assert mask.shape == (5, 6) and mask.dtype == bool and not mask.any()


def test_empty_mask_encodes_to_empty_string() -> None:
    assert encode(np.zeros((5, 6), dtype=bool)) == ""
    assert encode(np.zeros((5, 6), dtype=np.uint8), "F") == ""


# ---- SIIM-ACR relative RLE ----

SIIM_SHAPE = (1024, 1024)


@settings(max_examples=150, deadline=None)
@given(mask=masks(), order=PIXEL_ORDERS)
def test_relative_round_trip_agrees_with_the_standard_encoder(mask: np.ndarray, order: str) -> None:
    text = encode_relative(mask, order)
    assert np.array_equal(decode_relative(text, mask.shape, order), mask)
    # Same runs as the standard encoding: absolute 1-indexed start = 1 + offsets so far + lengths before.
    pairs = np.array(text.split(), dtype=np.int64).reshape(-1, 2) if mask.any() else np.zeros((0, 2), np.int64)
    starts = 1 + np.cumsum(pairs[:, 0]) + np.concatenate(([0], np.cumsum(pairs[:-1, 1])))
    standard = " ".join(f"{start} {length}" for start, length in zip(starts.tolist(), pairs[:, 1].tolist()))
    assert standard == encode(mask, order)
    assert text == encode(mask, f"{order}-relative")
    assert np.array_equal(decode(text, mask.shape, f"{order}-relative"), mask)


@settings(max_examples=100, deadline=None)
@given(labels=masks(np.int32, max_label=6), order=st.sampled_from(["C-relative", "F-relative"]))
def test_relative_label_round_trip(labels: np.ndarray, order: str) -> None:
    """Label image → one relative string per instance → the same label image (labels renumbered 1..n)."""
    encoded = encode_labels(labels, order)
    decoded, overlap = decode_labels([encoded[label] for label in sorted(encoded)], labels.shape, order)
    renumbered = np.searchsorted(np.array([0, *sorted(encoded)]), labels)
    assert overlap == 0 and np.array_equal(decoded, renumbered)
    assert all(text.split()[0] != "-1" for text in encoded.values())


def test_empty_mask_text_and_test_per_order() -> None:
    assert [rle.empty_rle(order) for order in rle.ORDERS] == ["", "", "-1", "-1"]
    assert rle.is_empty(" -1 ", "F-relative") and rle.is_empty("", "F-relative") and rle.is_empty(None, "C")
    assert rle.is_empty(float("nan"), "F") and rle.is_empty("  ", "C")
    assert not rle.is_empty("-1", "F")  # a malformed standard string, not an empty mask
    assert not rle.is_empty("0 1", "F-relative")
    with pytest.raises(RLEError, match=r"unknown RLE order 'relative'.*'-relative'"):
        rle.is_empty("", "relative")


def test_relative_rows_of_one_image_name_the_bad_row() -> None:
    wheres = ["train-rle.csv line 1 (id a)", "train-rle.csv line 2 (id a)", "train-rle.csv line 3 (id a)"]
    with pytest.raises(RLEError) as raised:
        decode_labels(["0 2", "-1", "3 1 -2 4"], (3, 4), "F-relative", wheres=wheres)
    assert str(raised.value).startswith("train-rle.csv line 3 (id a): run 2 has offset -2; offsets after the first")
    with pytest.raises(RLEError, match=r"^train-rle.csv line 2 \(id a\): run 1 covers 0-based pixels 10-12, past"):
        decode_labels(["0 12", "10 3"], (3, 4), "F-relative", wheres=wheres[:2])
    with pytest.raises(RLEError, match=r"odd number of tokens \(1\)"):
        decode("-1", (3, 4), "F")  # SIIM's empty marker is only empty in a relative order


def test_relative_encoding_by_hand() -> None:
    mask = np.zeros((4, 3), dtype=bool)  # column-major flat index = x * 4 + y
    mask[1:3, 0] = True  # pixels 1-2
    mask[0, 1] = True  # pixel 4: one background pixel (3) after the first run
    mask[:, 2] = True  # pixels 8-11: three background pixels (5-7)
    assert encode_relative(mask) == "1 2 1 1 3 4"
    assert encode(mask, "F") == "2 2 5 1 9 4"
    assert encode_relative(np.zeros((4, 3), dtype=bool)) == "-1"
    assert decode_relative("0 2 0 3", (1, 5)).all()  # offset 0: a run may start right where the last ended


@pytest.mark.parametrize("empty", ["-1", " -1", "-1\n", None, float("nan"), ""])
def test_relative_empty_markers(empty: object) -> None:
    mask = decode_relative(empty, (3, 4))  # type: ignore[arg-type]
    assert mask.shape == (3, 4) and mask.dtype == bool and not mask.any()


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("-1 5", ["run 1 starts at offset -1", "'-1' alone marks an empty mask"]),
        ("3 2 -4 1", ["run 2 has offset -4", "since the end of run 1"]),
        ("3 0", ["run 1 (offset 3) has length 0"]),
        ("3 2 1 -2", ["run 2 (offset 1) has length -2"]),
        ("1190 5 3 4", ["run 2 covers 0-based pixels 1198-1201", "past the end of the 30x40 image (1200 pixels)"]),
        ("0 1 99999999999999999 1", ["run 2 covers 0-based pixels 100000000000000000-100000000000000000", "past"]),
        ("1 2 3", ["odd number of tokens (3)"]),
        ("1 x", ["token 2 is 'x'"]),
        ("1 12345678901234567890123", ["token 2 is 12345678901234567890123", "too large"]),
    ],
)
def test_malformed_relative_strings_name_where_and_value(text: str, fragments: list[str]) -> None:
    where = "train-rle.csv row 4 (id 1.2.276)"
    with pytest.raises(RLEError) as raised:
        decode_relative(text, (30, 40), where=where)
    message = str(raised.value)
    assert message.startswith(where + ": ")
    for fragment in fragments:
        assert fragment in message
    with pytest.raises(RLEError, match="unknown RLE order"):
        decode_relative("0 1", (3, 3), "row")
    with pytest.raises(RLEError, match="expected an RLE string"):
        decode_relative(-1, (3, 3))  # type: ignore[arg-type]


def read_siim_rows(path: Path) -> pd.DataFrame:
    """SIIM's sample CSV as shipped: UTF-8 BOM, no header, a space after the comma on positive rows."""
    return pd.read_csv(path, header=None, names=["ImageId", "EncodedPixels"], encoding="utf-8-sig", dtype=str,
                       keep_default_na=False)


def test_real_siim_rows_decode_like_the_standard_csv_and_re_encode_verbatim(fixtures_dir: Path) -> None:
    siim = fixtures_dir / "dicom" / "siim"
    assert (siim / "train-rle-sample.csv").read_bytes().startswith(b"\xef\xbb\xbf1.2.276")  # BOM, no header
    relative = read_siim_rows(siim / "train-rle-sample.csv")
    standard = pd.read_csv(siim / "siim_rle_standard.csv", dtype=str, keep_default_na=False)
    assert len(relative) == 10 and relative["ImageId"].str.startswith("1.2.276.").all()
    assert (relative["EncodedPixels"] == "-1").sum() == 5
    expected = dict(zip(standard["ImageId"], standard["EncodedPixels"]))
    areas = []
    for row, (image_id, text) in enumerate(relative.itertuples(index=False), start=1):
        mask = decode_relative(text, SIIM_SHAPE, where=f"train-rle-sample.csv row {row}")
        assert np.array_equal(mask, decode(expected[image_id], SIIM_SHAPE, "F"))
        assert encode_relative(mask) == text.strip()
        areas.append(int(mask.sum()))
    assert sorted(area for area in areas if area) == [2071, 2486, 5232, 9418, 29079]  # as SOURCE.md counts


def test_real_siim_row_matches_its_mask_png(fixtures_dir: Path) -> None:
    import cv2

    image_id = "1.2.276.0.7230010.3.1.4.8323329.12743.1517875241.599591"
    siim = fixtures_dir / "dicom" / "siim"
    text = read_siim_rows(siim / "train-rle-sample.csv").set_index("ImageId").loc[image_id, "EncodedPixels"]
    png = cv2.imread(str(siim / f"{image_id}_mask.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == SIIM_SHAPE and set(np.unique(png).tolist()) == {0, 255}
    assert np.array_equal(decode_relative(text, SIIM_SHAPE), png > 0)
