"""`rcnn bench proposals`: selective search's images a second as its worker processes grow."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.proposals.options import ProposalOptions
from stages.proposals.propose import search_many


@dataclass(frozen=True)
class ThroughputRow:
    """One configuration's measurement."""

    workers: int
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def bench_proposals(
    dataset: Dataset, images: int, options: ProposalOptions, progress: Progress = SILENT
) -> list[ThroughputRow]:
    """Selective search on the first ``images`` images of the split with 1 worker and with all cores.

    Process start-up is included, as a user of `rcnn propose` pays it too.
    """
    records = dataset.images[:images]
    jobs = [(r.image_id, str(r.path), options.mode, options.max_side, options.seed) for r in records]
    cores = os.cpu_count() or 1
    rows = []
    for workers in sorted({1, options.workers or cores}):
        started = time.perf_counter()
        with progress.task(f"selective search, {workers} workers", len(jobs), "img") as advance:
            for _, _, problem in search_many(jobs, workers):
                if problem is not None:
                    raise UserError(problem)
                advance()
        rows.append(ThroughputRow(workers, len(jobs), time.perf_counter() - started))
    return rows
