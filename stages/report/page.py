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

import html
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from stages.config.run_config import PaperFigures
from stages.core.atomic import atomic_path
from stages.core.errors import UserError
from stages.core.plotting import drawing
from stages.proposals.propose import LOW_RECALL, LOW_RECALL_DOCS
from stages.proposals.recall import PROPOSAL_COUNTS
from stages.report.charts import (
    COLOURS,
    SHARED_COLOUR,
    accuracy_speed_chart,
    picture_uri,
    pr_chart,
    recall_chart,
    seeds_chart,
    stage_chart,
    stage_colour,
    stage_rows,
    training_chart,
)
from stages.report.collect import (
    CollectedRun,
    collect_run,
)
from stages.report.summary import NOISE_LEVEL, seed_differences
from stages.runs.layout import RunLayout

log = logging.getLogger("rcnn")


def write_report_page(runs: Sequence[RunLayout], target: Path) -> Path:
    """Write the page of ``runs`` (side by side when several) to ``target`` atomically; return ``target``.

    UserError when a run folder is missing; anything else that is missing or unreadable (the dataset,
    a log, a picture, the config) leaves its part out with a note on the page.
    """
    if not runs:
        raise UserError("give at least one run folder")
    collected = [collect_run(run) for run in runs]
    names = {name for run in collected for item in run.evaluations for name, _ in item.result.class_ap}
    with drawing(names):  # class names in any script, with a font that has their characters
        page = _page(collected)
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


# ---- reading a run ----------------------------------------------------------------------------------


# ---- pictures ---------------------------------------------------------------------------------------


# ---- HTML -------------------------------------------------------------------------------------------

STYLE = """
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


def _page(runs: Sequence[CollectedRun]) -> str:
    """The whole HTML document."""
    names = ", ".join(run.name for run in runs)
    sections = [
        ("results", "Results", _results_section(runs)),
        *(
            [("seeds", "Training noise", _seeds_section(runs))]
            if any(run.report.seeds for run in runs)
            else []
        ),
        ("proposals", "Proposals", _proposals_section(runs)),
        ("classes", "AP of each class", _class_section(runs)),
        ("errors", "Errors", _errors_section(runs)),
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
        f"<title>rcnn report: {_e(names)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>rcnn report: {_e(names)}</h1>"
        f'<p class="meta">made {_e(made)} by <code>rcnn report</code> from the run folders\' artifacts; '
        "test time without proposals and with them (selective search's seconds an image added, or an RPN's "
        "made in the test pass), training time counts each method's own stages.</p>"
        f"<nav>{nav}</nav></header><main>{body}</main></body></html>\n"
    )


def _results_section(runs: Sequence[CollectedRun]) -> str:
    """The results table, the paper's sources as footnotes, and the accuracy-against-time chart."""
    several = len(runs) > 1
    with_paper = any(e.paper is not None for run in runs for e in run.evaluations)
    sources: dict[str, int] = {}
    head = ["method", *(["run"] if several else []), "split", "metric"]
    columns = [("mAP", False), ("paper mAP", True), ("95% interval", False)]
    columns += [("mAP without box regression", False), ("paper", True)]
    columns += [
        ("test s/image", False),
        ("paper test s/image", True),
        ("with proposals", False),
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
                ("" if r.map_ci95 is None else f"{r.map_ci95[0]:.3f} to {r.map_ci95[1]:.3f}", None),
                (_score(r.map_without_box_regression), _score(paper.map_without_box_regression)),
                (_per_image(r.test_seconds_per_image), _per_image(paper.test_seconds_per_image)),
                (_per_image(r.test_seconds_with_proposals), None),
                (_duration(r.training_seconds), _hours(paper.training_hours)),
            ]
            for measured, theirs in measured_and_paper:
                cells.append(f'<td class="num">{measured}</td>')
                if with_paper and theirs is not None:
                    cells.append(_paper_cell(theirs, item.paper, sources))
            rows.append(f"<tr>{''.join(cells)}</tr>")
    if not rows:
        span = len(head) + sum(1 for _, paper in columns if with_paper or not paper)
        rows.append(
            f'<tr><td colspan="{span}">no evaluations yet: rcnn evaluate --run ... --method ...</td></tr>'
        )
    table = f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    notes = "".join(f'<li id="source-{n}">{_e(source)}</li>' for source, n in sources.items())
    footnotes = f'<ol class="sources">{notes}</ol>' if notes else ""
    if not with_paper:
        footnotes = _notes(["No paper figures: no run has a config.toml with [<method>.paper] tables."])
    stale = [name for run in runs for name in run.report.stale_replicas]
    if stale:
        footnotes += _notes(
            [f"Left out of the seeds, made with another config than the run's: {', '.join(stale)}."]
        )
    if any(item.result.map_ci95 for run in runs for item in run.evaluations):
        footnotes += _notes(
            [
                "95% interval: of the mAP, by bootstrap over the test images (seeded); the test set's "
                "sampling noise alone: a detector trained again moves as well."
            ]
        )
    figure = _figure(accuracy_speed_chart(runs), "mAP against test seconds per image", css="chart")
    return f'<div class="row"><div>{table}{footnotes}</div>{figure}</div>'


def _seeds_section(runs: Sequence[CollectedRun]) -> str:
    """Each evaluation over the seeds of ``rcnn run --seeds`` (every seed's mAP, mean and standard
    deviation), each pair of methods' difference against that spread, and the chart of both."""
    several = len(runs) > 1
    offsets = sorted({offset for run in runs for s in run.report.seeds for offset, _ in s.maps})
    rows, pairs = [], []
    for run in runs:
        named = [run.name] if several else []
        for spread in run.report.seeds:
            colour = COLOURS.get((spread.method, spread.variant), SHARED_COLOUR)
            value = dict(spread.maps)
            numbers = [_score(value.get(offset)) for offset in offsets]
            numbers += [f"{spread.mean:.3f}", "–" if len(spread.maps) < 2 else f"{spread.std:.3f}"]
            rows.append(
                _row([f"{_swatch(colour)}{_e(spread.label)}", *map(_e, named), _e(spread.split)], numbers)
            )
        for d in seed_differences(run.report.seeds):
            verdict = ("paired" if d.paired else "Welch") + (
                ", <b>beyond the noise</b>" if d.beyond_noise else ""
            )
            texts = [*map(_e, named), _e(d.first.label), _e(d.second.label), _e(d.first.split)]
            pairs.append(_row(texts, [f"{d.difference:+.3f}", f"{d.p_value:.3f}"], verdict))
    run_head = ["run"] if several else []
    table = _table(["method", *run_head, "split"], [*(f"seed +{k}" for k in offsets), "mean", "std"], rows)
    compared = _table([*run_head, "first", "second", "split"], ["difference of means", "p"], pairs, 1)
    said = _notes(
        [
            "Each method trained and tested again with every training seed of the config + 1, + 2, ... "
            "(rcnn run --seeds; the replicas in RUN/seeds/ took "
            f"{_duration(sum(run.report.replica_seconds for run in runs))} of stages), on the same "
            "proposals and test images: the spread is the training's noise. A difference is beyond the "
            f"noise when the t-test over the seeds gives p < {NOISE_LEVEL}: paired seed by seed where both "
            "have the same seeds (each seed replicates the whole run, the pre-trained backbone included), "
            "else Welch's. Each pair is tested on its own: of the pairs that do not differ, one in twenty is "
            "called beyond the noise by chance. With a few seeds, only large differences can be beyond it."
        ]
    )
    figure = _figure(seeds_chart(runs), "mAP of each seed", css="chart")
    return f'<div class="row"><div>{table}{compared if pairs else ""}{said}</div>{figure}</div>'


def _row(texts: Sequence[str], numbers: Sequence[str], last: str = "") -> str:
    """A table row: cells of HTML ``texts``, then right-aligned ``numbers``, then ``last`` if given."""
    cells = "".join(f"<td>{text}</td>" for text in texts)
    cells += "".join(f'<td class="num">{_e(number)}</td>' for number in numbers)
    return f"<tr>{cells}{f'<td>{last}</td>' if last else ''}</tr>"


def _table(texts: Sequence[str], numbers: Sequence[str], rows: Sequence[str], blank: int = 0) -> str:
    """A table of ``rows`` under a header of ``texts``, right-aligned ``numbers`` and ``blank`` empty
    columns."""
    header = "".join(f"<th>{_e(h)}</th>" for h in texts)
    header += "".join(f'<th class="num">{_e(n)}</th>' for n in numbers) + "<th></th>" * blank
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _proposals_section(runs: Sequence[CollectedRun]) -> str:
    """Each split's proposals: how they were made, how many, and the share of the objects they find;
    a recall below ``LOW_RECALL`` marked, as it caps every method's."""
    several = len(runs) > 1
    head = [*(["run"] if several else []), "split", "made by", "images", "boxes an image"]
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
    if not rows and not any(run.report.recall for run in runs):
        return _notes(["No proposals yet (rcnn propose)."])
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    table = f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>" if rows else ""
    low = any(p.low_recall for run in runs for p in run.report.proposals)
    said = [
        "Recall: the share of the split's (non-difficult) objects that a proposal covers at the IoU. "
        "No detector finds what its proposals miss"
        + (f"; the highlighted splits' find fewer than {LOW_RECALL:.0%} ({LOW_RECALL_DOCS})." if low else ".")
    ]
    return table + _notes(said) + _recall_table(runs)


def _recall_table(runs: Sequence[CollectedRun]) -> str:
    """Each proposer's recall with its best 300, 1,000 and 2,000 proposals an image, as a table and as
    Faster R-CNN's figure 2 (recall against IoU); nothing without recall curves."""
    several = len(runs) > 1
    head = [*(["run"] if several else []), "proposer", "split", "boxes an image", "recall at IoU 0.5 (300)"]
    head += [f"AR ({count:,})" for count in PROPOSAL_COUNTS]
    rows = []
    for run in runs:
        for proposer in run.report.recall:
            curves = proposer.curves
            cells = [*([run.name] if several else []), proposer.label, proposer.split]
            numbers = [f"{curves.boxes_per_image:.0f}", _score(curves.at(0.5, "300"))]
            numbers += [_score(curves.average(str(count))) for count in PROPOSAL_COUNTS]
            rows.append(
                "<tr>"
                + "".join(f"<td>{_e(c)}</td>" for c in cells)
                + "".join(f'<td class="num">{_e(n)}</td>' for n in numbers)
                + "</tr>"
            )
    if not rows:
        return ""
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    table = f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    said = _notes(
        [
            "AR: the recall averaged over IoU 0.5 to 0.95 (Hosang et al.), with the proposer's best N "
            "proposals an image; a method's own proposals are those its network made at its test."
        ]
    )
    figure = _figure(
        recall_chart(runs),
        "recall against IoU at 300, 1,000 and 2,000 proposals an image",
        "Recall against IoU with each proposer's best 300, 1,000 and 2,000 proposals an image "
        "(Faster R-CNN, figure 2).",
    )
    return f"<div>{table}{said}</div>{figure}"


def _paper_cell(text: str, paper: PaperFigures | None, sources: dict[str, int]) -> str:
    """A paper figure, its source as a tooltip and a numbered footnote (``sources`` numbers them)."""
    if paper is None or text == "–" or not paper.source:
        return f'<td class="num paper">{text}</td>'
    number = sources.setdefault(paper.source, len(sources) + 1)
    return (
        f'<td class="num paper" title="{_e(paper.source)}">{text}'
        f'<sup><a href="#source-{number}">{number}</a></sup></td>'
    )


def _class_section(runs: Sequence[CollectedRun]) -> str:
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


def _errors_section(runs: Sequence[CollectedRun]) -> str:
    """Each diagnosed evaluation's top-ranked false positives by type and its PR breakdown, as a table,
    then each one's diagnosis plot."""
    from stages.evaluation.diagnosis import ABBREVIATIONS, LEVELS, SOURCES, TYPES

    several = len(runs) > 1
    rows, figures, sources = [], [], set()
    for run in runs:
        for item in run.evaluations:
            r = item.result
            if (found := r.diagnosis) is None:
                continue
            sources.add(SOURCES.get(found.similar, found.similar))
            without = found.loc_share_without_box_regression
            numbers = [f"{found.shares[kind]:.0%}" for kind in TYPES]
            numbers.append("–" if without is None else f"{without:.0%}")
            numbers += [_score(found.breakdown.get(level)) for level in LEVELS]
            numbers += [_score(found.ap_by_size.get(size)) for size in ("small", "medium", "large")]
            texts = [f"{_swatch(item.colour)}{_e(r.label)}", *([_e(run.name)] if several else [])]
            rows.append(_row(texts, numbers))
            try:
                figures.append(
                    _figure(picture_uri(found.plot), f"errors of {r.label}", f"{r.label}: {found.plot}")
                )
            except OSError as exc:
                figures.append(_notes([f"{found.plot}: unreadable picture ({exc})"]))
    if not rows:
        return _notes(["No error diagnosis yet (rcnn run, or rcnn evaluate --diagnose)."])
    types = [*(ABBREVIATIONS[kind] for kind in TYPES), "Loc without box regression"]
    levels = [f"AP {ABBREVIATIONS[level]}" for level in LEVELS]
    head = ["method", *(["run"] if several else [])]
    table = _table(head, [*types, *levels, "AP small", "AP medium", "AP large"], rows)
    said = _notes(
        [
            "Top-ranked false positives (Hoiem et al., ECCV 2012; R-CNN's error analysis): among each "
            "class's first detections, as many as its objects, the share of each type: Loc, on an object of "
            "its class at IoU 0.1 to 0.5 or a duplicate; Sim, on a similar class; Oth, on another class; BG, "
            "on none; box regression is there to fix Loc errors (beside: their share without it). AP C75 "
            "to FN (COCO's analyze): the mean AP at IoU 0.75, at 0.5, at 0.1, then with the Sim, Oth and "
            "all false positives removed, and with no object missed. AP by size: COCO's areas (below 32², "
            f"above 96² pixels). Similar classes: {', '.join(sorted(sources))}."
        ]
    )
    return f"{table}{said}{''.join(figures)}"


def _ap_cell(value: float | None, best: bool) -> str:
    """An AP cell tinted by its value (a heat map a reader scans down a column)."""
    if value is None:
        return '<td class="num">–</td>'
    tint = f"background: rgba(44, 110, 200, {0.04 + 0.5 * max(0.0, min(1.0, value)) ** 4:.2f})"
    return f'<td class="num{" best" if best else ""}" style="{tint}">{value:.3f}</td>'


def _notes(lines: Iterable[str]) -> str:
    """Each line as a note paragraph: what the page left out, and why."""
    return "".join(f'<p class="note">{_e(line)}</p>' for line in lines)


def _pr_section(runs: Sequence[CollectedRun]) -> str:
    """The PR curves chart, and why any were left out."""
    chart = pr_chart(runs)
    figure = _figure(chart, "precision-recall curves of each class")
    notes = [note for run in runs for note in run.notes]
    if not chart and not notes:
        notes = ["No evaluations yet."]
    return figure + _notes(notes)


def _training_section(runs: Sequence[CollectedRun]) -> str:
    """The training curves chart, or a note that no run has a training log."""
    chart = training_chart(runs)
    if chart is None:
        return _notes(["No training logs (log.csv) in the run folder."])
    return _figure(chart, "training loss and accuracy")


def _detections_section(runs: Sequence[CollectedRun]) -> str:
    """Each method's detection grid (``RUN/<method>/detect/grid.png``), scaled down when large."""
    figures = []
    for run in runs:
        for label, path in run.grids:
            try:
                uri = picture_uri(path)
            except OSError as exc:
                figures.append(_notes([f"{path}: unreadable picture ({exc})"]))
                continue
            caption = f"{label}: {path}"
            figures.append(_figure(uri, caption, caption))
    if not figures:
        return _notes(["No detection grid (RUN/<method>/detect/grid.png; rcnn detect ... --grid)."])
    return f'<div class="row">{"".join(figures)}</div>'


def _stages_section(runs: Sequence[CollectedRun]) -> str:
    """The time of every stage, a column a run, with the total; beside it the bar chart."""
    rows = stage_rows(runs)
    seconds_head = "".join(
        f'<th class="num">{_e(run.name if len(runs) > 1 else "seconds")}</th>' for run in runs
    )
    body = "".join(
        f"<tr><td>{_swatch(stage_colour(artifact))}{_e(stage)}</td><td>{_e(artifact)}</td>"
        + "".join(f'<td class="num">{"–" if s is None else f"{s:.1f}"}</td>' for s in seconds)
        + "</tr>"
        for stage, artifact, seconds in rows
    )
    totals = "".join(f'<td class="num">{run.report.total_seconds:.1f}</td>' for run in runs)
    table = (
        f"<table><thead><tr><th>stage</th><th>artifact</th>{seconds_head}</tr></thead>"
        f'<tbody>{body}<tr class="total"><td>total</td><td></td>{totals}</tr></tbody></table>'
    )
    figure = _figure(stage_chart(runs), "seconds of each stage", css="chart")
    return f'<div class="row"><div>{table}</div>{figure}</div>'
