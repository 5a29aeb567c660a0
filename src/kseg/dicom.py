"""DICOM slices as numpy arrays: modality units (HU for CT), an optional window, MONOCHROME1 shown bright-is-high.

Competitions ship DICOM in two flavours that a plain image reader gets wrong: CT slices whose stored
integers mean nothing until RescaleSlope/RescaleIntercept turn them into Hounsfield units, and
radiographs (SIIM-ACR pneumothorax) whose pixel data is JPEG inside the DICOM file. ``read_dicom``
handles both and keeps the full 16-bit range until a window maps it to 0..1 (or 0..255), because
truncating to 8 bits first would throw away the contrast a soft-tissue window needs.

pydicom is imported inside ``read_dicom`` so that ``import kseg.dicom`` stays cheap for the numeric
core and the CLI; nothing here imports TensorFlow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

import numpy as np

from kseg.errors import ConfigError, DataError

__all__ = ["Window", "read_dicom", "dicom_size", "check_window"]

# (center, width) in modality units, as DICOM's WindowCenter/WindowWidth; "file" uses those tags.
Window = Union[tuple[float, float], Literal["file"]]

# Photometric interpretations pydicom hands over as gray or RGB (it converts YBR to RGB itself).
_GRAY = ("MONOCHROME1", "MONOCHROME2")
_COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")


def _one_line(exc: BaseException) -> str:
    """pydicom's messages span several lines (one per decoder plugin); the CLI prints one."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _first(value: Any) -> float:
    """A DICOM numeric value that may be multi-valued (WindowCenter often is): its first entry."""
    try:
        return float(value)
    except TypeError:  # pydicom's MultiValue: float() refuses it
        return float(value[0])


def _stored_range(ds: Any) -> tuple[int, int]:
    """Lowest and highest value the stored bits can hold: the fixed range MONOCHROME1 is inverted within."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def check_window(window: Any, name: str = "DICOM window") -> Window | None:
    """A window as configured (``data.dicom_window``): None (modality units), ``"file"`` (the file's own tags) or
    ``(center, width)`` numbers with a positive width; one ConfigError naming ``name`` otherwise."""
    if window is None or window == "file":
        return window
    if isinstance(window, str) or not isinstance(window, (list, tuple)) or len(window) != 2 or any(
            isinstance(value, bool) or not isinstance(value, (int, float)) for value in window):
        raise ConfigError(f"{name} must be (center, width) or 'file', got {window!r}")
    center, width = (float(value) for value in window)
    if not width > 0:
        raise ConfigError(f"{name} width must be positive, got {window!r}")
    return center, width


def _window_of(ds: Any, window: Window, path: Path) -> tuple[float, float]:
    if isinstance(window, str):
        if window != "file":
            raise ConfigError(f"DICOM window must be (center, width) or 'file', got {window!r}")
        if "WindowCenter" not in ds or "WindowWidth" not in ds:
            raise DataError(f"{path}: window 'file' asked for, but the file has no WindowCenter/WindowWidth tags")
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        if not width > 0:
            raise DataError(f"{path}: WindowWidth is {width}, not positive")
        return center, width
    return check_window(window)  # type: ignore[return-value]


def read_dicom(path: str | Path, window: Window | None = None, *, as_uint8: bool = False) -> np.ndarray:
    """Pixel data of one DICOM file: (H, W) gray, (H, W, 3) RGB, or (frames, H, W) for multi-frame files.

    - ``window=None``: modality units. With RescaleSlope/RescaleIntercept (CT) the result is ``float32``
      HU, exact for 16-bit data; without them the stored dtype is kept (``uint8`` for SIIM, ``uint16`` or
      ``int16`` elsewhere), so nothing is truncated before the pipeline normalises.
    - ``window=(center, width)`` (modality units, e.g. ``(40, 400)`` for soft tissue) or ``"file"`` (the
      file's own WindowCenter/WindowWidth): the linear window ``clip((v - (center - width/2)) / width, 0, 1)``
      as ``float32``, or ``uint8`` 0..255 with ``as_uint8=True``.
    - MONOCHROME1 (0 = white) is inverted so that bright means high everywhere: after windowing (1 - w),
      or without a window within the fixed range of the stored bits (not per image).
    - JPEG transfer syntaxes decode through pydicom's plugins (Pillow covers SIIM's JPEG Baseline).

    Any problem with the file raises one ``DataError`` naming it: not found, not DICOM, no pixel data,
    an unsupported photometric interpretation, or pixel data no installed decoder can read.
    """
    path = Path(path)
    if as_uint8 and window is None:
        raise ValueError("as_uint8 needs a window: without one the values are modality units, not 0..255")
    if not path.is_file():
        raise DataError(f"DICOM file not found: {path}")
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise DataError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise DataError(f"{path}: not a DICOM file ({_one_line(exc)})") from None
    except Exception as exc:  # pydicom raises many kinds on a damaged file; all mean "cannot read it"
        raise DataError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {_one_line(exc)})") from None

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    syntax_name = getattr(syntax, "name", None) or str(syntax or "unknown transfer syntax")
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = getattr(ds.get("SOPClassUID"), "name", None) or "unknown SOP class"
        raise DataError(f"{path}: has no pixel data (Modality {ds.get('Modality', '?')}, {sop})")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in _GRAY + _COLOR:
        raise DataError(f"{path}: photometric interpretation {photometric or 'missing'!r} is not supported; "
                        f"expected one of {', '.join(_GRAY + _COLOR)}")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # a missing plugin (RuntimeError), a truncated stream, a bad header
        hint = ("; JPEG 2000 and JPEG-LS need pylibjpeg with pylibjpeg-openjpeg or pylibjpeg-libjpeg"
                if getattr(syntax, "is_compressed", False) else "")
        raise DataError(f"{path}: cannot decode its pixel data ({syntax_name}): {_one_line(exc)}{hint}") from None

    values = _modality_values(ds, stored)
    inverted = photometric == "MONOCHROME1"
    if window is None:
        if inverted:
            values = _invert_stored(ds, values)
        return np.ascontiguousarray(values)
    center, width = _window_of(ds, window, path)
    low = center - width / 2.0
    scaled = np.clip((values.astype(np.float32) - np.float32(low)) / np.float32(width), 0.0, 1.0)
    if inverted:
        scaled = 1.0 - scaled
    if as_uint8:
        return np.round(scaled * 255.0).astype(np.uint8)
    return np.ascontiguousarray(scaled, dtype=np.float32)


def _rescale(ds: Any) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept), defaulting to the identity when a tag is absent or empty."""
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    return (1.0 if slope in (None, "") else float(slope)), (0.0 if intercept in (None, "") else float(intercept))


def _modality_values(ds: Any, stored: np.ndarray) -> np.ndarray:
    """Stored values in modality units: a Modality LUT, else slope * stored + intercept, else unchanged."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    slope, intercept = _rescale(ds)
    if slope == 1.0 and intercept == 0.0:
        return stored
    # float32 holds every 16-bit integer exactly, at half the memory of float64.
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _invert_stored(ds: Any, values: np.ndarray) -> np.ndarray:
    """MONOCHROME1 turned bright-is-high within the stored bits' range, mapped to modality units like the pixels."""
    low, high = _stored_range(ds)
    if np.issubdtype(values.dtype, np.integer):  # no rescale: stay in the stored dtype
        clipped = np.clip(values.astype(np.int64), low, high)
        return ((low + high) - clipped).astype(values.dtype)
    ends = _modality_values(ds, np.array([low, high], dtype=np.int64))
    return (np.float32(float(ends.min()) + float(ends.max())) - values).astype(np.float32)


def dicom_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` from the DICOM header (Rows, Columns) without decoding the pixel data."""
    path = Path(path)
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    except ImportError:
        raise DataError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from None
    except Exception as exc:  # a damaged or non-DICOM file: one clear line, whatever pydicom raised
        raise DataError(f"{path}: not a readable DICOM file ({_one_line(exc)})") from None

