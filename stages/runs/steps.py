"""The steps of a run as ``rcnn run`` plans them: each stage's artifact, the options its manifest must
record and the steps it reads from. Methods declare their own steps (``Method.steps``) on top of the
shared ones (``SharedSteps``); ``stages.pipeline`` orders, checks and runs them.

Steps name each other by ``StepKey``, never by the label the plan shows, so that a label is only ever
derived (``StepKey.label``): ``fast evaluate test (SVD)`` is ``StepKey("evaluate", "fast", "test", "SVD")``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stages.core.progress import Progress
from stages.datasets.records import Dataset
from stages.runs.layout import RunLayout


@dataclass(frozen=True)
class StepKey:
    """A step's stable name: its stage, and the method, split and note (``SVD``, ``before fine-tuning``)
    that tell it from the other steps of that stage."""

    stage: str
    method: str = ""
    split: str = ""
    note: str = ""

    @property
    def label(self) -> str:
        """What the plan and the progress lines show: ``spp extract-features trainval (before
        fine-tuning)``."""
        words = " ".join(word for word in (self.method, self.stage, self.split) if word)
        return f"{words} ({self.note})" if self.note else words


class StepContext(Protocol):
    """What a step's ``execute`` is given while a plan runs: the run folder, the progress display, and the
    splits, each read once (``dataset``)."""

    run: RunLayout
    progress: Progress

    def dataset(self, split: str) -> Dataset: ...


@dataclass(frozen=True)
class Step:
    """One stage of a run.

    ``expects``: what the artifact's manifest must record among its options; ``after``: the steps whose
    artifacts it reads; ``partial``: what an interrupted run of it leaves to resume from; ``stale``:
    further files of an earlier run removed before it runs from the start; ``replaces``: whether it
    makes its artifact anew (SPP-net's second pass over the training cache adds to the first's);
    ``everywhere``: run on every process under ``torchrun``; ``summary``: what to say of the result of
    ``execute`` when it is done (say, the proposals' recall).
    """

    key: StepKey
    artifact: Path
    expects: Mapping[str, Any]
    execute: Callable[[StepContext], Any]
    after: tuple[StepKey, ...] = ()
    partial: tuple[Path, ...] = ()
    stale: tuple[Path, ...] = ()
    replaces: bool = True
    everywhere: bool = False
    summary: Callable[[Any], str] = lambda result: ""

    @property
    def name(self) -> str:
        return self.key.label


@dataclass(frozen=True)
class SharedSteps:
    """What a method's steps build on: the run folder, the training and test splits, each split's
    proposals step, and the pre-training step (``backbone``, empty when the run has none)."""

    run: RunLayout
    train: str
    test: str
    backbone: tuple[StepKey, ...] = ()

    @staticmethod
    def proposals(split: str) -> StepKey:
        """The step that makes ``split``'s proposals."""
        return StepKey("propose", split=split)

    def backbone_for(self, options: Any) -> tuple[StepKey, ...]:
        """The pre-training step, for ``options`` that start from the run's backbone: they choose one
        (a ``weights`` field) and leave ``weights`` unset."""
        return self.backbone if hasattr(options, "weights") and options.weights is None else ()
