"""``rcnn evaluate --run``: a method's detections of a split, made shard by shard under ``torchrun``,
scored and written with their PR curves. The method supplies the detections (``stages.methods``); this
stage times, scores and writes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.atomic import write_json
from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset, ImageRecord
from stages.detections.files import Detections, detections_of, read_detections, write_detections
from stages.detections.postprocess import DetectOptions, ImageDetections
from stages.evaluation.bootstrap import Intervals, bootstrap_intervals
from stages.evaluation.diagnosis import METRICS as DIAGNOSIS_METRICS
from stages.evaluation.diagnosis import Diagnosis, diagnose, similar_classes
from stages.evaluation.diagnosis_plot import plot_diagnosis
from stages.evaluation.metrics import Evaluation, evaluate, plot_pr_curves, save_evaluation
from stages.methods.base import PLAIN, ImageResult, Method, Variant
from stages.networks.precision import check_supported
from stages.proposals.recall import RecallCurves, recall_curves
from stages.runs.layout import (
    DIAGNOSIS_SUFFIX,
    RunLayout,
    describe_input,
    parts_of,
    read_manifest,
    write_manifest,
)
from stages.runs.processes import ImageShard, processes

log = logging.getLogger("rcnn")


@dataclass(frozen=True)
class RunEvaluation:
    """A method's results on a split: with box regression (when trained) and without; test time an image
    (for Fast R-CNN also its conv and fc parts); for a method whose network proposes, its proposals'
    recall (``proposal_recall``); the 95% intervals of its APs and mAP over the test images
    (``stages.evaluation.bootstrap``)."""

    evaluation: Evaluation
    without_box_regression: Evaluation | None
    detections_path: Path
    results_path: Path
    plot_path: Path
    seconds_per_image: float
    timing: dict[str, float] | None = None
    proposal_recall: RecallCurves | None = None
    intervals: Intervals | None = None
    diagnosis: Diagnosis | None = None
    """The error diagnosis of the detections (``stages.evaluation.diagnosis``), when asked for."""
    diagnosis_without_box_regression: Diagnosis | None = None
    diagnosis_path: Path | None = None


def evaluate_run(
    dataset: Dataset,
    run: RunLayout,
    method: Method[Any],
    metric: str | None = None,
    options: DetectOptions | None = None,
    *,
    variant: Variant = PLAIN,
    device: str = "auto",
    precision: str = "fp32",
    diagnose: bool = False,
    similar: Sequence[Sequence[str]] | None = None,
    progress: Progress = SILENT,
) -> RunEvaluation:
    """Detect on the split and score the detections; write detections, results JSON and PR curves; with
    ``diagnose``, their error diagnosis too (``stages.evaluation.diagnosis``; ``similar``: the groups of
    similar classes, default the dataset's own), with box regression and without.

    ``options`` default to the method's test settings; ``variant`` asks for a form of the method's network
    (``stages.methods.base.SVD``: results beside the others as ``<split>.svd.*``); ``precision``: of a
    network run here (Fast R-CNN's; R-CNN's and SPP-net's features were computed at ``extract-features``).
    Each image's detections are kept in parts as they come (``RUN/<method>/detections/.<split>.parts/``),
    so an interrupted evaluation continues where it stopped; under ``torchrun`` each process detects on
    its shard of the split (``stages.runs.processes``) and rank 0 scores them all.
    """
    started = time.perf_counter()
    if diagnose:
        similar_classes(dataset, similar)  # a group that names no class: said before the detection
    options = options or method.test_options
    detections_path = method.files(run).detections(dataset.split, variant.key)
    inputs = method.test_inputs(run, dataset.split, variant=variant)
    missing = next((path for path in inputs if not path.exists()), None)
    if missing is not None:
        raise UserError(f"{missing}: not found; make it with `{run.command_for(missing, dataset.root)}`")
    with processes(device) as procs:
        check_supported(precision, procs.device)
        stamp = {
            "method": method.name,
            "compressed": variant.compressed,
            "precision": precision,
            "options": asdict(options),
            "inputs": [describe_input(path) for path in inputs],
        }
        shard = ImageShard(procs, parts_of(detections_path), stamp, dataset.images, _image_id)
        with shard.working(progress, f"detecting ({method.name}{variant.label})") as advance:
            results = method.detect_split(
                replace(dataset, images=tuple(shard.todo)),
                run,
                options,
                variant=variant,
                device=procs.device,
                precision=precision,
            )
            clock = time.perf_counter()
            for result in results:  # an image's seconds: since the one before
                shard.parts.add(result.image_id, _as_arrays(result, time.perf_counter() - clock))
                advance()
                clock = time.perf_counter()
        evaluation = None
        if procs.writer:
            settings = Scoring(metric, options, variant, precision, diagnose, similar)
            evaluation = _score(dataset, run, method, settings, shard.parts.load(), inputs, started)
            shard.parts.remove()
        return procs.from_writer(evaluation)


_FIELDS = ("boxes", "scores", "labels")


def _image_id(record: ImageRecord) -> str:
    return record.image_id


def _as_arrays(result: ImageResult, seconds: float) -> dict[str, np.ndarray]:
    """An image's detections (and seconds) as the named arrays ``ImageParts`` keeps."""
    arrays = {"seconds": np.array([seconds])}
    for name, found in (("plain", result.plain), ("regressed", result.regressed)):
        if found is not None:
            arrays |= {
                f"{name}.boxes": found.boxes,
                f"{name}.scores": found.scores,
                f"{name}.labels": found.labels,
            }
    for part, value in (result.timing or {}).items():
        arrays[f"timing.{part}"] = np.array([value])
    if result.proposals is not None:
        arrays["proposals"] = result.proposals
    return arrays


def _detections(arrays: dict[str, np.ndarray], name: str) -> ImageDetections:
    return ImageDetections(*(arrays[f"{name}.{field}"] for field in _FIELDS))


@dataclass(frozen=True)
class Scoring:
    """How ``evaluate_run`` scores: ``metric``, the detection ``options``, the network's ``variant`` and
    ``precision``, whether to ``diagnose`` and with which ``similar`` classes; ``made_with`` is what its
    manifests record, and what ``rcnn run`` expects of them."""

    metric: str | None
    options: DetectOptions
    variant: Variant
    precision: str
    diagnose: bool
    similar: Sequence[Sequence[str]] | None

    def made_with(self, method: Method[Any], metric: str) -> dict[str, Any]:
        """The options the evaluation's manifests record, ``metric`` resolved."""
        return {
            "method": method.name,
            "metric": metric,
            "compressed": self.variant.compressed,
            "precision": self.precision,
            "diagnose": self.diagnose,
            "similar": None if self.similar is None else [list(group) for group in self.similar],
            **asdict(self.options),
        }


def _score(
    dataset: Dataset,
    run: RunLayout,
    method: Method[Any],
    settings: Scoring,
    found: dict[str, dict[str, np.ndarray]],
    inputs: list[Path],
    started: float,
) -> RunEvaluation:
    """Score every image's detections ``found`` (image id -> ``_as_arrays``) and write the results."""
    variant, precision = settings.variant, settings.precision
    scoring = time.perf_counter()
    left_out = {r.image_id: f"{r.path}: left out" for r in dataset.images if r.image_id not in found}
    if left_out:  # images an earlier stage skipped as unreadable (propose --skip-bad)
        log.warning("scoring %d of the split's %d images", len(dataset) - len(left_out), len(dataset))
        dataset = dataset.without(left_out)
    image_ids = [r.image_id for r in dataset.images]
    images = [found[i] for i in image_ids]
    plain = [_detections(arrays, "plain") for arrays in images]
    regressed = (
        [_detections(arrays, "regressed") for arrays in images]
        if images and all("regressed.boxes" in arrays for arrays in images)
        else None
    )
    primary = detections_of(image_ids, plain if regressed is None else regressed, dataset.classes)
    untrained = _untrained(method, run, dataset)
    evaluation = evaluate(dataset, primary, settings.metric, untrained=untrained)
    metric = evaluation.metric
    intervals = bootstrap_intervals(evaluation)
    unregressed = None if regressed is None else detections_of(image_ids, plain, dataset.classes)
    without = None if unregressed is None else evaluate(dataset, unregressed, metric, untrained=untrained)
    seconds_per_image = float(np.mean([arrays["seconds"][0] for arrays in images])) if images else 0.0
    parts = sorted(
        {key.removeprefix("timing.") for arrays in images for key in arrays if key.startswith("timing.")}
    )
    timing = {
        part: float(np.mean([arrays[f"timing.{part}"][0] for arrays in images])) for part in parts
    } or None
    curves = (
        recall_curves(dataset, {i: arrays["proposals"] for i, arrays in zip(image_ids, images, strict=True)})
        if images and all("proposals" in arrays for arrays in images)
        else None
    )
    files = method.files(run)
    detections_path = files.detections(dataset.split, variant.key)
    results_path = files.results(dataset.split, variant.key)
    plot_path = files.pr_curves(dataset.split, variant.key)
    write_detections(detections_path, primary)
    results = {
        **evaluation.to_json(),
        "method": method.name,
        "variant": variant.key,
        "compressed": variant.compressed,
        "precision": precision,
        "split": dataset.split,
        "box_regression": regressed is not None,
        "map_without_box_regression": None if without is None else round(without.map, 6),
        **(intervals.to_json() if intervals else {}),
        "seconds_per_image": round(seconds_per_image, 4),
        **({f"{k}_seconds_per_image": round(v, 4) for k, v in timing.items()} if timing else {}),
        **({"proposal_recall": curves.to_json()} if curves else {}),
    }
    write_json(results_path, results)
    plot_pr_curves(evaluation, plot_path)
    diagnoses: tuple[Diagnosis | None, Diagnosis | None] = (None, None)
    diagnosis_path = files.diagnosis(dataset.split, variant.key)
    if settings.diagnose:
        diagnoses = _diagnose(dataset, (primary, unregressed), metric, settings.similar, untrained)
        _write_diagnosis(diagnosis_path, *diagnoses)
    else:  # an earlier diagnosis is of other detections
        for path in (diagnosis_path, diagnosis_path.with_suffix(".png")):
            path.unlink(missing_ok=True)
    made_with = settings.made_with(method, metric)
    write_manifest(  # the detection's time here, the scoring's beside the results: each counted once
        detections_path,
        stage="evaluate",
        options=made_with,
        inputs=inputs,
        seconds=scoring - started,
        results={
            "detections": len(primary),
            "dataset_root": str(dataset.root),
            "dataset_format": dataset.format,
            "split": dataset.split,
        },
    )
    write_manifest(
        results_path,
        stage="evaluate",
        options=made_with,
        inputs=inputs,
        seconds=time.perf_counter() - scoring,
        results={
            "map": results["map"],
            "map_ci95": results.get("map_ci95"),
            "map_without_box_regression": results["map_without_box_regression"],
        },
    )
    return RunEvaluation(
        evaluation,
        without,
        detections_path,
        results_path,
        plot_path,
        seconds_per_image,
        timing,
        curves,
        intervals,
        *diagnoses,
        diagnosis_path if settings.diagnose else None,
    )


@dataclass(frozen=True)
class FileEvaluation:
    """A detections file scored (``evaluate_file``): the evaluation, its 95% intervals, where its PR
    curves went, and with a diagnosis, the diagnosis and where it went."""

    evaluation: Evaluation
    intervals: Intervals | None
    plot_path: Path
    diagnosis: Diagnosis | None = None
    diagnosis_path: Path | None = None


def evaluate_file(
    dataset: Dataset,
    detections_path: Path,
    metric: str | None = None,
    *,
    out: Path | None = None,
    plot: Path | None = None,
    diagnose: bool = False,
    similar: Sequence[Sequence[str]] | None = None,
) -> FileEvaluation:
    """``rcnn evaluate --detections``: the detections file scored on ``dataset`` with its intervals,
    written to ``out`` (JSON, when given) with its PR curves (``plot``, default beside ``out`` or the
    file); with ``diagnose``, its error diagnosis beside them (``<stem>.diagnosis.json`` and ``.png``)."""
    detections = read_detections(detections_path)
    if diagnose:
        similar_classes(dataset, similar)  # a group that names no class: said before anything is written
    evaluation = evaluate(dataset, detections, metric)
    intervals = bootstrap_intervals(evaluation)
    beside = out or detections_path
    plot = plot or beside.with_suffix(".pr.png")
    save_evaluation(evaluation, out, plot, intervals.to_json() if intervals else {})
    if not diagnose:
        return FileEvaluation(evaluation, intervals, plot)
    diagnosis, _ = _diagnose(dataset, (detections, None), evaluation.metric, similar, ())
    target = beside.with_suffix(DIAGNOSIS_SUFFIX)
    _write_diagnosis(target, diagnosis, None)
    return FileEvaluation(evaluation, intervals, plot, diagnosis, target)


def _diagnose(
    dataset: Dataset,
    detections: tuple[Detections, Detections | None],
    metric: str,
    similar: Sequence[Sequence[str]] | None,
    untrained: Sequence[str],
) -> tuple[Diagnosis, Diagnosis | None]:
    """The error diagnosis of the detections (with box regression where trained) and of those without
    it (None without box regression); under COCO's metric, scored by the area under the curve (voc10),
    as COCO's ``analyze`` draws it."""
    chosen = similar_classes(dataset, similar)
    scored_by = metric if metric in DIAGNOSIS_METRICS else "voc10"
    primary, plain = detections
    return (
        diagnose(dataset, primary, scored_by, chosen, untrained),
        None if plain is None else diagnose(dataset, plain, scored_by, chosen, untrained),
    )


def _write_diagnosis(path: Path, diagnosis: Diagnosis, without: Diagnosis | None) -> None:
    """The diagnosis JSON (the one without box regression in it, under ``without_box_regression``) and
    its plot beside it (``.png``)."""
    content = diagnosis.to_json()
    if without is not None:
        content["without_box_regression"] = without.to_json()
    write_json(path, content)
    plot_diagnosis(diagnosis, path.with_suffix(".png"))


def _untrained(method: Method[Any], run: RunLayout, dataset: Dataset) -> list[str]:
    """The classes of ``dataset`` with objects here that the method's network had none of to learn from
    (its fine-tuning's manifest counts them), with a warning: they are left out of the mAP."""
    manifest = read_manifest(method.files(run).finetune.model) or {}
    learnt = manifest.get("results", {}).get("class_objects") or {}
    here = dataset.object_counts()
    untrained = [name for name in dataset.classes if learnt.get(name) == 0 and here[name]]
    if untrained:
        log.warning(
            "%s learnt nothing of %s (no object in its training split): scored apart from the mAP",
            method.label,
            ", ".join(untrained),
        )
    return untrained
