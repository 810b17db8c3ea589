"""Where region proposals come from: one interface (``Proposer``) that ``rcnn propose``, ``rcnn detect``
and ``rcnn run`` ask, with selective search (``SelectiveSearch``) and boxes imported from the original
release's .mat files (``ImportedBoxes``) as its implementations, and ``NetworkProposals`` for a detector
whose network proposes. A proposer makes a split's proposals file, which records the proposer's
``source``, and, where it can, the proposals of any image.

A method whose network makes its own proposals gives its proposer through ``Method.proposer``; every
other method takes the run's (``run_proposer``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.proposals.options import ProposalOptions
from stages.proposals.propose import (
    ProposalSummary,
    Proposed,
    import_mat,
    propose,
    propose_images,
    searched_with,
)
from stages.proposals.selective_search import require_contrib
from stages.runs.layout import RunLayout


class Proposer(ABC):
    """A source of region proposals."""

    source: ClassVar[str]
    """What the proposals file records as its ``source``."""

    @abstractmethod
    def propose_split(
        self, dataset: Dataset, run: RunLayout, *, skip_bad: bool = False, progress: Progress = SILENT
    ) -> ProposalSummary:
        """Write ``RUN/proposals/<split>.h5`` for every image of ``dataset`` (``skip_bad``: leave out and
        list the unreadable ones)."""

    @abstractmethod
    def propose_images(self, images: Sequence[tuple[str, Path]], workers: int) -> Iterator[Proposed]:
        """The proposals of any (image id, path) pairs, in the order they are made, with up to ``workers``
        processes of their own; UserError for a proposer that only knows a split's images."""

    @abstractmethod
    def settings(self) -> Mapping[str, Any]:
        """What shapes its boxes: an interrupted ``rcnn detect`` resumes only with the same settings."""


@dataclass(frozen=True)
class SelectiveSearch(Proposer):
    """Selective search (Uijlings et al. 2013) with ``options``: the lineage's proposals."""

    options: ProposalOptions = field(default_factory=ProposalOptions)
    source: ClassVar[str] = "selective_search"

    def propose_split(
        self, dataset: Dataset, run: RunLayout, *, skip_bad: bool = False, progress: Progress = SILENT
    ) -> ProposalSummary:
        require_contrib()  # one line before any worker starts, not an AttributeError in each
        return propose(dataset, run, self.options, skip_bad=skip_bad, progress=progress)

    def propose_images(self, images: Sequence[tuple[str, Path]], workers: int) -> Iterator[Proposed]:
        require_contrib()
        return propose_images(images, replace(self.options, workers=self.options.workers or workers))

    def settings(self) -> Mapping[str, Any]:
        return asdict(replace(self.options, workers=0))


@dataclass(frozen=True)
class ImportedBoxes(Proposer):
    """Boxes precomputed elsewhere, in a .mat file of the original Fast R-CNN release, filtered by
    ``options`` (``min_size``, ``max_boxes``) as searched ones are."""

    mat_file: Path
    options: ProposalOptions = field(default_factory=ProposalOptions)
    source: ClassVar[str] = "import"

    def propose_split(
        self, dataset: Dataset, run: RunLayout, *, skip_bad: bool = False, progress: Progress = SILENT
    ) -> ProposalSummary:
        return import_mat(dataset, run, self.mat_file, self.options)

    def propose_images(self, images: Sequence[tuple[str, Path]], workers: int) -> Iterator[Proposed]:
        raise UserError(f"{self.mat_file}: imported boxes cover only their split's images, not new ones")

    def settings(self) -> Mapping[str, Any]:
        return {"mat_file": str(self.mat_file), **asdict(replace(self.options, workers=0))}


@dataclass(frozen=True)
class NetworkProposals(Proposer):
    """The proposals a detector's own network makes from the conv5 it computes for detection anyway
    (Faster R-CNN's region proposal network): each image goes to the detector without boxes. ``name``
    says which network and ``options`` its settings; ``rcnn detect`` records both."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    source: ClassVar[str] = "network"

    def propose_split(
        self, dataset: Dataset, run: RunLayout, *, skip_bad: bool = False, progress: Progress = SILENT
    ) -> ProposalSummary:
        raise UserError(
            f"{self.name}: proposes inside its detector; a split's file comes from `rcnn propose`"
        )

    def propose_images(self, images: Sequence[tuple[str, Path]], workers: int) -> Iterator[Proposed]:
        for image_id, _ in images:
            yield image_id, None, None

    def settings(self) -> Mapping[str, Any]:
        return {"network": self.name, **self.options}


def run_proposer(run: RunLayout) -> Proposer:
    """The proposer for new images of ``run``: selective search as the run's proposals were searched
    (``searched_with``; the defaults where the run's splits disagree or were imported)."""
    return SelectiveSearch(searched_with(run))
