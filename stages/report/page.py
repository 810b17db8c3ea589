"""The report as one self-contained HTML page: ``rcnn report``'s tables, and what a terminal cannot show.

For one run folder or several side by side: the results table (beside each figure the paper's, when the
run's ``config.toml`` records them in ``[<method>.paper]``), each class's AP, the PR curves, the training
curves, accuracy against test time, the detection grid and where the time went. Each method keeps one
colour in every table and chart; in charts each run keeps one line style or marker.

Self-contained: pictures are base64 PNGs in ``data:`` URIs and the style sheet is inline, so the file
opens offline and can be sent on its own. Like ``stages.report.summary`` it runs no stage: every figure comes
from the artifacts. The results JSON keeps only each class's AP, so the PR curves are scored again from
the detections file by ``stages.evaluation.metrics``, on the split named by ``config.toml`` or by the
proposals file; without the dataset the page says so and leaves them out.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.config.run_config import PaperFigures, RunConfig, load_config
from stages.core.atomic import atomic_path
from stages.core.errors import UserError
from stages.core.plotting import drawing, pyplot
from stages.datasets.formats import load_dataset
from stages.datasets.records import Dataset
from stages.detections.files import read_detections
from stages.evaluation.metrics import Evaluation, evaluate
from stages.methods import METHODS
from stages.proposals.propose import LOW_RECALL, LOW_RECALL_DOCS, proposals_dataset
from stages.report.summary import MethodResult, RunReport, report
from stages.runs.layout import RunLayout

log = logging.getLogger("rcnn")

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_SHARED = "#7f7f7f"
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


_COLOURS = _method_colours()


@dataclass(frozen=True)
class _Evaluated:
    """One evaluation as the page shows it: the report's figures, the paper's (or None), and the PR curves
    scored again from the detections (None when they could not be)."""

    result: MethodResult
    paper: PaperFigures | None
    curves: Evaluation | None

    @property
    def colour(self) -> str:
        """The colour of its method (and compressed model) in every table and chart."""
        return _COLOURS.get((self.result.method, self.result.variant), _SHARED)


@dataclass(frozen=True)
class _Log:
    """One training log (``log.csv``): its method's name (None for pre-training), label and columns."""

    method: str | None
    label: str
    columns: dict[str, list[float]]

    @property
    def colour(self) -> str:
        """Its method's colour; grey for the shared pre-training."""
        return _SHARED if self.method is None else _COLOURS.get((self.method, ""), _SHARED)


@dataclass(frozen=True)
class _Run:
    """One run folder with everything the page shows of it; ``notes`` say what had to be left out."""

    layout: RunLayout
    report: RunReport
    evaluations: tuple[_Evaluated, ...]
    logs: tuple[_Log, ...]
    grids: tuple[tuple[str, Path], ...]
    notes: tuple[str, ...]

    @property
    def name(self) -> str:
        """The run folder as given, which tells runs apart in tables and legends."""
        return str(self.layout)


def write_report_page(runs: Sequence[RunLayout], target: Path) -> Path:
    """Write the page of ``runs`` (side by side when several) to ``target`` atomically; return ``target``.

    UserError when a run folder is missing; anything else that is missing or unreadable (the dataset,
    a log, a picture, the config) leaves its part out with a note on the page.
    """
    if not runs:
        raise UserError("give at least one run folder")
    collected = [_collect(run) for run in runs]
    names = {name for run in collected for item in run.evaluations for name, _ in item.result.class_ap}
    with drawing(names):  # class names in any script, with a font that has their characters
        page = _page(collected)
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


# ---- reading a run ----------------------------------------------------------------------------------


def _collect(run: RunLayout) -> _Run:
    """Everything the page shows of ``run``, read from its artifacts."""
    found = report(run)
    config = _config(run)
    evaluations, notes = _evaluations(run, found, config)
    grids = tuple(
        (method.label, grid)
        for method in METHODS.values()
        if (grid := method.files(run).detect / "grid.png").is_file()
    )
    return _Run(run, found, evaluations, _training_logs(run), grids, notes)


def _config(run: RunLayout) -> RunConfig | None:
    """The run's ``config.toml`` (written by ``rcnn run``), or None when it has none or it does not load:
    the paper's figures are then left out, the rest of the page is the same."""
    path = run.config
    if not path.is_file():
        return None
    try:
        return load_config(path)
    except UserError as exc:
        log.warning("no paper figures for %s: %s", run, exc)
        return None


def _paper(config: RunConfig | None, result: MethodResult) -> PaperFigures | None:
    """The paper's figures for ``result``'s method (its compressed model's for a ``+ SVD`` evaluation)."""
    settings = None if config is None else config.methods.get(result.method)
    if settings is None:
        return None
    return settings.papers.get(result.variant)


def _evaluations(
    run: RunLayout, found: RunReport, config: RunConfig | None
) -> tuple[tuple[_Evaluated, ...], tuple[str, ...]]:
    """Each evaluation with its paper figures and PR curves; notes for the curves that had to be left out.
    Each split's dataset is read once."""
    splits: dict[str, Dataset | None] = {}
    evaluations, notes = [], []
    for result in found.results:
        if result.split not in splits:
            classes = tuple(name for name, _ in result.class_ap) or None
            try:
                splits[result.split] = _split(run, config, result.split, classes)
            except UserError as exc:
                splits[result.split] = None
                notes.append(f"{run}: PR curves of split {result.split!r} left out: {exc}")
        dataset, curves = splits[result.split], None
        if dataset is not None:
            try:
                curves = _score_again(run, result, dataset)
            except UserError as exc:
                notes.append(f"{run}: PR curves of {result.label} left out: {exc}")
        evaluations.append(_Evaluated(result, _paper(config, result), curves))
    return tuple(evaluations), tuple(notes)


def _split(run: RunLayout, config: RunConfig | None, split: str, classes: tuple[str, ...] | None) -> Dataset:
    """The annotated split the evaluations scored: the config's ``[data]`` when the run has one, else the
    dataset the split's proposals were made from. UserError when it cannot be read (moved, removed)."""
    if config is not None:
        data = config.data
        return load_dataset(Path(data.root), split, classes, data.skip_bad, format=data.format)
    root, layout = proposals_dataset(run.proposals(split))
    return load_dataset(root, split, classes, format=layout)


def _score_again(run: RunLayout, result: MethodResult, dataset: Dataset) -> Evaluation:
    """``result``'s evaluation again, from its detections file, for the PR curves the JSON does not keep."""
    files = METHODS[result.method].files(run)
    return evaluate(dataset, read_detections(files.detections(result.split, result.variant)), result.metric)


def _training_logs(run: RunLayout) -> tuple[_Log, ...]:
    """The pre-training log and each method's fine-tuning log, those that exist and can be read."""
    sources: list[tuple[str | None, str, Path]] = [(None, "pre-training", run.pretrain.log)]
    sources += [(name, method.label, method.files(run).finetune.log) for name, method in METHODS.items()]
    logs = []
    for method, label, path in sources:
        if path.is_file():
            columns = _read_log(path)
            if columns.get("iteration"):
                logs.append(_Log(method, label, columns))
    return tuple(logs)


def _read_log(path: Path) -> dict[str, list[float]]:
    """A ``log.csv`` as columns of floats (NaN where a value is missing); empty when unreadable."""

    def number(text: str | None) -> float:
        """A cell as a float; NaN for an empty or malformed one (a log cut short by a kill)."""
        try:
            return float(text) if text else math.nan
        except ValueError:
            return math.nan

    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        log.warning("%s: unreadable training log (%s)", path, exc)
        return {}
    names = list(rows[0]) if rows else []
    return {name: [number(row.get(name)) for row in rows] for name in names}


# ---- pictures ---------------------------------------------------------------------------------------


def _png_uri(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_uri(fig: Any) -> str:
    """A matplotlib figure as a PNG data URI; the figure is closed (pyplot keeps open ones alive)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    pyplot().close(fig)
    return _png_uri(buffer.getvalue())


def _picture_uri(path: Path) -> str:
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


def _series_label(run: _Run, label: str, several: bool) -> str:
    """A legend entry: the label, and the run's name when several runs share a chart."""
    return f"{label} ({run.name})" if several else label


def _accuracy_speed_chart(runs: Sequence[_Run]) -> str | None:
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
    return _figure_uri(fig)


def _run_markers(runs: Sequence[_Run]) -> list[Any]:
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


def _pr_chart(runs: Sequence[_Run]) -> str | None:
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
    return _figure_uri(fig)


def _training_chart(runs: Sequence[_Run]) -> str | None:
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
    return _figure_uri(fig)


def _stage_rows(runs: Sequence[_Run]) -> list[tuple[str, str, list[float | None]]]:
    """(stage, artifact, seconds in each run) for every artifact of any run, in the first run's order."""
    keys = list(dict.fromkeys((s.stage, s.artifact) for run in runs for s in run.report.stages))
    seconds = [{(s.stage, s.artifact): s.seconds for s in run.report.stages} for run in runs]
    return [
        (stage, artifact, [found.get((stage, artifact)) for found in seconds]) for stage, artifact in keys
    ]


def _stage_colour(artifact: str) -> str:
    """The colour of the method whose folder holds ``artifact``; grey for the shared stages."""
    return _COLOURS.get((Path(artifact).parts[0], ""), _SHARED)


def _seconds(value: float) -> str:
    """A bar's label: whole seconds, a decimal under ten."""
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def _stage_chart(runs: Sequence[_Run]) -> str | None:
    """Horizontal bars of each stage's seconds (a bar a run, hatched by run), longest work visible at a
    glance; None without stages."""
    rows = _stage_rows(runs)
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
            color=[_stage_colour(artifact) for _, artifact, _ in rows],
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
    return _figure_uri(fig)


# ---- HTML -------------------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       margin: 0 auto; padding: 20px 28px 40px; max-width: 1240px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #dde1e8; }
p.meta, p.note, ol.sources, figcaption { color: #5a6373; font-size: 13px; }
nav a { margin-right: 14px; color: #2359b5; text-decoration: none; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e6e9ef; text-align: left; white-space: nowrap; }
thead th { background: #f3f5f9; border-bottom: 2px solid #cfd5df; white-space: normal;
           vertical-align: bottom; max-width: 110px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.paper, th.paper { background: #fbf7ea; color: #6b5a1e; }
tr.total td { font-weight: 600; border-top: 2px solid #cfd5df; }
td.best { font-weight: 700; }
tr.low td { background: #fdf0e6; color: #8a3b12; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.row > figure.chart { flex: 1 1 440px; max-width: 620px; }
figure { margin: 8px 0; }
img { max-width: 100%; height: auto; }
sup a { color: #8a6d1a; text-decoration: none; }
"""


def _e(value: object) -> str:
    """``value`` as escaped HTML text."""
    return html.escape(str(value))


def _score(value: float | None) -> str:
    """An mAP or AP to three decimals, as the papers print them; a dash when unknown."""
    return "–" if value is None else f"{value:.3f}"


def _per_image(value: float | None) -> str:
    """Seconds an image to three significant digits (0.0809, 47); a dash when unknown."""
    return "–" if value is None else f"{value:.3g}"


def _duration(seconds: float | None) -> str:
    """Seconds as a person reads them: s under a minute and a half, min under 1.5 h, h beyond."""
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _hours(value: float | None) -> str:
    """A paper's training hours as it gives them; a dash when unknown."""
    return "–" if value is None else f"{value:g} h"


def _swatch(colour: str) -> str:
    """A small square of a method's colour, which ties a table row to its lines in the charts."""
    return f'<span class="swatch" style="background:{colour}"></span>'


def _figure(uri: str | None, alt: str, caption: str = "", css: str = "") -> str:
    """A picture (a data URI) as a ``<figure>``, with its caption and CSS class; nothing without one."""
    if uri is None:
        return ""
    kind = f' class="{css}"' if css else ""
    below = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure{kind}><img src="{uri}" alt="{_e(alt)}">{below}</figure>'


def _page(runs: Sequence[_Run]) -> str:
    """The whole HTML document."""
    names = ", ".join(run.name for run in runs)
    sections = [
        ("results", "Results", _results_section(runs)),
        ("proposals", "Proposals", _proposals_section(runs)),
        ("classes", "AP of each class", _class_section(runs)),
        ("pr", "PR curves", _pr_section(runs)),
        ("training", "Training curves", _training_section(runs)),
        ("detections", "Detections", _detections_section(runs)),
        ("stages", "Time of each stage", _stages_section(runs)),
    ]
    nav = "".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title, _ in sections)
    body = "".join(
        f'<section id="{anchor}"><h2>{_e(title)}</h2>{content}</section>'
        for anchor, title, content in sections
    )
    made = time.strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>rcnn report: {_e(names)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>rcnn report: {_e(names)}</h1>"
        f'<p class="meta">made {_e(made)} by <code>rcnn report</code> from the run folders\' artifacts; '
        "test time excludes proposals, training time counts each method's own stages.</p>"
        f"<nav>{nav}</nav></header><main>{body}</main></body></html>\n"
    )


def _results_section(runs: Sequence[_Run]) -> str:
    """The results table, the paper's sources as footnotes, and the accuracy-against-time chart."""
    several = len(runs) > 1
    with_paper = any(e.paper is not None for run in runs for e in run.evaluations)
    sources: dict[str, int] = {}
    head = ["method", *(["run"] if several else []), "split", "metric"]
    columns = [("mAP", False), ("paper mAP", True), ("mAP without box regression", False), ("paper", True)]
    columns += [
        ("test s/image", False),
        ("paper test s/image", True),
        ("training", False),
        ("paper training", True),
    ]
    header = "".join(f"<th>{_e(h)}</th>" for h in head) + "".join(
        f'<th class="{"num paper" if paper else "num"}">{_e(name)}</th>'
        for name, paper in columns
        if with_paper or not paper
    )
    rows = []
    for run in runs:
        for item in run.evaluations:
            r = item.result
            cells = [
                f"<td>{_swatch(item.colour)}{_e(r.label)}</td>",
                *([f"<td>{_e(run.name)}</td>"] if several else []),
            ]
            cells += [f"<td>{_e(r.split)}</td>", f"<td>{_e(r.metric)}</td>"]
            paper = item.paper or PaperFigures()
            measured_and_paper = [
                (_score(r.map), _score(paper.map)),
                (_score(r.map_without_box_regression), _score(paper.map_without_box_regression)),
                (_per_image(r.test_seconds_per_image), _per_image(paper.test_seconds_per_image)),
                (_duration(r.training_seconds), _hours(paper.training_hours)),
            ]
            for measured, theirs in measured_and_paper:
                cells.append(f'<td class="num">{measured}</td>')
                if with_paper:
                    cells.append(_paper_cell(theirs, item.paper, sources))
            rows.append(f"<tr>{''.join(cells)}</tr>")
    if not rows:
        span = len(head) + 4 * (2 if with_paper else 1)
        rows.append(
            f'<tr><td colspan="{span}">no evaluations yet: rcnn evaluate --run ... --method ...</td></tr>'
        )
    table = f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    notes = "".join(f'<li id="source-{n}">{_e(source)}</li>' for source, n in sources.items())
    footnotes = f'<ol class="sources">{notes}</ol>' if notes else ""
    if not with_paper:
        footnotes = _notes(["No paper figures: no run has a config.toml with [<method>.paper] tables."])
    figure = _figure(_accuracy_speed_chart(runs), "mAP against test seconds per image", css="chart")
    return f'<div class="row"><div>{table}{footnotes}</div>{figure}</div>'


def _proposals_section(runs: Sequence[_Run]) -> str:
    """Each split's proposals: how they were made, how many, and the share of the objects they find;
    a recall below ``LOW_RECALL`` marked, as it caps every method's."""
    several = len(runs) > 1
    head = [*(["run"] if several else []), "split", "mode", "images", "boxes an image"]
    head += ["recall at IoU 0.5", "recall at IoU 0.7", "time"]
    rows = []
    for run in runs:
        for p in run.report.proposals:
            recall = p.recall or {}
            cells = [*([run.name] if several else []), p.split, p.source]
            numbers = [str(p.images), f"{p.boxes_per_image:.0f}"]
            numbers += [_score(recall.get(t)) for t in ("0.5", "0.7")] + [_duration(p.seconds)]
            style = ' class="low"' if p.low_recall else ""
            rows.append(
                f"<tr{style}>"
                + "".join(f"<td>{_e(c)}</td>" for c in cells)
                + "".join(f'<td class="num">{_e(n)}</td>' for n in numbers)
                + "</tr>"
            )
    if not rows:
        return _notes(["No proposals yet (rcnn propose)."])
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    table = f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    low = any(p.low_recall for run in runs for p in run.report.proposals)
    said = [
        "Recall: the share of the split's (non-difficult) objects that a proposal covers at the IoU. "
        "No detector finds what its proposals miss"
        + (f"; the highlighted splits' find fewer than {LOW_RECALL:.0%} ({LOW_RECALL_DOCS})." if low else ".")
    ]
    return table + _notes(said)


def _paper_cell(text: str, paper: PaperFigures | None, sources: dict[str, int]) -> str:
    """A paper figure, its source as a tooltip and a numbered footnote (``sources`` numbers them)."""
    if paper is None or text == "–" or not paper.source:
        return f'<td class="num paper">{text}</td>'
    number = sources.setdefault(paper.source, len(sources) + 1)
    return (
        f'<td class="num paper" title="{_e(paper.source)}">{text}'
        f'<sup><a href="#source-{number}">{number}</a></sup></td>'
    )


def _class_section(runs: Sequence[_Run]) -> str:
    """Each class's AP, a column an evaluation (grouped under its run when several), the best in a row
    bold, the mean last."""
    columns = [(run, item) for run in runs for item in run.evaluations]
    if not columns:
        return _notes(["No evaluations yet."])
    classes = list(dict.fromkeys(name for _, item in columns for name, _ in item.result.class_ap))
    head = ""
    if len(runs) > 1:
        groups = "".join(
            f'<th class="num" colspan="{len(run.evaluations)}">{_e(run.name)}</th>'
            for run in runs
            if run.evaluations
        )
        head += f"<tr><th></th>{groups}</tr>"
    labels = "".join(
        f'<th class="num">{_swatch(item.colour)}{_e(item.result.label)}</th>' for _, item in columns
    )
    head += f"<tr><th>class</th>{labels}</tr>"
    rows = []
    untrained = {name for _, item in columns for name in item.result.untrained}
    for name in classes:
        values = [dict(item.result.class_ap).get(name) for _, item in columns]
        best = max((v for v in values if v is not None), default=None)
        cells = "".join(_ap_cell(v, v is not None and v == best and len(columns) > 1) for v in values)
        mark = " <small>(not trained: not in the mAP)</small>" if name in untrained else ""
        rows.append(f"<tr><td>{_e(name)}{mark}</td>{cells}</tr>")
    means = "".join(f'<td class="num">{_score(item.result.map)}</td>' for _, item in columns)
    rows.append(f'<tr class="total"><td>mAP</td>{means}</tr>')
    table = f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    if not untrained:
        return table
    return table + _notes(
        [
            f"{', '.join(sorted(untrained))}: no object in the training split, so no method learnt them; "
            "their AP is shown but left out of the mAP."
        ]
    )


def _ap_cell(value: float | None, best: bool) -> str:
    """An AP cell tinted by its value (a heat map a reader scans down a column)."""
    if value is None:
        return '<td class="num">–</td>'
    tint = f"background: rgba(44, 110, 200, {0.04 + 0.5 * max(0.0, min(1.0, value)) ** 4:.2f})"
    return f'<td class="num{" best" if best else ""}" style="{tint}">{value:.3f}</td>'


def _notes(lines: Iterable[str]) -> str:
    """Each line as a note paragraph: what the page left out, and why."""
    return "".join(f'<p class="note">{_e(line)}</p>' for line in lines)


def _pr_section(runs: Sequence[_Run]) -> str:
    """The PR curves chart, and why any were left out."""
    chart = _pr_chart(runs)
    figure = _figure(chart, "precision-recall curves of each class")
    notes = [note for run in runs for note in run.notes]
    if not chart and not notes:
        notes = ["No evaluations yet."]
    return figure + _notes(notes)


def _training_section(runs: Sequence[_Run]) -> str:
    """The training curves chart, or a note that no run has a training log."""
    chart = _training_chart(runs)
    if chart is None:
        return _notes(["No training logs (log.csv) in the run folder."])
    return _figure(chart, "training loss and accuracy")


def _detections_section(runs: Sequence[_Run]) -> str:
    """Each method's detection grid (``RUN/<method>/detect/grid.png``), scaled down when large."""
    figures = []
    for run in runs:
        for label, path in run.grids:
            try:
                uri = _picture_uri(path)
            except OSError as exc:
                figures.append(_notes([f"{path}: unreadable picture ({exc})"]))
                continue
            caption = f"{label}: {path}"
            figures.append(_figure(uri, caption, caption))
    if not figures:
        return _notes(["No detection grid (RUN/<method>/detect/grid.png; rcnn detect ... --grid)."])
    return f'<div class="row">{"".join(figures)}</div>'


def _stages_section(runs: Sequence[_Run]) -> str:
    """The time of every stage, a column a run, with the total; beside it the bar chart."""
    rows = _stage_rows(runs)
    seconds_head = "".join(
        f'<th class="num">{_e(run.name if len(runs) > 1 else "seconds")}</th>' for run in runs
    )
    body = "".join(
        f"<tr><td>{_swatch(_stage_colour(artifact))}{_e(stage)}</td><td>{_e(artifact)}</td>"
        + "".join(f'<td class="num">{"–" if s is None else f"{s:.1f}"}</td>' for s in seconds)
        + "</tr>"
        for stage, artifact, seconds in rows
    )
    totals = "".join(f'<td class="num">{run.report.total_seconds:.1f}</td>' for run in runs)
    table = (
        f"<table><thead><tr><th>stage</th><th>artifact</th>{seconds_head}</tr></thead>"
        f'<tbody>{body}<tr class="total"><td>total</td><td></td>{totals}</tr></tbody></table>'
    )
    figure = _figure(_stage_chart(runs), "seconds of each stage", css="chart")
    return f'<div class="row"><div>{table}</div>{figure}</div>'
