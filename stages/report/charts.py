"""The report page's charts, drawn by matplotlib as PNG data URIs: accuracy against speed, the PR
curves, the training logs and the stages' times, each method in its colour (``COLOURS``)."""

from __future__ import annotations

import base64
import io
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.core.plotting import pyplot
from stages.methods import METHODS

if TYPE_CHECKING:
    from stages.report.collect import CollectedRun


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
SHARED_COLOUR = "#7f7f7f"
"""The colour of what no one method owns: proposals, pre-training."""


_LINE_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D")
_HATCHES = ("", "//", "..", "xx")
_DPI = 100


_GRID_WIDTH = 900
"""Detection grids wider than this (pixels) are scaled down to it."""


def _method_colours() -> dict[tuple[str, str], str]:
    """A colour for each method and each variant of its network, in the lineage's order:
    (name, variant key) -> hex."""
    keys = [(name, variant.key) for name, method in METHODS.items() for variant in method.variants]
    return {key: _PALETTE[i % len(_PALETTE)] for i, key in enumerate(keys)}


COLOURS = _method_colours()


def _png_uri(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(fig: Any) -> str:
    """A matplotlib figure as a PNG data URI; the figure is closed (pyplot keeps open ones alive)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    pyplot().close(fig)
    return _png_uri(buffer.getvalue())


def picture_uri(path: Path) -> str:
    """A picture file as a PNG data URI, scaled down to ``_GRID_WIDTH`` when wider and in 256 colours:
    photographs compress poorly as PNG, and a palette keeps the boxes and labels sharp at a third of the
    bytes."""
    from PIL import Image

    with Image.open(path) as image:
        picture = image.convert("RGB")
    if picture.width > _GRID_WIDTH:
        height = round(picture.height * _GRID_WIDTH / picture.width)
        picture = picture.resize((_GRID_WIDTH, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.quantize(256).save(buffer, format="PNG", optimize=True)
    return _png_uri(buffer.getvalue())


def _series_label(run: CollectedRun, label: str, several: bool) -> str:
    """A legend entry: the label, and the run's name when several runs share a chart."""
    return f"{label} ({run.name})" if several else label


def accuracy_speed_chart(runs: Sequence[CollectedRun]) -> str | None:
    """mAP against test seconds an image (log scale): a filled point an evaluation, a hollow one for the
    paper's figures, each labelled; a marker shape a run. None without a timed evaluation."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    labels, hollow = [], False
    for index, run in enumerate(runs):
        marker = _MARKERS[index % len(_MARKERS)]
        for item in run.evaluations:
            r, paper = item.result, item.paper
            if r.map is not None and r.test_seconds_per_image:
                ax.scatter(r.test_seconds_per_image, r.map, s=60, marker=marker, color=item.colour, zorder=3)
                labels.append((r.test_seconds_per_image, r.map, r.label))
            if paper is not None and paper.map is not None and paper.test_seconds_per_image:
                ax.scatter(
                    paper.test_seconds_per_image,
                    paper.map,
                    s=60,
                    marker=marker,
                    facecolors="none",
                    edgecolors=item.colour,
                    linewidths=1.6,
                    zorder=3,
                )
                labels.append((paper.test_seconds_per_image, paper.map, f"{r.label}, paper"))
                hollow = True
    if not labels:
        plt.close(fig)
        return None
    _plain_log_scale(ax, "x")
    ax.yaxis.set_major_locator(MaxNLocator(steps=[1, 2, 5, 10]))  # round ticks: 0.830, 0.835, 0.840
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.margins(x=0.3, y=0.12)
    ax.set(xlabel="test seconds per image (log scale; proposals excluded)", ylabel="mAP")
    ax.grid(alpha=0.3)
    ax.grid(alpha=0.1, which="minor")
    ax.set_title("accuracy against test time" + (" (hollow: the paper)" if hollow else ""), fontsize=10)
    if len(runs) > 1:
        ax.legend(handles=_run_markers(runs), fontsize=8, loc="best")
    fig.tight_layout()
    _label_points(ax, labels)
    return figure_uri(fig)


def seeds_chart(runs: Sequence[CollectedRun]) -> str | None:
    """Each evaluation's mAP with every seed less their mean (dots) and ± one standard deviation (a bar),
    a row an evaluation in its method's colour, labelled with its mean and std: methods whose mAPs lie
    far apart keep their spreads on one scale. A marker shape a run. None without replicas."""
    rows = [(run, index, spread) for index, run in enumerate(runs) for spread in run.report.seeds]
    if not rows:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.2, 0.9 + 0.42 * len(rows)))
    labels = []
    for y, (run, index, spread) in enumerate(reversed(rows)):
        colour = COLOURS.get((spread.method, spread.variant), SHARED_COLOUR)
        deviations = [value - spread.mean for _, value in spread.maps]
        if len(deviations) > 1:
            ax.errorbar(0.0, y, xerr=spread.std, color=colour, capsize=4, lw=1.6, zorder=2)
        marker = _MARKERS[index % len(_MARKERS)]
        ax.scatter(deviations, [y] * len(deviations), s=36, marker=marker, color=colour, zorder=3)
        std = "" if len(deviations) < 2 else f" ± {spread.std:.3f}"
        labels.append(_series_label(run, f"{spread.label}: {spread.mean:.3f}{std}", len(runs) > 1))
    ax.set_yticks(range(len(rows)), labels)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.axvline(0.0, color="#999999", lw=0.8, zorder=1)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # labels apart
    ax.margins(x=0.15)
    ax.set(xlabel="mAP less the mean of its seeds")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("each seed's mAP; bars: ± one standard deviation", fontsize=10)
    fig.tight_layout()
    return figure_uri(fig)


def _run_markers(runs: Sequence[CollectedRun]) -> list[Any]:
    """Legend entries for the marker shape of each run."""
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], marker=_MARKERS[i % len(_MARKERS)], color="#333", linestyle="", label=run.name)
        for i, run in enumerate(runs)
    ]


def _label_points(ax: Any, labels: Sequence[tuple[float, float, str]]) -> None:
    """Each point's label beside it where it covers no other point and no label placed before
    (``_free_place``), with a thin leader when moved up or down, so that close points stay readable.
    The same label at the same point (equal runs) is written once."""
    renderer = ax.figure.canvas.get_renderer()
    points = {(x, y): _box_around(ax.transData.transform((x, y)), 5) for x, y, _ in labels}
    placed: list[Any] = []
    for x, y, text in sorted(dict.fromkeys(labels), key=lambda item: (item[1], item[0])):
        obstacles = placed + [box for xy, box in points.items() if xy != (x, y)]
        side, shift, box = _free_place(ax, renderer, text, (x, y), obstacles)
        _note(ax, text, (x, y), side, shift, leader=shift != 0)
        placed.append(box)


def _free_place(
    ax: Any, renderer: Any, text: str, xy: tuple[float, float], obstacles: Sequence[Any]
) -> tuple[int, int, Any]:
    """(side, shift, box) of the first place for ``text`` beside ``xy`` that stays inside the axes and
    covers none of ``obstacles`` (pixel boxes): right, left, then a line higher or lower at a time; the
    plain right-hand place when none is free."""
    frame = ax.get_window_extent(renderer)
    places = [(side, shift) for shift in (0, 10, -10, 20, -20, 30, -30) for side in (1, -1)]
    for side, shift in [*places, (1, 0)]:
        note = _note(ax, text, xy, side, shift, leader=False)
        box = note.get_window_extent(renderer)
        note.remove()
        inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
        if inside and not any(box.overlaps(other) for other in obstacles):
            return side, shift, box
    return 1, 0, box


def _note(ax: Any, text: str, xy: tuple[float, float], side: int, shift: int, leader: bool) -> Any:
    """``text`` beside the point ``xy``: right of it (``side`` 1) or left (-1), ``shift`` points higher,
    with a thin line to the point when ``leader``."""
    return ax.annotate(
        text,
        xy,
        xytext=(8 * side, shift),
        textcoords="offset points",
        ha="left" if side > 0 else "right",
        va="center",
        fontsize=8,
        arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.6} if leader else None,
    )


def _box_around(centre: Sequence[float], radius: float) -> Any:
    """The square of ``radius`` pixels around the point ``centre`` (x, y in display coordinates)."""
    from matplotlib.transforms import Bbox

    x, y = centre
    return Bbox.from_extents(x - radius, y - radius, x + radius, y + radius)


def _plain_log_scale(ax: Any, which: str) -> None:
    """A log scale on ``ax``'s ``which`` axis ("x" or "y"), ticks at 1, 2 and 5 of each decade written as
    plain numbers (0.05, 0.1, 0.2) rather than powers of ten."""
    from matplotlib.ticker import LogLocator, NullFormatter

    ax.set(**{f"{which}scale": "log"})
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter("{x:g}")
    axis.set_minor_formatter(NullFormatter())


def _legend_above(fig: Any, entries: dict[str, Any]) -> None:
    """A legend across the top of ``fig``, the figure grown to hold it, so that it covers no curve."""
    columns = min(4, len(entries))
    height = 0.15 + 0.2 * math.ceil(len(entries) / columns)
    fig.set_figheight(fig.get_figheight() + height)
    fig.legend(entries.values(), entries.keys(), loc="upper center", ncol=columns, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - height / fig.get_figheight()))


def pr_chart(runs: Sequence[CollectedRun]) -> str | None:
    """Small multiples: a class a panel, every evaluation's PR curve in it; None without curves."""
    series = [
        (index, run, item, {found.name: found for found in item.curves.classes})
        for index, run in enumerate(runs)
        for item in run.evaluations
        if item.curves is not None
    ]
    classes = list(dict.fromkeys(name for *_, by_name in series for name in by_name))
    if not classes:
        return None
    plt = pyplot()
    columns = min(5, len(classes))
    rows = math.ceil(len(classes) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.3 * columns, 2.2 * rows), sharex=True, sharey=True, squeeze=False
    )
    legend: dict[str, Any] = {}
    for ax, name in zip(axes.flat, classes, strict=False):
        for index, run, item, by_name in series:
            found = by_name.get(name)
            if found is not None and found.positives and len(found.recall):
                (line,) = ax.plot(
                    found.recall,
                    found.precision,
                    color=item.colour,
                    linestyle=_LINE_STYLES[index % len(_LINE_STYLES)],
                    linewidth=1.2,
                    marker="o" if len(found.recall) == 1 else None,  # a one-point curve draws no line
                    markersize=4,
                )
                legend.setdefault(_series_label(run, item.result.label, len(runs) > 1), line)
        ax.set_title(name, fontsize=9)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(classes) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("recall", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("precision", fontsize=8)
    _legend_above(fig, legend)
    return figure_uri(fig)


def recall_chart(runs: Sequence[CollectedRun]) -> str | None:
    """Faster R-CNN's figure 2: recall against IoU with each proposer's 300, 1,000 and 2,000 best
    proposals an image, a panel each, on the splits that were tested (all splits before any test); a
    colour a proposer (a method's own: the method's; proposals files: grey, then the palette), a line
    style a run. None without curves."""
    from stages.proposals.recall import PROPOSAL_COUNTS

    tested = {item.result.split for run in runs for item in run.evaluations}
    series = [
        (index, run, proposer)
        for index, run in enumerate(runs)
        for proposer in run.report.recall
        if not tested or proposer.split in tested
    ]
    if not series:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(PROPOSAL_COUNTS), figsize=(3.0 * len(PROPOSAL_COUNTS), 2.9), sharey=True)
    files = itertools.cycle((SHARED_COLOUR, *_PALETTE[::-1]))  # the first proposals file: the shared grey
    colours: dict[str, str] = {}
    for _, _, proposer in series:
        if proposer.label not in colours:
            made_by = proposer.method
            colours[proposer.label] = COLOURS.get((made_by, ""), SHARED_COLOUR) if made_by else next(files)
    splits = len({proposer.split for _, _, proposer in series}) > 1
    legend: dict[str, Any] = {}
    for ax, count in zip(axes, PROPOSAL_COUNTS, strict=True):
        for index, run, proposer in series:
            curves = proposer.curves
            (line,) = ax.plot(
                curves.ious,
                curves.recall[str(count)],
                color=colours[proposer.label],
                linestyle=_LINE_STYLES[index % len(_LINE_STYLES)],
                linewidth=1.4,
            )
            label = f"{proposer.label}" + (f", {proposer.split}" if splits else "")
            label += f" ({curves.boxes_per_image:.0f} an image)"
            legend.setdefault(_series_label(run, label, len(runs) > 1), line)
        ax.set_title(f"{count:,} proposals an image", fontsize=9)
        ax.set(xlim=(0.5, 0.95), ylim=(0, 1.02))
        ax.set_xlabel("IoU", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("recall", fontsize=8)
    _legend_above(fig, legend)
    return figure_uri(fig)


def training_chart(runs: Sequence[CollectedRun]) -> str | None:
    """Loss (log scale) and, where logged, accuracy against iteration, a line a training log; None
    without logs."""
    logs = [(index, run, entry) for index, run in enumerate(runs) for entry in run.logs]
    if not logs:
        return None
    metrics = [m for m in ("loss", "accuracy") if any(m in entry.columns for *_, entry in logs)]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.6 * len(metrics), 3.4), squeeze=False)
    legend: dict[str, Any] = {}
    for ax, metric in zip(axes[0], metrics, strict=True):
        for index, run, entry in logs:
            if metric in entry.columns:
                (line,) = ax.plot(
                    entry.columns["iteration"],
                    entry.columns[metric],
                    color=entry.colour,
                    linestyle=_LINE_STYLES[index % len(_LINE_STYLES)],
                    linewidth=1.4,
                )
                legend.setdefault(_series_label(run, entry.label, len(runs) > 1), line)
        ax.set(xlabel="iteration", ylabel=metric, title=metric)
        if metric == "loss":
            _plain_log_scale(ax, "y")
        ax.grid(alpha=0.3, which="both")
    _legend_above(fig, legend)
    return figure_uri(fig)


def stage_rows(runs: Sequence[CollectedRun]) -> list[tuple[str, str, list[float | None]]]:
    """(stage, artifact, seconds in each run) for every artifact of any run, in the first run's order."""
    keys = list(dict.fromkeys((s.stage, s.artifact) for run in runs for s in run.report.stages))
    seconds = [{(s.stage, s.artifact): s.seconds for s in run.report.stages} for run in runs]
    return [
        (stage, artifact, [found.get((stage, artifact)) for found in seconds]) for stage, artifact in keys
    ]


def stage_colour(artifact: str) -> str:
    """The colour of the method whose folder holds ``artifact``; grey for the shared stages."""
    return COLOURS.get((Path(artifact).parts[0], ""), SHARED_COLOUR)


def _seconds(value: float) -> str:
    """A bar's label: whole seconds, a decimal under ten."""
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def stage_chart(runs: Sequence[CollectedRun]) -> str | None:
    """Horizontal bars of each stage's seconds (a bar a run, hatched by run), longest work visible at a
    glance; None without stages."""
    rows = stage_rows(runs)
    if not rows:
        return None
    plt = pyplot()
    height = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(6.2, 0.9 + 0.26 * len(rows) * len(runs)))
    for index, run in enumerate(runs):
        ys = [row + index * height for row in range(len(rows))]
        values = [seconds[index] or 0.0 for *_, seconds in rows]
        bars = ax.barh(
            ys,
            values,
            height=height,
            color=[stage_colour(artifact) for _, artifact, _ in rows],
            hatch=_HATCHES[index % len(_HATCHES)],
            edgecolor="white",
            label=run.name,
        )
        ax.bar_label(bars, labels=[_seconds(v) if v else "" for v in values], padding=3, fontsize=7)
    ax.set_yticks([row + (len(runs) - 1) * height / 2 for row in range(len(rows))])
    ax.set_yticklabels([artifact for _, artifact, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.12)
    ax.set_xlabel("seconds")
    ax.grid(alpha=0.3, axis="x")
    if len(runs) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_uri(fig)
