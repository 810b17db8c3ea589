"""``DIR/study.html``: a study's comparison as one self-contained page: the verdict on the paper's
ordering, the table of variants beside the paper's figures, a chart of both, each ordering step's test,
and each variant's settings with a link to its run's report."""

from __future__ import annotations

import html
import os
import time
from pathlib import Path

from stages.core.atomic import atomic_path
from stages.core.plotting import drawing, pyplot
from stages.report.charts import figure_uri
from stages.report.page import STYLE
from stages.report.summary import NOISE_LEVEL
from stages.study.summary import StudyReport, StudyRow


def write_study_page(found: StudyReport, target: Path) -> Path:
    """Write the page of ``found`` to ``target`` atomically; return ``target``."""
    with drawing([row.variant.label for row in found.rows]):
        chart = _chart(found)
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(_page(found, chart, target.parent), encoding="utf-8")
    return target


def _e(value: object) -> str:
    return html.escape(str(value))


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _seconds(value: float | None, digits: str = ".3g") -> str:
    return "–" if value is None else f"{value:{digits}} s"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _page(found: StudyReport, chart: str | None, folder: Path) -> str:
    study = found.study
    made = time.strftime("%Y-%m-%d %H:%M")
    picture = (
        f'<figure><img src="{chart}" alt="mAP of each variant beside the paper\'s"></figure>' if chart else ""
    )
    note = f'<p class="note">{_e(study.note)}</p>' if study.note else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>rcnn study: {_e(study.title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_e(study.title)}</h1>"
        f'<p class="meta">made {_e(made)} by <code>rcnn study {_e(study.path)}</code>; the paper\'s figures: '
        f"{_e(study.source or 'none recorded')}</p></header><main>"
        f"<p><strong>{_e(found.verdict)}</strong></p>{note}"
        f'<p class="note">The stages behind the rows took {_minutes(found.seconds_once)}, each file made '
        f"once; {_minutes(found.seconds_alone)} had each variant run alone.</p>"
        f'<section id="results"><h2>Variants</h2>{_table(found, folder)}{picture}</section>'
        f'<section id="ordering"><h2>The paper\'s ordering, step by step</h2>{_steps(found)}</section>'
        f'<section id="settings"><h2>Settings</h2>{_settings(found, folder)}</section>'
        "</main></body></html>\n"
    )


def _table(found: StudyReport, folder: Path) -> str:
    seeds = any(row.spread is not None for row in found.rows)
    head = ["variant", "mAP", "95% interval", *(["± seeds"] if seeds else []), "paper mAP", "test s/image"]
    head += ["training"]
    cells = "".join(
        f'<th class="{"num" if i else ""}{" paper" if h == "paper mAP" else ""}">{_e(h)}</th>'
        for i, h in enumerate(head)
    )
    rows = []
    for row in found.rows:
        result = row.result
        interval = "–" if row.ci95 is None else f"{row.ci95[0]:.3f}–{row.ci95[1]:.3f}"
        spread = row.spread
        numbers = [_score(row.map), interval]
        if seeds:
            numbers.append(
                "–" if spread is None else f"{spread.mean:.3f} ± {spread.std:.3f} ({len(row.seeds)})"
            )
        numbers += [
            _score(row.variant.paper),
            _seconds(None if result is None else result.test_seconds_per_image),
            _seconds(None if result is None else result.training_seconds, ".0f"),
        ]
        name = f'<a href="{_e(_link(row, folder))}">{_e(row.variant.label)}</a>'
        tds = "".join(
            f'<td class="num{" paper" if i == (3 if seeds else 2) else ""}">{_e(n)}</td>'
            for i, n in enumerate(numbers)
        )
        rows.append(f"<tr><td>{name}</td>{tds}</tr>")
    caption = (
        '<p class="note">mAP: the evaluation each row reads (its measure), on the test split; the interval '
        "by bootstrap over the test images; ± seeds: mean ± standard deviation over the training seeds "
        "(their number); test time an image without proposals; training: the method's own stages, as if "
        "the variant ran alone (steps shared with another variant count in both).</p>"
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>{caption}"


def _link(row: StudyRow, folder: Path) -> str:
    return Path(os.path.relpath(row.run.report_page, folder)).as_posix()


def _steps(found: StudyReport) -> str:
    if not found.steps:
        return f'<p class="note">{_e(found.verdict)}</p>'
    head = "".join(
        f"<th>{h}</th>"
        for h in ("the paper", "paper's difference", "measured", "p", "test", "held", "beyond the noise")
    )
    rows = []
    for step in found.steps:
        paper = (step.higher.variant.paper or 0) - (step.lower.variant.paper or 0)
        cells = [
            f"{_e(step.higher.variant.label)} &gt; {_e(step.lower.variant.label)}",
            f"{paper:+.3f}",
            f"{step.difference:+.3f}",
            "–" if step.p_value is None else f"{step.p_value:.3f}",
            _e(step.noise),
            "yes" if step.held else "no",
            "yes" if step.beyond_noise else "no",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<p class="note">Beyond the noise: p &lt; {NOISE_LEVEL}.</p>'
    )


def _settings(found: StudyReport, folder: Path) -> str:
    study = found.study
    base = f"<p>Base config: <code>{_e(study.config)}</code>"
    base += f", with <code>{_e(' '.join(study.settings))}</code></p>" if study.settings else "</p>"
    rows = "".join(
        f"<tr><td>{_e(row.variant.label)}</td><td><code>{_e(row.variant.measure)}</code></td>"
        f"<td><code>{_e(' '.join(row.variant.settings) or '(the base config)')}</code></td>"
        f'<td><a href="{_e(_link(row, folder))}">{_e(row.run)}</a></td></tr>'
        for row in found.rows
    )
    head = "<tr><th>variant</th><th>measure</th><th>settings</th><th>run folder</th></tr>"
    return f"{base}<table><thead>{head}</thead><tbody>{rows}</tbody></table>"


def _chart(found: StudyReport) -> str | None:
    """Each variant's mAP (a bar, its interval or ± one standard deviation over seeds as a whisker, each
    seed a dot) beside the paper's (a diamond), variants top to bottom in the study's order."""
    rows = [row for row in found.rows if row.map is not None]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 1.0 + 0.45 * len(rows)))
    for y, row in enumerate(reversed(rows)):
        spread = row.spread
        value = spread.mean if spread is not None else row.map
        assert value is not None
        if spread is not None:
            error: tuple[float, float] | None = (spread.std, spread.std)
        elif row.ci95 is not None:
            error = (value - row.ci95[0], row.ci95[1] - value)
        else:
            error = None
        xerr = None if error is None else [[error[0]], [error[1]]]
        ax.barh(
            y, value, height=0.55, color="#4c78a8", xerr=xerr, capsize=3, label="measured" if y == 0 else None
        )
        ax.text(0.01, y, f"{value:.3f}", fontsize=8, ha="left", va="center", color="white")
        if spread is not None:
            seeds = [mAP for _, mAP in row.seeds]
            ax.scatter(
                seeds,
                [y] * len(seeds),
                s=14,
                color="#1d2330",
                zorder=4,
                label="each seed" if y == 0 else None,
            )
        if row.variant.paper is not None:
            ax.scatter(
                row.variant.paper,
                y,
                marker="D",
                s=42,
                color="#c9a227",
                zorder=3,
                label="paper" if y == 0 else None,
            )
    ax.set_yticks(range(len(rows)), [row.variant.label for row in reversed(rows)])
    ax.set_xlim(0, 1)
    whisker = "± one std over seeds" if any(r.spread for r in rows) else "95% interval over the test images"
    ax.set(xlabel=f"mAP (whiskers: {whisker})")
    ax.grid(alpha=0.3, axis="x")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return figure_uri(fig)
