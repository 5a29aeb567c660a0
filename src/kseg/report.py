"""``report.html``: one self-contained page per run, written by ``kseg report`` and at the end of ``kseg run``.

The figures are PNGs embedded as base64 and the styles are inline: no server, no files beside it, so the
page can be opened from a Kaggle output, mailed or attached as it is. It shows what
``notebooks/02_oof_analysis.ipynb`` shows, from the same functions (``kseg.analysis``, ``kseg.plots``,
``kseg.overlay``), plus the training curves and the stage times.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from . import __version__, plots
from .analysis import OofAnalysis, analyse_oof
from .config import Config, output_dir
from .files import write_text
from .overlay import error_figure

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["REPORT", "N_WORST", "Section", "report_sections", "render_html", "write_report", "command_report"]

REPORT = "report.html"
# Worst OOF images drawn with their errors: enough to see a pattern, few enough to keep the page light.
N_WORST = 4
_DPI = 72
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
img { max-width: 100%; display: block; margin: 1em 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
p.note { color: #555; }
"""


@dataclass(frozen=True)
class Section:
    """One heading of the report: a note, figures and tables, in that order."""

    title: str
    note: str = ""
    figures: list["Figure"] = field(default_factory=list)
    tables: list[pd.DataFrame] = field(default_factory=list)


def report_sections(analysis: OofAnalysis, n_worst: int = N_WORST) -> list[Section]:
    """The report's content for one analysed run."""
    run, task = analysis.run, analysis.run.scoring.task
    per_class = analysis.per_class()
    profiles = analysis.param_profiles()
    worst = [run.prediction(image_id) for image_id in analysis.worst(n_worst)]
    sections = [
        Section("Summary", f"run {run.run_dir}", tables=[analysis.summary().set_index("what").rename_axis(None)]),
        Section("OOF score per fold and class",
                "Each OOF image post-processed with the parameters of its predicted class, as kseg predict does; "
                "the difference between the bars is the TTA gain.", [plots.oof_scores(analysis)],
                [analysis.per_fold()] + ([per_class] if per_class is not None else [])),
        Section("Score against each post-processing parameter",
                "The other parameters held at their best; per class through that class's own best point."
                if profiles else "The run has no search_table.csv.",
                [plots.param_profiles(analysis)] if profiles else []),
        Section("Ensemble vs single fold",
                "Each fold model and their ensemble (with TTA) on the annotated test images (data.test_truth)."
                if analysis.fold_scores else
                "Needs annotated test images (data.test_truth): each OOF image is predicted by one fold only.",
                [plots.ensemble_vs_folds(analysis)] if analysis.fold_scores else []),
        Section(f"The {len(worst)} worst OOF images",
                "Matched predictions green, false positives red, merges blue, missed objects yellow; true outlines "
                "white.", [error_figure(p.image, p.truth, p.pred, p.title, task) for p in worst]),
        Section("Where the score is lost",
                "True positives, false positives and false negatives at each IoU threshold of the metric; the kinds "
                "of error at IoU 0.5.", [plots.errors_by_threshold(analysis)], [analysis.by_threshold.T]),
    ]
    if analysis.run.scoring.classes:
        sections.append(Section("Class confusion", "The predicted class chooses the post-processing parameters.",
                                [plots.class_confusion(analysis)]))
    sections.append(Section("Training curves", "" if analysis.histories else "No fold*/history.csv in the run.",
                            [plots.training_curves(analysis)] if analysis.histories else []))
    sections.append(Section("Stage times", "" if analysis.stage_seconds else
                            "No finished stages/*.json: the run was not made by kseg run.",
                            [plots.stage_times(analysis)] if analysis.stage_seconds else []))
    return sections


def _png(fig: "Figure") -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_html(title: str, sections: list[Section]) -> str:
    """The page: every figure inlined as a base64 PNG data URI, every text escaped."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class=\"note\">kseg {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f"<p class=\"note\">{html.escape(section.note)}</p>")
        for fig in section.figures:
            parts.append(f"<img alt=\"{html.escape(section.title)}\" src=\"data:image/png;base64,{_png(fig)}\">")
        for table in section.tables:
            parts.append(table.to_html(float_format=lambda value: f"{value:.4f}", border=0))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(cfg: Config, analysis: OofAnalysis | None = None) -> Path:
    """Analyse the finished run of ``cfg`` (unless ``analysis`` is given) and write ``<output.dir>/report.html``."""
    analysis = analyse_oof(cfg, progress=False) if analysis is None else analysis
    path = output_dir(cfg) / REPORT
    write_text(path, render_html(f"kseg run report: {cfg.name}", report_sections(analysis)))
    return path


def command_report(cfg: Config) -> Path:
    """``kseg report``: write the report and print its path."""
    path = write_report(cfg)
    log.info(f"report: {path}")
    return path
