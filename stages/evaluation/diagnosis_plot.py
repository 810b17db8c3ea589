"""The error diagnosis as one picture of three panels (``plot_diagnosis``): the top-ranked false positives'
types as they grow (Hoiem et al.'s and R-CNN's figure), the PR breakdown (COCO's ``analyze``), and AP by
object size, truncation and difficulty (``stages.evaluation.diagnosis``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.core.atomic import atomic_path
from stages.evaluation.diagnosis import (
    ABBREVIATIONS,
    LEVELS,
    RECALLS,
    SIZES,
    SOURCES,
    TRUNCATION,
    TYPES,
    Diagnosis,
)

TYPE_LABELS = {
    "loc": "Loc: poor localization or duplicate",
    "sim": "Sim: similar class",
    "oth": "Oth: other class",
    "bg": "BG: background",
}
TRUNCATION_LABELS = {"truncated": "truncated", "not_truncated": "not\ntruncated"}


def plot_diagnosis(diagnosis: Diagnosis, path: Path) -> None:
    """One PNG of three panels: the top-ranked false positives' types as they grow (Hoiem's and R-CNN's
    figure), the PR breakdown (COCO's ``analyze``), and AP by object size (and by truncation where the
    split marks it)."""
    from stages.core.plotting import drawing

    with drawing(()) as plt:
        fig, (growth_ax, breakdown_ax, size_ax) = plt.subplots(1, 3, figsize=(16, 5), dpi=100)
        _draw_growth(growth_ax, diagnosis, plt)
        _draw_breakdown(breakdown_ax, diagnosis, plt)
        _draw_sizes(size_ax, diagnosis)
        similar = SOURCES[diagnosis.similar.source]
        fig.suptitle(f"Error diagnosis under {diagnosis.metric} AP; similar classes: {similar}")
        fig.tight_layout()
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)


def _draw_growth(ax: Any, diagnosis: Diagnosis, plt: Any) -> None:
    """Stacked shares of the types against the total false positives, on a log axis."""
    from matplotlib import ticker

    points = [point for point in diagnosis.growth if point.total]
    ax.set(xlabel="total false positives", ylabel="percentage of each type", ylim=(0, 100))
    ax.set_title("(a) top-ranked false positives", fontsize=10)
    if len(points) < 2:
        ax.text(0.5, 0.5, "too few false positives", ha="center", transform=ax.transAxes)
        return
    totals = [point.total for point in points]
    shares = [[100 * point.fractions[kind] for point in points] for kind in TYPES]
    colors = plt.get_cmap("Set2").colors[: len(TYPES)]
    ax.stackplot(totals, *shares, labels=[TYPE_LABELS[kind] for kind in TYPES], colors=colors, alpha=0.9)
    ax.set_xscale("log")
    ax.set_xlim(totals[0], totals[-1])
    decades = np.log10(totals[-1] / totals[0])
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5) if decades < 2.5 else (1,)))  # labels apart
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.legend(fontsize=8, loc="lower left", framealpha=0.8)


def _draw_breakdown(ax: Any, diagnosis: Diagnosis, plt: Any) -> None:
    """Each level's mean PR curve, the area between it and the one below filled (COCO's figure)."""
    cmap = plt.get_cmap("viridis")
    below = np.zeros(len(RECALLS))
    for index, level in enumerate(LEVELS):
        curve = diagnosis.curves[level]
        ap = f"{diagnosis.breakdown[level]:.3f}".removeprefix("0")
        color = cmap(index / (len(LEVELS) - 1))
        ax.fill_between(RECALLS, below, curve, color=color, label=f"[{ap}] {ABBREVIATIONS[level]}")
        ax.plot(RECALLS, curve, color="black", lw=0.5)
        below = curve
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title("(b) PR breakdown (mean over classes)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left", framealpha=0.8)


def _draw_sizes(ax: Any, diagnosis: Diagnosis) -> None:
    """Mean AP of each size, with the C50 mAP of all sizes as a line; of the truncated objects and the
    others where the split marks them; and with difficult objects counted."""
    names = [f"{size}\n{diagnosis.objects_by_size[size]} objects" for size in SIZES]
    aps = [diagnosis.ap_by_size[size] for size in SIZES]
    by_truncation, objects = diagnosis.ap_by_truncation, diagnosis.objects_by_truncation
    if by_truncation is not None and objects is not None:
        names += [f"{TRUNCATION_LABELS[kind]}\n{objects[kind]} objects" for kind in TRUNCATION]
        aps += [by_truncation[kind] for kind in TRUNCATION]
    if diagnosis.difficult_counted is not None:
        names.append(f"difficult counted\n{diagnosis.difficult_objects} difficult")
        aps.append(diagnosis.difficult_counted)
    bars = ax.bar(names, np.nan_to_num(aps), color="#4c72b0")
    ax.bar_label(bars, labels=[f"{ap:.3f}" for ap in aps], fontsize=8)
    if len(names) > 4:  # the truncation bars too: smaller labels, kept apart
        ax.tick_params(axis="x", labelsize=8)
    ax.axhline(diagnosis.breakdown["c50"], color="black", ls="--", lw=1, label="all sizes (C50)")
    ax.set(ylabel=f"mean {diagnosis.metric} AP", ylim=(0, 1.05))
    ax.set_title("(c) AP by object size", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
