"""DICOM reader on real files: a SIIM JPEG-in-DICOM radiograph and a CT slice (HU, window), plus every error."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kseg.dicom import read_dicom
from kseg.errors import ConfigError, DataError

pydicom = pytest.importorskip("pydicom")

SIIM_ID = "1.2.276.0.7230010.3.1.4.8323329.12743.1517875241.599591"


@pytest.fixture(scope="module")
def siim_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "dicom" / "siim" / f"{SIIM_ID}.dcm"


@pytest.fixture(scope="module")
def ct_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "dicom" / "ct3slice" / "01.dcm"


def rewritten(source: Path, target: Path, **tags: object) -> Path:
    """A copy of a real file with some tags changed (or removed, for value None)."""
    ds = pydicom.dcmread(source)
    for keyword, value in tags.items():
        if keyword == "TransferSyntaxUID":
            ds.file_meta.TransferSyntaxUID = value
        elif value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(target)
    return target


def test_import_is_cheap_and_tensorflow_free() -> None:
    code = "import sys, kseg.dicom; print('pydicom' in sys.modules, 'tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"


def test_siim_jpeg_radiograph_decodes_to_its_jpeg_frame(siim_path: Path) -> None:
    from PIL import Image

    image = read_dicom(siim_path)
    assert image.shape == (1024, 1024) and image.dtype == np.uint8  # no rescale tags: stored values as is
    ds = pydicom.dcmread(siim_path)
    assert ds.file_meta.TransferSyntaxUID.name == "JPEG Baseline (Process 1)"
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    assert np.array_equal(image, np.asarray(Image.open(io.BytesIO(frame))))  # the JPEG stream, decoded directly
    assert 50 < image.mean() < 200  # a radiograph, not a blank or saturated frame


def test_ct_slice_in_hounsfield_units(ct_path: Path, fixtures_dir: Path) -> None:
    import cv2

    hu = read_dicom(ct_path)
    assert hu.shape == (512, 512) and hu.dtype == np.float32
    stored = pydicom.dcmread(ct_path).pixel_array
    assert stored.dtype == np.int16
    np.testing.assert_array_equal(hu, stored.astype(np.int64) - 1024)  # slope 1, intercept -1024, exact
    assert hu.min() == -3024.0 and 1300 < hu.max() < 1400  # padding outside the scan circle; dense bone
    liver = cv2.imread(str(fixtures_dir / "dicom" / "ct3slice" / "01_liver.png"), cv2.IMREAD_UNCHANGED) > 0
    assert 30 < np.median(hu[liver]) < 60  # soft tissue (the shared SOURCE.md: liver ~45 HU)
    assert np.median(hu[:20, :20]) < -1000  # air / padding in the corner


def test_multi_valued_window_tags_use_the_first_window(ct_path: Path, tmp_path: Path) -> None:
    two_windows = rewritten(ct_path, tmp_path / "two.dcm", WindowCenter=[40, 400], WindowWidth=[400, 1800])
    assert np.array_equal(read_dicom(two_windows, "file"), read_dicom(ct_path, (40, 400)))


def test_ct_window_maps_center_and_width(ct_path: Path) -> None:
    hu = read_dicom(ct_path)
    windowed = read_dicom(ct_path, (40, 400))  # soft tissue: -160 .. 240 HU
    assert windowed.dtype == np.float32 and windowed.min() == 0.0 and windowed.max() == 1.0
    np.testing.assert_allclose(windowed, np.clip((hu + 160) / 400, 0, 1), atol=1e-6)
    assert (windowed[hu <= -160] == 0).all() and (windowed[hu >= 240] == 1).all()
    assert np.array_equal(read_dicom(ct_path, "file"), windowed)  # the file's own WindowCenter/Width are 40/400
    as_bytes = read_dicom(ct_path, (40, 400), as_uint8=True)
    assert as_bytes.dtype == np.uint8 and np.array_equal(as_bytes, np.round(windowed * 255).astype(np.uint8))
    bone = read_dicom(ct_path, (400, 1800))  # a wider window saturates fewer pixels
    assert (bone == 1).sum() < (windowed == 1).sum() and (bone == 0).sum() < (windowed == 0).sum()


def test_monochrome1_is_inverted(siim_path: Path, ct_path: Path, tmp_path: Path) -> None:
    siim = read_dicom(rewritten(siim_path, tmp_path / "siim_m1.dcm", PhotometricInterpretation="MONOCHROME1"))
    assert siim.dtype == np.uint8 and np.array_equal(siim, 255 - read_dicom(siim_path))
    ct_m1 = rewritten(ct_path, tmp_path / "ct_m1.dcm", PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_allclose(read_dicom(ct_m1, (40, 400)), 1 - read_dicom(ct_path, (40, 400)), atol=1e-6)
    # Without a window: inverted within the int16 range in HU (-33792 .. 31743), the same for every image.
    np.testing.assert_array_equal(read_dicom(ct_m1), -2049 - read_dicom(ct_path))


def test_unreadable_and_unsupported_files_name_the_file(siim_path: Path, ct_path: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^DICOM file not found: .*missing\.dcm$"):
        read_dicom(tmp_path / "missing.dcm")
    text = tmp_path / "notes.dcm"
    text.write_text("not a DICOM file")
    with pytest.raises(DataError, match=r"notes\.dcm: not a DICOM file \("):
        read_dicom(text)
    no_pixels = rewritten(ct_path, tmp_path / "no_pixels.dcm", PixelData=None)
    with pytest.raises(DataError, match=r"no_pixels\.dcm: has no pixel data \(Modality CT, CT Image Storage\)"):
        read_dicom(no_pixels)
    jpeg_ls = rewritten(siim_path, tmp_path / "jpeg_ls.dcm", TransferSyntaxUID=pydicom.uid.JPEGLSLossless)
    with pytest.raises(DataError, match=r"jpeg_ls\.dcm: cannot decode its pixel data \(JPEG-LS Lossless"):
        read_dicom(jpeg_ls)
    palette = rewritten(ct_path, tmp_path / "palette.dcm", PhotometricInterpretation="PALETTE COLOR")
    with pytest.raises(DataError, match=r"palette\.dcm: photometric interpretation 'PALETTE COLOR' is not supported"):
        read_dicom(palette)
    with pytest.raises(DataError, match=r"jpeg_ls\.dcm: .*need pylibjpeg"):
        read_dicom(jpeg_ls)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(ct_path.read_bytes()[:200_000])
    with pytest.raises(DataError, match=r"truncated\.dcm: cannot decode its pixel data \(Implicit VR Little Endian\)"):
        read_dicom(truncated)
    with pytest.raises(DataError, match=r"\.dcm: window 'file' asked for, but the file has no WindowCenter"):
        read_dicom(siim_path, "file")
    for message in (str(exc) for exc in _raised(read_dicom, truncated, jpeg_ls)):
        assert "\n" not in message  # one line for the CLI


def _raised(function, *paths: Path) -> list[DataError]:  # type: ignore[no-untyped-def]
    errors = []
    for path in paths:
        with pytest.raises(DataError) as raised:
            function(path)
        errors.append(raised.value)
    return errors


@pytest.mark.parametrize("window", [(40, 0), (40, -5), ("a", 4), (1, 2, 3), "auto"])
def test_bad_window_is_a_config_error(ct_path: Path, window: object) -> None:
    with pytest.raises(ConfigError, match="DICOM window"):
        read_dicom(ct_path, window)  # type: ignore[arg-type]


def test_uint8_needs_a_window(ct_path: Path) -> None:
    with pytest.raises(ValueError, match="as_uint8 needs a window"):
        read_dicom(ct_path, as_uint8=True)


def test_read_image_dispatches_dicom_and_stretches_modality_units_to_rgb(ct_path, siim_path):
    """A competition folder of .dcm images loads like PNGs: uint8 RGB, size from the header."""
    from kseg.data import image_size, read_image

    ct = ct_path
    image = read_image(ct)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    assert image_size(ct) == (512, 512)
    assert image.min() == 0 and image.max() == 255 and len(np.unique(image[..., 0])) > 100
    siim = siim_path
    assert read_image(siim).shape == (1024, 1024, 3) and image_size(siim) == (1024, 1024)


def test_image_size_of_a_broken_dicom_names_the_file(tmp_path):
    from kseg.data import image_size

    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(DataError, match="broken.dcm: not a readable DICOM file"):
        image_size(broken)


def test_data_dicom_window_reads_every_slice_through_one_window(ct_path: Path) -> None:
    """``data.dicom_window``: the run's image reader maps HU through the configured window (the same HU, the same
    grey in every slice) instead of stretching each slice by its own percentiles; null keeps the stretch."""
    from kseg.config import load_config
    from kseg.data import image_reader, read_image

    windowed = image_reader(load_config(None, ["data.dicom_window=[40, 400]"]))(ct_path)
    expected = read_dicom(ct_path, (40, 400), as_uint8=True)
    assert windowed.shape == (512, 512, 3) and all(np.array_equal(windowed[..., c], expected) for c in range(3))
    assert np.array_equal(image_reader(load_config(None, ["data.dicom_window=file"]))(ct_path), windowed)
    assert np.array_equal(image_reader(load_config(None, []))(ct_path), read_image(ct_path))
    assert not np.array_equal(read_image(ct_path), windowed)


@pytest.mark.parametrize(("value", "message"), [
    ("[40]", r"data.dicom_window must be \(center, width\) or 'file', got \[40\]"),
    ("[40, 0]", r"data.dicom_window width must be positive, got \[40, 0\]"),
    ("soft", r"data.dicom_window must be \(center, width\) or 'file', got 'soft'"),
    ("[true, 400]", r"data.dicom_window must be \(center, width\) or 'file', got \[True, 400\]"),
])
def test_bad_dicom_window_fails_at_load(value: str, message: str) -> None:
    from kseg.config import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"data.dicom_window={value}"])
