"""report.html and ``kseg overlay`` on the shared tiny run: self-contained, loads in a browser, clear errors."""
from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from conftest import tiny_args
from kseg.cli import main

pytestmark = pytest.mark.slow

# Headless browsers tried in turn (Debian: apt-get install chromium-headless-shell, or chromium).
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


class _Page(HTMLParser):
    """Every img src and every attribute that could load something from outside the page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []
        self.sections: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        elif tag in ("script", "link", "iframe", "object", "embed"):
            self.external.append(tag)
        for name in ("href", "srcset", "data"):
            if values.get(name):
                self.external.append(f"{tag} {name}={values[name]}")
        self._in_h2 = tag == "h2"

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.sections.append(data)
            self._in_h2 = False


def test_report_is_one_file_whose_images_all_decode_and_needs_no_tensorflow(finished_run):
    """``kseg report`` in a fresh interpreter (which must not import TensorFlow), then every image decoded."""
    code = ("import sys; import kseg.eda; from kseg.cli import main; "
            f"code = main(['report', *{tiny_args(finished_run)!r}]); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    path = finished_run / "run" / "report.html"
    assert result.stdout.strip().splitlines()[-1] == f"report: {path}"
    page = _Page()
    page.feed(path.read_text())
    assert page.external == []
    assert {"Summary", "OOF score per fold and class", "Score against each post-processing parameter",
            "Ensemble vs single fold", "Where the score is lost", "Class confusion", "Training curves",
            "Stage times"} <= set(page.sections)
    assert any(title.startswith("The 4 worst OOF images") for title in page.sections)
    # One figure in each of 7 sections, one per worst image; all PNG data URIs.
    assert len(page.images) == 7 + 4
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 100


def _browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.mark.skipif(_browser() is None, reason=f"no headless browser ({', '.join(BROWSERS)}) on PATH")
def test_report_images_load_in_a_headless_browser(finished_run, tmp_path):
    """The run's page as a browser shows it: a copy with a script that records, once the page has loaded,
    whether each image decoded (``naturalWidth`` is 0 for a broken one), read back from the DOM Chromium dumps."""
    html = (finished_run / "run" / "report.html").read_text()
    probe = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-images', "
             "JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]))));"
             "</script></body>")
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", probe))
    command = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
               "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    start = dom.index('data-images="') + len('data-images="')
    loaded = json.loads(dom[start:dom.index('"', start)].replace("&quot;", '"'))
    assert len(loaded) == html.count("<img ")
    assert all(complete and width > 100 and height > 100 for complete, width, height in loaded), loaded


def test_overlays_of_every_source_are_pngs(finished_run, capsys):
    run = finished_run / "run"
    train_id = sorted(p.stem for p in (run / "fold0" / "oof").glob("*.npz"))[0]
    test_id = sorted(p.stem for p in (finished_run / "data" / "test").glob("*.png"))[0]
    for source, image_id in (("truth", train_id), ("oof", train_id), ("test", test_id)):
        capsys.readouterr()
        assert main(["overlay", *tiny_args(finished_run), "--ids", image_id, "--source", source]) == 0
        path = run / "overlays" / source / f"{image_id}.png"
        assert capsys.readouterr().out.strip().endswith(f"wrote {path}")
        with Image.open(path) as image:
            assert image.format == "PNG"


@pytest.mark.parametrize(("argv", "message"), [
    (["overlay", "--ids", "nope"], "image id 'nope' is not in"),
    (["overlay", "--ids", "nope", "--source", "test"], "image id 'nope' is not in the test images"),
    (["overlay", "--ids", "x", "--source", "mask"], "--source must be one of truth, oof, test, got 'mask'"),
])
def test_bad_overlay_requests_are_one_line(finished_run, capsys, argv, message):
    capsys.readouterr()
    assert main([*argv[:1], *tiny_args(finished_run), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_report_of_an_unfinished_run_names_what_is_missing(finished_run, tmp_path, capsys):
    shutil.copytree(finished_run / "run", tmp_path / "run", ignore=shutil.ignore_patterns("oof", "*.h5"))
    (tmp_path / "run" / "postprocess.json").unlink()
    args = tiny_args(finished_run, [f"output.dir={tmp_path / 'run'}"])
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'run' / 'postprocess.json'} not found: the run {tmp_path / 'run'} is not finished" in err
    assert main(["report", *tiny_args(finished_run, [f"output.dir={tmp_path / 'none'}"])]) == 2
    assert f"run folder {tmp_path / 'none'} (output.dir) not found" in capsys.readouterr().err
