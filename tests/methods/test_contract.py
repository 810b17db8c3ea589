"""The method interface, whole: a toy method that lives only here is registered, and `rcnn run --plan`,
`rcnn run` (its steps, each variant's evaluation, the report page), `evaluate_run`, `rcnn report` and
`rcnn bench methods` take it as they take the lineage's, with no shared stage knowing it.

The toy learns each class's mean object area from the training split and scores a proposal for a class
by how close its area is; its second variant (``SHRUNK``, asked for by a ``[toy.shrink]`` table, like
Fast R-CNN's ``[fast.compress]``) shrinks every box it finds about its centre."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from stages.config.run_config import load_config
from stages.core.atomic import write_json
from stages.core.progress import SILENT
from stages.datasets.formats import load_dataset
from stages.datasets.records import Dataset
from stages.detections.postprocess import DetectOptions, ImageDetections, detect_from_scores
from stages.inference.evaluate import evaluate_run
from stages.methods import METHODS
from stages.methods.base import (
    PLAIN,
    Benchmark,
    BenchSettings,
    ConfigTable,
    ImageDetector,
    ImageResult,
    Method,
    Variant,
)
from stages.pipeline.run import plan
from stages.proposals.propose import load_proposals
from stages.runs.layout import RunLayout, read_manifest, write_manifest
from stages.runs.steps import SharedSteps, Step, StepKey
from stages.training.options import TrainingOptions
from stages.training.solver import TrainingSummary
from tests.helpers import rcnn


@dataclass(frozen=True)
class ToyOptions(TrainingOptions):
    iterations: int = 1
    learning_rate: float = 0.1
    step: int = 1


@dataclass(frozen=True)
class ShrinkOptions:
    factor: float = 0.5


SHRUNK = Variant("shrunk", " + shrunk", "shrunk", table="shrink")


class Toy(Method[ToyOptions]):
    name = "toy"
    label = "Toy"
    test_options = DetectOptions()
    display_threshold = 0.0
    finetune_options_type = ToyOptions
    variants: ClassVar[tuple[Variant, ...]] = (PLAIN, SHRUNK)

    @property
    def tables(self) -> tuple[ConfigTable, ...]:
        return (*super().tables, ConfigTable("shrink", ShrinkOptions, optional=True))

    def _shrunk(self, run: RunLayout) -> Path:
        return self.files(run).root / "shrunk.json"

    def steps(self, tables: Mapping[str, Any], shared: SharedSteps) -> list[Step]:
        found = super().steps(tables, shared)
        if "shrink" in tables:
            options = tables["shrink"]
            found.append(
                Step(
                    StepKey("shrink", self.name),
                    self._shrunk(shared.run),
                    asdict(options),
                    lambda ctx: self._shrink(ctx.run, options),
                    after=(StepKey("finetune", self.name),),
                )
            )
        return found

    def tested_after(self, variant: Variant, split: str) -> tuple[StepKey, ...]:
        made_by = "shrink" if variant is SHRUNK else "finetune"
        return (StepKey(made_by, self.name), SharedSteps.proposals(split))

    def _shrink(self, run: RunLayout, options: ShrinkOptions) -> None:
        model = json.loads(self.files(run).finetune.model.read_text())
        write_json(self._shrunk(run), {**model, "factor": options.factor})
        write_manifest(self._shrunk(run), stage="shrink", options=options, inputs=[], seconds=0.0)

    def finetune(
        self, dataset: Dataset, run: RunLayout, options: ToyOptions, *, resume=True, progress=SILENT
    ) -> TrainingSummary:
        started = time.perf_counter()
        areas = {name: [] for name in dataset.classes}
        for record in dataset.images:
            for box, label in zip(record.boxes, record.labels, strict=True):
                areas[dataset.classes[label - 1]].append(float((box[2] - box[0]) * (box[3] - box[1])))
        model = {
            "classes": list(dataset.classes),
            "areas": [float(np.mean(a or [1.0])) for a in areas.values()],
        }
        target = self.files(run).finetune.model
        write_json(target, model)
        counts = {name: len(found) for name, found in areas.items()}
        seconds = time.perf_counter() - started
        made_with = {"method": self.name, **asdict(options)}
        results = {"class_objects": counts}
        write_manifest(
            target, stage="finetune", options=made_with, inputs=[], seconds=seconds, results=results
        )
        return TrainingSummary(target, counts, 1, 0.0, 1.0, seconds)

    def _scorer(self, run: RunLayout, variant: Variant):
        path = self._shrunk(run) if variant is SHRUNK else self.files(run).finetune.model
        model = json.loads(path.read_text())
        return tuple(model["classes"]), self._detect(np.array(model["areas"]), model.get("factor", 1.0))

    @staticmethod
    def _detect(areas: np.ndarray, factor: float):
        """Detections by closeness of area to each class's ``areas``, boxes shrunk by ``factor``."""

        def detect(boxes: np.ndarray, size: tuple[int, int], options: DetectOptions) -> ImageDetections:
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            scores = 1 / (1 + np.abs(np.log(area[:, None] / areas[None, :])))
            found, _ = detect_from_scores(boxes, scores.astype(np.float32), size, options)
            centre = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
            half = (found.boxes[:, 2:] - found.boxes[:, :2]) / 2 * factor
            return ImageDetections(np.hstack([centre - half, centre + half]), found.scores, found.labels)

        return detect

    def detector(
        self, run, options, device: torch.device, *, variant=PLAIN, precision="fp32"
    ) -> ImageDetector:
        classes, detect = self._scorer(run, variant)
        return ImageDetector(
            classes, lambda image, boxes: (detect(boxes, image.shape[:2], options), len(boxes))
        )

    def detector_inputs(self, run: RunLayout, *, variant: Variant = PLAIN) -> list[Path]:
        return [self._shrunk(run) if variant is SHRUNK else self.files(run).finetune.model]

    def test_inputs(self, run: RunLayout, split: str, *, variant: Variant = PLAIN) -> list[Path]:
        return [*self.detector_inputs(run, variant=variant), run.proposals(split)]

    def detect_split(
        self, dataset, run, options, *, variant=PLAIN, device, precision="fp32"
    ) -> Iterator[ImageResult]:
        _, detect = self._scorer(run, variant)
        dataset, proposals = load_proposals(run, dataset)
        for record in dataset.images:
            yield ImageResult(
                record.image_id,
                detect(proposals[record.image_id], (record.height, record.width), options),
                None,
            )

    def benchmark(self, settings: BenchSettings) -> Benchmark:
        """Its test pass with every class's mean area 32 x 32 px; nothing to fine-tune."""
        passes = {}
        for variant, factor in ((PLAIN, 1.0), (SHRUNK, 0.8)):

            def measure(image, boxes, factor=factor):
                started = time.perf_counter()
                self._detect(np.full(settings.classes, 1024.0), factor)(
                    boxes, image.shape[:2], self.test_options
                )
                return 0.0, time.perf_counter() - started

            passes[variant] = measure
        return Benchmark(passes)

    def training_seconds(self, run: RunLayout, variant: Variant = PLAIN) -> float | None:
        made = read_manifest(self.files(run).finetune.model)
        return None if made is None else made["seconds"]


CONFIG = """
[data]
root = "{data}"

[run]
folder = "{run}"
methods = ["toy"]

[propose]
workers = 1
max_side = 160

[toy.paper]
map = 0.5
source = "no paper: the toy of tests/methods/test_contract.py"

[toy.shrink]
factor = 0.8

[toy.shrink.paper]
map = 0.25
"""


@pytest.fixture
def toy(monkeypatch) -> Toy:
    method = Toy()
    monkeypatch.setitem(METHODS, method.name, method)
    return method


def test_a_method_that_lives_only_in_the_tests_runs_through_every_shared_stage(toy, tiny_demo, tmp_path):
    run = tmp_path / "run"
    config = tmp_path / "toy.toml"
    config.write_text(CONFIG.format(data=tiny_demo, run=run), encoding="utf-8")

    planned = rcnn("run", config, "--plan")
    assert planned.exit_code == 0, planned.output
    for label in ("toy finetune", "toy shrink", "toy evaluate test", "toy evaluate test (shrunk)"):
        assert label in planned.output

    done = rcnn("run", config)
    assert done.exit_code == 0, done.output
    files = toy.files(RunLayout(run))
    plain, shrunk = (json.loads(files.results("test", key).read_text()) for key in ("", "shrunk"))
    assert plain["variant"] == "" and shrunk["variant"] == "shrunk"
    assert shrunk["map"] != plain["map"]  # each variant scored its own detections
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "Toy + shrunk" in page and "0.250" in page  # beside the paper's figure of the variant
    assert {item.step.name: item.reason for item in plan(load_config(config)) if item.reason} == {}

    again = evaluate_run(load_dataset(tiny_demo, "test"), RunLayout(run), toy, variant=toy.variant_of(shrunk))
    assert round(again.evaluation.map, 6) == shrunk["map"]

    report = rcnn("report", "--run", run)
    assert report.exit_code == 0, report.output
    assert "Toy + shrunk" in report.output

    small = ("--backbone", "tiny", "--images", "1", "--proposals", "40", "--image-size", "96", "--steps", "1")
    bench = rcnn("bench", "methods", "--data", tiny_demo, *small)
    assert bench.exit_code == 0, bench.output
    assert re.search(
        r"^Toy +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+x *$", bench.output, re.M
    )  # not trained: no train s
    assert re.search(r"^Toy \+ shrunk +[\d.]+", bench.output, re.M)
