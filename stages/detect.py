"""The two test stages every method shares: ``rcnn evaluate --run`` (a method's detections of a split,
scored) and ``rcnn detect`` (a method on any image a user has). The method supplies its detector
(``stages.methods``); these stages score, draw and write.
"""

from __future__ import annotations

import glob
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from stages.atomic import write_json
from stages.datasets.records import Dataset
from stages.detections import detections_of, write_detections
from stages.devices import pick_device
from stages.draw import draw_detections, write_png
from stages.errors import UserError
from stages.evaluation import Evaluation, evaluate, plot_pr_curves
from stages.image_files import is_image_name
from stages.images import read_image
from stages.methods.base import Method
from stages.postprocess import DetectOptions, ImageDetections
from stages.progress import SILENT, Progress
from stages.proposals import ProposalOptions, propose_images, searched_with
from stages.runs import RunLayout, write_manifest

log = logging.getLogger("rcnn")


@dataclass(frozen=True)
class RunEvaluation:
    """A method's results on a split: with box regression (when trained) and without; test time an image
    (for Fast R-CNN also its conv and fc parts)."""

    evaluation: Evaluation
    without_box_regression: Evaluation | None
    detections_path: Path
    results_path: Path
    plot_path: Path
    seconds_per_image: float
    timing: dict[str, float] | None = None


def evaluate_run(
    dataset: Dataset,
    run: RunLayout,
    method: Method[Any],
    metric: str | None = None,
    options: DetectOptions | None = None,
    *,
    compressed: bool = False,
    device: str = "auto",
    progress: Progress = SILENT,
) -> RunEvaluation:
    """Detect on the split and score the detections; write detections, results JSON and PR curves.

    ``options`` default to the method's test settings; ``compressed`` asks for the method's truncated-SVD
    model (results beside the others as ``<split>.svd.*``).
    """
    started = time.perf_counter()
    method.check_compressed(compressed)
    options = options or method.test_options
    found = method.detect_split(
        dataset, run, options, compressed=compressed, device=pick_device(device), progress=progress
    )
    seconds_per_image = (time.perf_counter() - started) / max(1, len(found.image_ids))
    detected = set(found.image_ids)
    left_out = {r.image_id: f"{r.path}: left out" for r in dataset.images if r.image_id not in detected}
    if left_out:  # images an earlier stage skipped as unreadable (propose --skip-bad)
        log.warning("scoring %d of the split's %d images", len(detected), len(dataset))
        dataset = dataset.without(left_out)
    best = found.plain if found.regressed is None else found.regressed
    primary = detections_of(found.image_ids, best, dataset.classes)
    evaluation = evaluate(dataset, primary, metric)
    metric = evaluation.metric
    without = (
        None
        if found.regressed is None
        else evaluate(dataset, detections_of(found.image_ids, found.plain, dataset.classes), metric)
    )
    files = method.files(run)
    detections_path = files.detections(dataset.split, compressed)
    results_path = files.results(dataset.split, compressed)
    plot_path = files.pr_curves(dataset.split, compressed)
    write_detections(detections_path, primary)
    results = {
        **evaluation.to_json(),
        "method": method.name,
        "compressed": compressed,
        "split": dataset.split,
        "box_regression": found.regressed is not None,
        "map_without_box_regression": None if without is None else round(without.map, 6),
        "seconds_per_image": round(seconds_per_image, 4),
        **({f"{k}_seconds_per_image": round(v, 4) for k, v in found.timing.items()} if found.timing else {}),
    }
    write_json(results_path, results)
    plot_pr_curves(evaluation, plot_path)
    write_manifest(
        results_path,
        stage="evaluate",
        options={"method": method.name, "metric": metric, "compressed": compressed, **asdict(options)},
        inputs=found.inputs,
        seconds=time.perf_counter() - started,
        results={"map": results["map"], "map_without_box_regression": results["map_without_box_regression"]},
    )
    return RunEvaluation(
        evaluation, without, detections_path, results_path, plot_path, seconds_per_image, found.timing
    )


@dataclass(frozen=True)
class DetectedImage:
    """``rcnn detect``'s result for one image and where it was written."""

    path: Path
    detections: ImageDetections
    classes: tuple[str, ...]
    proposals: int
    picture: Path
    json: Path
    seconds: float


def image_paths(arguments: Sequence[str | Path]) -> list[Path]:
    """The images that ``rcnn detect``'s arguments name: files as given, a folder's images (sorted), and
    glob patterns (``photos/*.jpg``, ``**`` for subfolders) for shells that do not expand them."""
    paths: list[Path] = []
    for argument in map(str, arguments):
        if Path(argument).is_dir():
            found = sorted(p for p in Path(argument).iterdir() if is_image_name(p))
            if not found:
                raise UserError(f"{argument}: no images (.jpg, .png, ...) in this folder")
            paths += found
        elif glob.has_magic(argument):
            matched = sorted(Path(p) for p in glob.glob(argument, recursive=True))
            found = [p for p in matched if is_image_name(p)]
            if not found:
                raise UserError(f"{argument}: matches no image")
            paths += found
        else:
            paths.append(Path(argument))
    return paths


def detect_images(
    images: Sequence[str | Path],
    run: RunLayout,
    method: Method[Any],
    out: Path | None = None,
    score_thresh: float | None = None,
    proposal_options: ProposalOptions | None = None,
    device: str = "auto",
    compressed: bool = False,
    skip_bad: bool = False,
    save_json: Path | None = None,
    progress: Progress = SILENT,
) -> list[DetectedImage]:
    """Selective search, then the method's detector on each image of ``images`` (files, folders and glob
    patterns: ``image_paths``); writes ``OUT/<stem>.png`` (the
    annotated image) and ``OUT/<stem>.json`` (the exchange format), and with ``save_json`` every image's
    detections in one exchange-format file. Detections scoring below ``score_thresh`` (default: the
    method's display threshold) are dropped. An unreadable image is a UserError naming it, or with
    ``skip_bad`` is skipped, counted and listed in a warning.

    Selective search runs in worker processes ahead of the network (``propose_images``), with
    ``proposal_options`` (default: the settings of the run's own proposals, ``searched_with``): each image
    is detected as soon as its proposals arrive. Results come back in the order of ``paths``.
    """
    proposal_options = proposal_options or searched_with(run)
    out = Path(out) if out is not None else method.files(run).detect
    paths = image_paths(images)
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise UserError("two images share a file name stem; their outputs would collide (detect them apart)")
    threshold = method.display_threshold if score_thresh is None else score_thresh
    options = replace(method.test_options, score_thresh=threshold)
    detector = method.detector(run, options, pick_device(device), compressed=compressed)
    path_of = dict(zip(stems, paths, strict=True))
    found_by_stem: dict[str, DetectedImage] = {}
    skipped = []
    with progress.task(f"detecting ({method.name})", len(paths), "img") as advance:
        for stem, boxes, problem in propose_images(list(path_of.items()), proposal_options):
            started = time.perf_counter()
            path = path_of[stem]
            try:
                if boxes is None:
                    raise UserError(problem or f"{path}: selective search failed")
                image = read_image(path)
            except UserError as exc:
                if not skip_bad:
                    raise
                skipped.append(str(exc))
                advance()
                continue
            if len(boxes) == 0:
                log.warning(
                    "%s: no proposals (too small for a %d-pixel box?), so no detections",
                    path,
                    proposal_options.min_size,
                )
            found = detector.find(image, boxes)
            picture, json_path = out / f"{stem}.png", out / f"{stem}.json"
            write_png(
                picture, draw_detections(image, found.boxes, found.labels, found.scores, detector.classes)
            )
            write_detections(json_path, detections_of([stem], [found], detector.classes))
            seconds = time.perf_counter() - started
            found_by_stem[stem] = DetectedImage(
                path, found, detector.classes, len(boxes), picture, json_path, seconds
            )
            advance()
    if skipped:
        log.warning("skipped %d unreadable images (--skip-bad): %s", len(skipped), "; ".join(skipped))
    results = [found_by_stem[stem] for stem in stems if stem in found_by_stem]
    if save_json is not None:
        detected = [r.path.stem for r in results]
        write_detections(
            save_json, detections_of(detected, [r.detections for r in results], detector.classes)
        )
    return results
