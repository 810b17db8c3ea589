"""`rcnn bench proposals`: selective search's images a second as its worker processes grow, and each
proposer's recall against its seconds an image on the same images (Faster R-CNN, figure 2 and table 5:
what learned proposals gain in recall and time)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods import METHODS
from stages.proposals.options import ProposalOptions
from stages.proposals.propose import Proposed, search_records, searched_with
from stages.proposals.recall import PROPOSAL_COUNTS, RecallCurves, recall_curves
from stages.proposals.sources import Proposer
from stages.runs.layout import RunLayout


@dataclass(frozen=True)
class ThroughputRow:
    """One configuration's measurement."""

    workers: int
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


@dataclass(frozen=True)
class ProposerRow:
    """A proposer on the bench's images, one at a time: its seconds an image after the first (which
    pays for loading a network or starting a process) and its recall curves (None on a split without
    annotations)."""

    label: str
    seconds_per_image: float
    curves: RecallCurves | None


@dataclass(frozen=True)
class ProposalBench:
    """Selective search's throughput with 1 worker and with all cores (searching with ``options``), and
    every proposer's recall."""

    options: ProposalOptions
    throughput: list[ThroughputRow]
    proposers: list[ProposerRow]


def bench_proposals(
    dataset: Dataset,
    images: int,
    given: Mapping[str, Any],
    run: RunLayout | None = None,
    device: str = "auto",
    progress: Progress = SILENT,
) -> ProposalBench:
    """Selective search on the first ``images`` images of the split with 1 worker and with all cores
    (process start-up included, as a user of `rcnn propose` pays it too), with the options ``given``
    over the defaults or, with ``run``, over the settings its proposals were searched with; then the
    proposals of each trained network of ``run`` that proposes (``Method.model_proposer``), keeping
    2,000 an image, on ``device``. The recall of each is scored on the same images."""
    if run is not None and not run.root.is_dir():
        raise UserError(f"{run}: no such run folder")
    options = replace(ProposalOptions() if run is None else searched_with(run), **given)
    split = replace(dataset, images=dataset.images[:images])
    pairs = [(r.image_id, r.path) for r in split.images]
    cores = os.cpu_count() or 1
    throughput, rows = [], []
    for workers in sorted({1, options.workers or cores}):
        started = time.perf_counter()
        with progress.task(f"selective search, {workers} workers", len(pairs), "img") as advance:
            found, seconds_per_image = _timed(search_records(pairs, options, workers), advance)
        throughput.append(ThroughputRow(workers, len(pairs), time.perf_counter() - started))
        if workers == 1:
            label = f"selective search ({options.mode})"
            rows.append(ProposerRow(label, seconds_per_image, _curves(split, found)))
    for label, network in [] if run is None else _trained_proposers(run, device):
        with progress.task(label, len(pairs), "img") as advance:
            found, seconds_per_image = _timed(network.propose_images(pairs, 1), advance)
        rows.append(ProposerRow(label, seconds_per_image, _curves(split, found)))
    return ProposalBench(options, throughput, rows)


def _trained_proposers(run: RunLayout, device: str) -> list[tuple[str, Proposer]]:
    """Each trained network of ``run`` that proposes, named, as a proposer keeping 2,000 boxes an image."""
    found = []
    for name, method_name in METHODS.proposers().items():
        method = METHODS[method_name]
        model = method.files(run).finetune.model
        if model.is_file():
            found.append(
                (
                    f"{name.upper()} ({method.label})",
                    method.model_proposer(model, max(PROPOSAL_COUNTS), device),
                )
            )
    return found


def _timed(proposed: Iterator[Proposed], advance: Callable[[], None]) -> tuple[dict[str, np.ndarray], float]:
    """Every image's proposals as they come, and the seconds an image after the first one (which pays for
    a process's start or a network's loading; all of them with one image)."""
    found, clock, times = {}, time.perf_counter(), []
    for image_id, boxes, problem in proposed:
        if problem is not None or boxes is None:
            raise UserError(problem or f"{image_id}: no proposals")
        found[image_id] = boxes
        times.append(time.perf_counter() - clock)
        clock = time.perf_counter()
        advance()
    return found, float(np.mean(times[1:] or times))


def _curves(split: Dataset, boxes: Mapping[str, np.ndarray]) -> RecallCurves | None:
    return recall_curves(split, boxes) if split.annotated else None
