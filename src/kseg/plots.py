"""Pictures people would rather see than read: instance overlays, the dataset (``kseg.eda``) and a run's OOF
analysis (``kseg.analysis``).

Every figure function returns a ``matplotlib.figure.Figure`` built without pyplot: no global figure state, no
backend switch (a notebook keeps its inline backend, the report and the CLI save PNGs with Agg), nothing to
close. The notebooks and ``report.html`` call the same functions, so they show the same figures.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .files import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .analysis import OofAnalysis
    from .data import ImageRecord
    from .eda import DatasetStats

__all__ = [
    "ERROR_COLOURS", "overlay", "image_panels", "overlays_figure", "save_figure", "save_overlays", "class_colours",
    "class_balance", "instances_per_image", "instance_shapes", "image_sizes", "intensity_histograms",
    "annotation_overlaps", "fold_balance", "class_overlay_grid",
    "oof_scores", "param_profiles", "ensemble_vs_folds", "class_confusion", "errors_by_threshold",
    "training_curves", "stage_times",
]


# The colour of each kind of object of ``analysis.classify_objects`` (RGB 0..255), in overlays and bar charts.
ERROR_COLOURS: dict[str, tuple[int, int, int]] = {
    "missed": (255, 200, 0),
    "matched": (40, 200, 40),
    "false positive": (235, 30, 30),
    "merged": (40, 110, 255),
}


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """RGB uint8 image with each instance tinted in its own colour and its contour drawn in white."""
    from skimage.segmentation import find_boundaries

    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    rgb = rgb[..., :3].astype(np.float32)
    rng = np.random.default_rng(0)
    palette = rng.integers(40, 256, size=(int(labels.max()) + 1, 3)).astype(np.float32)
    inside = labels > 0
    rgb[inside] = (1 - alpha) * rgb[inside] + alpha * palette[labels[inside]]
    rgb[find_boundaries(labels, mode="inner")] = 255.0
    return rgb.clip(0, 255).astype(np.uint8)


def _figure(n_panels: int, width: float = 5.0, height: float = 3.8) -> tuple["Figure", list["Axes"]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    return fig, list(np.atleast_1d(fig.subplots(1, n_panels)))


def image_panels(panels: Mapping[str, np.ndarray]) -> "Figure":
    """RGB images side by side, each under its title."""
    fig, axes = _figure(len(panels), 6, 5)
    for ax, (title, rgb) in zip(axes, panels.items()):
        ax.imshow(rgb)
        ax.set_title(title)
        ax.axis("off")
    return fig


def overlays_figure(image: np.ndarray, panels: Mapping[str, np.ndarray]) -> "Figure":
    """The image overlaid by each named label image side by side (e.g. truth | prediction)."""
    return image_panels({f"{title}: {len(np.unique(labels[labels > 0]))} instances": overlay(image, labels)
                         for title, labels in panels.items()})


def save_figure(fig: "Figure", path: str | Path, dpi: int = 80) -> Path:
    """Write a figure as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def save_overlays(path: str | Path, image: np.ndarray, panels: dict[str, np.ndarray]) -> Path:
    """One PNG of :func:`overlays_figure`."""
    return save_figure(overlays_figure(image, panels), path)


def class_colours(classes: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """One tab10 colour per class, in the given order, so a class looks the same in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {cls: cmap(i % 10) for i, cls in enumerate(classes)}


def _classes(stats: "DatasetStats") -> list[str]:
    return sorted(stats.images["cls"].unique())


# -------------------------------------------------------------------------------------------------- dataset

def class_balance(stats: "DatasetStats") -> "Figure":
    """Images and instances per class."""
    table = stats.per_class()
    colours = [class_colours(_classes(stats))[cls] for cls in table.index]
    fig, (images, instances) = _figure(2)
    images.bar(table.index, table["images"], color=colours)
    images.set(title="images per class", ylabel="images")
    instances.bar(table.index, table["instances"], color=colours)
    instances.set(title="instances per class", ylabel="instances")
    return fig


def _class_histograms(ax: "Axes", frame, column: str, classes: Sequence[str], bins, log: bool = False) -> None:
    colours = class_colours(classes)
    for cls in classes:
        values = frame.loc[frame["cls"] == cls, column].dropna()
        if len(values):
            ax.hist(values, bins=bins, histtype="step", linewidth=1.5, color=colours[cls],
                    label=f"{cls} ({len(values)})")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(column)
    ax.legend(fontsize="small")


def instances_per_image(stats: "DatasetStats") -> "Figure":
    """Distribution of the number of instances per image, per class."""
    fig, (ax,) = _figure(1, 7)
    top = int(stats.images["n_instances"].max())
    _class_histograms(ax, stats.images, "n_instances", _classes(stats), bins=np.linspace(0, max(top, 1), 30))
    ax.set(title="instances per image", ylabel="images")
    return fig


def instance_shapes(stats: "DatasetStats") -> "Figure":
    """Instance area (log scale), eccentricity and aspect ratio, per class."""
    fig, axes = _figure(3)
    classes, instances = _classes(stats), stats.instances
    areas = instances["area"][instances["area"] > 0]
    area_bins = np.geomspace(max(1, areas.min()), max(2, areas.max()), 30) if len(areas) else 10
    _class_histograms(axes[0], instances, "area", classes, area_bins, log=True)
    _class_histograms(axes[1], instances, "eccentricity", classes, np.linspace(0, 1, 26))
    _class_histograms(axes[2], instances, "aspect_ratio", classes, 30)
    for ax, title in zip(axes, ("instance area (px)", "eccentricity (0 = round)", "major / minor axis")):
        ax.set(title=title, ylabel="instances")
    return fig


def image_sizes(stats: "DatasetStats") -> "Figure":
    """Image sizes (height x width, marker area = number of images) and the files' channel layouts."""
    fig, (sizes, layouts) = _figure(2)
    counts = stats.images.groupby(["width", "height"]).size()
    widths, heights = zip(*counts.index)
    sizes.scatter(widths, heights, s=30 + 200 * counts.to_numpy() / counts.max())
    for (width, height), n in counts.items():
        sizes.annotate(str(n), (width, height), ha="center", va="center", fontsize="small")
    sizes.set(title="image sizes (n images)", xlabel="width", ylabel="height")
    layout = stats.images.groupby(["file_channels", "file_mode"]).size()
    layouts.bar([f"{channels} ch, {mode}" for channels, mode in layout.index], layout.to_numpy())
    layouts.set(title="channels and mode of the files", ylabel="images")
    return fig


def intensity_histograms(stats: "DatasetStats") -> "Figure":
    """Grey levels inside the objects (solid) and in the background (dashed), per class, as read for training."""
    fig, (ax,) = _figure(1, 8)
    colours = class_colours(_classes(stats))
    for (cls, part), share in stats.intensity.items():
        ax.plot(stats.intensity.index, share, color=colours[cls], linestyle="-" if part == "objects" else "--",
                label=f"{cls} {part}")
    ax.set(title="intensity (mean of RGB) per class", xlabel="grey level", ylabel="share of pixels")
    ax.legend(fontsize="small", ncol=2)
    return fig


def annotation_overlaps(stats: "DatasetStats") -> "Figure":
    """Share of each image's foreground claimed by more than one annotation (first row wins in kseg)."""
    fig, (ax,) = _figure(1, 7)
    _class_histograms(ax, stats.images, "overlap_share", _classes(stats), bins=30)
    ax.set(title="overlapping annotations", xlabel="overlap pixels / foreground pixels", ylabel="images")
    return fig


def fold_balance(stats: "DatasetStats") -> "Figure":
    """Images per class in each fold (stacked) and groups per fold."""
    table = stats.folds.drop(index="total")
    class_columns = [c for c in table.columns if c.startswith("images:")]
    fig, (images, groups) = _figure(2)
    colours = class_colours([c[len("images:"):] for c in class_columns])
    bottom = np.zeros(len(table))
    for column in class_columns or ["images"]:
        cls = column[len("images:"):]
        images.bar(table.index, table[column], bottom=bottom, color=colours.get(cls), label=cls or "images")
        bottom += table[column].to_numpy()
    images.set(title="images per fold and class", xlabel="fold", ylabel="images")
    images.legend(fontsize="small")
    if "groups" in table.columns:
        groups.bar(table.index, table["groups"])
        groups.set(title="groups per fold", xlabel="fold", ylabel="groups")
    else:
        groups.bar(table.index, table["instances"])
        groups.set(title="instances per fold (no group column)", xlabel="fold", ylabel="instances")
    return fig


def class_overlay_grid(records: Sequence["ImageRecord"], per_class: int = 3) -> "Figure":
    """The first ``per_class`` images of each class (by id) with their annotated instances."""
    from matplotlib.figure import Figure

    from .data import read_image
    from .folds import MISSING_CLASS

    by_class: dict[str, list] = {}
    for record in sorted(records, key=lambda r: r.id):
        members = by_class.setdefault(record.cls if record.cls is not None else MISSING_CLASS, [])
        if len(members) < per_class:
            members.append(record)
    fig = Figure(figsize=(4 * per_class, 3.4 * len(by_class)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(by_class), per_class, squeeze=False))
    for row, (cls, members) in zip(axes, sorted(by_class.items())):
        for ax in row:
            ax.axis("off")
        for ax, record in zip(row, members):
            ax.imshow(overlay(read_image(record.image_path), record.labels))
            ax.set_title(f"{cls}: {record.id} ({record.n_instances})", fontsize="small")
    return fig


# ------------------------------------------------------------------------------------------------ OOF runs

def _bars(ax: "Axes", table, title: str, key: str) -> None:
    """Searched and plain OOF score side by side for each row of a per-fold or per-class table."""
    positions = np.arange(len(table))
    ax.bar(positions - 0.2, table["score"], 0.4, label="with TTA" if key == "tta" else "searched (no TTA)")
    ax.bar(positions + 0.2, table["score_plain"], 0.4, label="without TTA")
    ax.set_xticks(positions, [str(i) for i in table.index])
    ax.set(title=title, ylabel="mean OOF score")
    ax.legend(fontsize="small")


def oof_scores(analysis: "OofAnalysis") -> "Figure":
    """OOF score per fold and per class, with and without TTA (the bars' difference is the TTA gain)."""
    per_class = analysis.per_class()
    fig, axes = _figure(1 if per_class is None else 2)
    key = analysis.run.scoring.key
    _bars(axes[0], analysis.per_fold(), "per fold", key)
    if per_class is not None:
        _bars(axes[1], per_class, "per true class", key)
    return fig


def param_profiles(analysis: "OofAnalysis") -> "Figure":
    """Mean OOF score against each post-processing parameter, the others at their best, for all images and
    per class (each through its own best point, as the search chooses)."""
    profiles = analysis.param_profiles()
    fig, axes = _figure(max(1, len(profiles)))
    colours = class_colours(list(analysis.run.scoring.classes))
    for ax, (param, table) in zip(axes, profiles.items()):
        for column in table.columns:
            ax.plot(table.index, table[column], marker="o", label=column, color=colours.get(column, "black"),
                    linewidth=2.5 if column == "all" else 1.2)
        ax.set(title=f"score vs {param}", xlabel=param, ylabel="mean OOF score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def ensemble_vs_folds(analysis: "OofAnalysis") -> "Figure":
    """Each fold model and the ensemble on the annotated test images (``<submission>.fold_scores.json``, written
    by kseg predict)."""
    scores = analysis.fold_scores
    if scores is None:
        raise ValueError("the run has no fold scores (kseg predict writes them when data.test_truth annotates "
                         "test images): nothing to compare")
    fig, (ax,) = _figure(1, 7)
    names = [*scores["per_fold"], "ensemble"]
    values = [*scores["per_fold"].values(), scores["ensemble"]]
    ax.bar(names, values, color=["tab:gray"] * len(scores["per_fold"]) + ["tab:green"])
    for x, value in enumerate(values):
        ax.annotate(f"{value:.3f}", (x, value), ha="center", va="bottom", fontsize="small")
    ax.set(title=f"single folds vs ensemble ({scores['n_images']} annotated test images)", ylabel="mean score")
    return fig


def class_confusion(analysis: "OofAnalysis") -> "Figure":
    """Images of each true class predicted as each class (the class decides the post-processing parameters)."""
    table = analysis.confusion()
    if table is None:
        raise ValueError("the run has no classes: there is no class confusion")
    fig, (ax,) = _figure(1, 5.5, 4.5)
    counts = table.to_numpy()
    ax.imshow(counts, cmap="Blues")
    for (row, column), value in np.ndenumerate(counts):
        ax.annotate(str(value), (column, row), ha="center", va="center",
                    color="white" if value > counts.max() / 2 else "black")
    ax.set_xticks(range(len(table.columns)), table.columns)
    ax.set_yticks(range(len(table.index)), table.index)
    ax.set(title="class: true (rows) vs predicted", xlabel="predicted", ylabel="true")
    return fig


def errors_by_threshold(analysis: "OofAnalysis") -> "Figure":
    """Where the score is lost: the share of TP, FP and FN at each IoU threshold, and the kinds of error
    (at IoU 0.5) per true class."""
    from .analysis import ERROR_KINDS

    fig, (shares, kinds) = _figure(2, 6)
    counts = analysis.by_threshold
    total = counts.sum(axis=1).replace(0, 1)
    bottom = np.zeros(len(counts))
    labels = [f"{t:.2f}" for t in counts.index]
    for column, colour in (("tp", "tab:green"), ("fp", "tab:red"), ("fn", "tab:orange")):
        share = (counts[column] / total).to_numpy()
        shares.bar(labels, share, bottom=bottom, color=colour, label=column.upper())
        bottom += share
    shares.set(title="TP / FP / FN share by IoU threshold", xlabel="IoU threshold", ylabel="share of objects")
    shares.tick_params(axis="x", labelrotation=45)
    shares.legend(fontsize="small")
    by_class = analysis.images.groupby(analysis.images["cls"].fillna("all"))[list(ERROR_KINDS)].sum()
    positions = np.arange(len(by_class))
    width = 0.8 / len(ERROR_KINDS)
    for i, kind in enumerate(ERROR_KINDS):
        colour = np.array(ERROR_COLOURS[kind]) / 255
        kinds.bar(positions + (i - (len(ERROR_KINDS) - 1) / 2) * width, by_class[kind], width, color=colour, label=kind)
    kinds.set_xticks(positions, by_class.index)
    kinds.set(title="objects by kind at IoU 0.5, per true class", ylabel="objects")
    kinds.legend(fontsize="small")
    return fig


def training_curves(analysis: "OofAnalysis") -> "Figure":
    """Loss (training solid, validation dashed), validation score and learning rate of every fold."""
    fig, (loss, score, lr) = _figure(3)
    for (name, history), colour in zip(analysis.histories.items(), class_colours(list(analysis.histories)).values()):
        epochs = history["epoch"] + 1
        for column, style in (("loss", "-"), ("val_loss", "--")):
            if column in history:
                loss.plot(epochs, history[column], style, color=colour, label=f"{name} {column}")
        if "val_score" in history:
            score.plot(epochs, history["val_score"], marker="o", color=colour, label=name)
        if "lr" in history:
            lr.plot(epochs, history["lr"], color=colour, label=name)
    loss.set(title="loss", xlabel="epoch", yscale="log")
    score.set(title="validation score (whole images)", xlabel="epoch")
    lr.set(title="learning rate (end of epoch)", xlabel="epoch", yscale="log")
    for ax in (loss, score, lr):
        ax.legend(fontsize="small")
    return fig


def stage_times(analysis: "OofAnalysis") -> "Figure":
    """Seconds each stage of ``kseg run`` took when it last ran."""
    fig, (ax,) = _figure(1, 7, 2.6)
    names = list(analysis.stage_seconds)
    ax.barh(names, list(analysis.stage_seconds.values()))
    for y, seconds in enumerate(analysis.stage_seconds.values()):
        ax.annotate(f"{seconds:.0f} s", (seconds, y), va="center", fontsize="small")
    ax.invert_yaxis()
    ax.set(title="stage times", xlabel="seconds")
    return fig
