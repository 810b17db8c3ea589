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

import numpy as np

from stages.atomic import ensure_folder, file_target, write_json
from stages.datasets.records import Dataset
from stages.detections import detections_of, write_detections
from stages.draw import draw_detections, write_grid, write_png
from stages.errors import UserError
from stages.evaluation import Evaluation, evaluate, plot_pr_curves
from stages.image_files import is_image_name
from stages.images import read_image
from stages.methods.base import ImageDetector, ImageResult, Method
from stages.postprocess import DetectOptions, ImageDetections
from stages.precision import check_supported
from stages.progress import SILENT, Advance, Progress
from stages.proposals import ProposalOptions, propose_images, searched_with
from stages.runs import RunLayout, describe_input, parts_of, read_manifest, write_manifest
from stages.sharding import ImageParts, processes, shared_task, spread

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
    precision: str = "fp32",
    progress: Progress = SILENT,
) -> RunEvaluation:
    """Detect on the split and score the detections; write detections, results JSON and PR curves.

    ``options`` default to the method's test settings; ``compressed`` asks for the method's truncated-SVD
    model (results beside the others as ``<split>.svd.*``); ``precision``: of a network run here (Fast
    R-CNN's; R-CNN's and SPP-net's features were computed at ``extract-features``). Each image's
    detections are kept in parts as they come (``RUN/<method>/detections/.<split>.parts/``), so an
    interrupted evaluation continues where it stopped; under ``torchrun`` each process detects on its
    shard of the split (``stages.sharding``) and rank 0 scores them all.
    """
    started = time.perf_counter()
    method.check_compressed(compressed)
    options = options or method.test_options
    detections_path = method.files(run).detections(dataset.split, compressed)
    inputs = method.test_inputs(run, dataset.split, compressed=compressed)
    missing = next((path for path in inputs if not path.exists()), None)
    if missing is not None:
        raise UserError(f"{missing}: not found; make it with `{run.command_for(missing, dataset.root)}`")
    with processes(device) as procs:
        check_supported(precision, procs.device)
        stamp = {
            "method": method.name,
            "compressed": compressed,
            "precision": precision,
            "options": asdict(options),
            "inputs": [describe_input(path) for path in inputs],
        }
        parts = ImageParts(parts_of(detections_path), stamp, procs)
        finished = parts.image_ids()
        todo = tuple(r for r in spread(dataset.images, procs) if r.image_id not in finished)
        done = sum(r.image_id in finished for r in dataset.images)
        label = f"detecting ({method.name}{' + SVD' if compressed else ''})"
        board = parts.folder / "progress"
        with shared_task(progress, procs, board, label, len(dataset), "img", done) as advance:
            results = method.detect_split(
                replace(dataset, images=todo),
                run,
                options,
                compressed=compressed,
                device=procs.device,
                precision=precision,
            )
            try:
                clock = time.perf_counter()
                for result in results:  # an image's seconds: since the one before
                    parts.add(result.image_id, _as_arrays(result, time.perf_counter() - clock))
                    advance()
                    clock = time.perf_counter()
            finally:
                parts.flush()
        evaluation = None
        if procs.writer:
            evaluation = _score(
                dataset, run, method, metric, options, compressed, precision, parts.load(), inputs, started
            )
            parts.remove()
        return procs.from_writer(evaluation)


_FIELDS = ("boxes", "scores", "labels")


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
    return arrays


def _detections(arrays: dict[str, np.ndarray], name: str) -> ImageDetections:
    return ImageDetections(*(arrays[f"{name}.{field}"] for field in _FIELDS))


def _score(
    dataset: Dataset,
    run: RunLayout,
    method: Method[Any],
    metric: str | None,
    options: DetectOptions,
    compressed: bool,
    precision: str,
    found: dict[str, dict[str, np.ndarray]],
    inputs: list[Path],
    started: float,
) -> RunEvaluation:
    """Score every image's detections ``found`` (image id -> ``_as_arrays``) and write the results."""
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
    evaluation = evaluate(dataset, primary, metric, untrained=untrained)
    metric = evaluation.metric
    without = (
        None
        if regressed is None
        else evaluate(dataset, detections_of(image_ids, plain, dataset.classes), metric, untrained=untrained)
    )
    seconds_per_image = float(np.mean([arrays["seconds"][0] for arrays in images])) if images else 0.0
    parts = sorted(
        {key.removeprefix("timing.") for arrays in images for key in arrays if key.startswith("timing.")}
    )
    timing = {
        part: float(np.mean([arrays[f"timing.{part}"][0] for arrays in images])) for part in parts
    } or None
    files = method.files(run)
    detections_path = files.detections(dataset.split, compressed)
    results_path = files.results(dataset.split, compressed)
    plot_path = files.pr_curves(dataset.split, compressed)
    write_detections(detections_path, primary)
    results = {
        **evaluation.to_json(),
        "method": method.name,
        "compressed": compressed,
        "precision": precision,
        "split": dataset.split,
        "box_regression": regressed is not None,
        "map_without_box_regression": None if without is None else round(without.map, 6),
        "seconds_per_image": round(seconds_per_image, 4),
        **({f"{k}_seconds_per_image": round(v, 4) for k, v in timing.items()} if timing else {}),
    }
    write_json(results_path, results)
    plot_pr_curves(evaluation, plot_path)
    made_with = {
        "method": method.name,
        "metric": metric,
        "compressed": compressed,
        "precision": precision,
        **asdict(options),
    }
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
        results={"map": results["map"], "map_without_box_regression": results["map_without_box_regression"]},
    )
    return RunEvaluation(
        evaluation, without, detections_path, results_path, plot_path, seconds_per_image, timing
    )


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


def image_paths(arguments: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """The images that ``rcnn detect``'s arguments name: files as given, a folder's images (sorted; with
    ``recursive`` those of its subfolders too), and glob patterns (``photos/*.jpg``, ``**`` for
    subfolders) for shells that do not expand them."""
    paths: list[Path] = []
    for argument in map(str, arguments):
        if Path(argument).is_dir():
            folder = Path(argument)
            listed = folder.rglob("*") if recursive else folder.iterdir()
            found = sorted(p for p in listed if is_image_name(p) and p.is_file())
            if not found:
                where = (
                    "this folder or its subfolders" if recursive else "this folder (--recursive: and below)"
                )
                raise UserError(f"{argument}: no images (.jpg, .png, ...) in {where}")
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
    precision: str = "fp32",
    skip_bad: bool = False,
    save_json: Path | None = None,
    grid: Path | None = None,
    recursive: bool = False,
    progress: Progress = SILENT,
) -> list[DetectedImage]:
    """Selective search, then the method's detector on each image of ``images`` (files, folders, their
    subfolders with ``recursive``, and glob patterns: ``image_paths``); writes ``OUT/<stem>.png`` (the
    annotated image) and ``OUT/<stem>.json`` (the exchange format), with ``save_json`` every image's
    detections in one exchange-format file, and with ``grid`` the annotated images side by side in one
    PNG (both checked to be files before any work). Detections scoring below ``score_thresh`` (default:
    the method's display threshold) are dropped. An unreadable image is a
    UserError naming it, or with ``skip_bad`` is skipped, counted and listed in a warning.

    Selective search runs in worker processes ahead of the network (``propose_images``), with
    ``proposal_options`` (default: the settings of the run's own proposals, ``searched_with``): each image
    is detected as soon as its proposals arrive. Results come back in the order of ``paths``.

    Each image's detections are kept in parts as they come (``OUT/.detect.parts/``), so a rerun of an
    interrupted call with the same images and settings detects only the rest; under ``torchrun`` each
    process takes its shard of the images (``stages.sharding``) and rank 0 writes ``save_json`` and
    ``grid``.
    """
    proposal_options = proposal_options or searched_with(run)
    out = Path(out) if out is not None else method.files(run).detect
    for target, example in ((save_json, "detections.json"), (grid, "grid.png")):
        if target is not None:  # refused now, not after the work
            file_target(target, example)
    paths = image_paths(images, recursive)
    first_of: dict[str, Path] = {}
    for path in paths:
        if first_of.setdefault(path.stem, path) != path:
            raise UserError(
                f"{first_of[path.stem]} and {path} share the file name stem {path.stem!r}, which names "
                f"their outputs in {out}; detect them apart (say with another --out)"
            )
    stems, paths = list(first_of), list(first_of.values())
    ensure_folder(out)  # a file there is refused now too
    threshold = method.display_threshold if score_thresh is None else score_thresh
    options = replace(method.test_options, score_thresh=threshold)
    with processes(device) as procs:
        detector = method.detector(run, options, procs.device, compressed=compressed, precision=precision)
        stamp = {
            "method": method.name,
            "compressed": compressed,
            "precision": precision,
            "options": asdict(options),
            "proposals": asdict(replace(proposal_options, workers=0)),
            "inputs": [describe_input(path) for path in method.detector_inputs(run, compressed=compressed)],
            "images": [str(path.resolve()) for path in paths],
        }
        parts = ImageParts(parts_of(out / "detect"), stamp, procs)
        finished = parts.image_ids()
        mine = [job for job in spread(list(zip(stems, paths, strict=True)), procs) if job[0] not in finished]
        searching = replace(proposal_options, workers=proposal_options.workers or procs.cores)
        label = f"detecting ({method.name})"
        board = parts.folder / "progress"
        with shared_task(progress, procs, board, label, len(paths), "img", len(finished)) as advance:
            try:
                skipped = _detect_each(mine, detector, out, searching, skip_bad, parts, advance)
            finally:
                parts.flush()
        gathered = procs.gather(skipped)
        found = parts.load()
        procs.wait()  # every process has read the parts
        if procs.writer:
            parts.remove()
    path_of = dict(zip(stems, paths, strict=True))
    found_by_stem = {
        stem: DetectedImage(
            path_of[stem],
            ImageDetections(arrays["boxes"], arrays["scores"], arrays["labels"]),
            detector.classes,
            int(arrays["proposals"][0]),
            out / f"{stem}.png",
            out / f"{stem}.json",
            float(arrays["seconds"][0]),
        )
        for stem, arrays in found.items()
    }
    skipped = [problem for problems in gathered for problem in problems]
    if skipped:
        log.warning("skipped %d unreadable images (--skip-bad): %s", len(skipped), "; ".join(skipped))
    results = [found_by_stem[stem] for stem in stems if stem in found_by_stem]
    if save_json is not None and procs.writer:
        detected = [r.path.stem for r in results]
        write_detections(
            save_json, detections_of(detected, [r.detections for r in results], detector.classes)
        )
    if grid is not None and procs.writer:
        write_grid(grid, [r.picture for r in results])
    return results


def _detect_each(
    images: list[tuple[str, Path]],
    detector: ImageDetector,
    out: Path,
    proposal_options: ProposalOptions,
    skip_bad: bool,
    parts: ImageParts,
    advance: Advance,
) -> list[str]:
    """``detect_images`` on this process's ``images`` (stem, path): each image's pictures written and
    its detections added to ``parts``; returns the problems of the unreadable images skipped."""
    skipped: list[str] = []
    path_of = dict(images)
    for stem, boxes, problem in propose_images(images, proposal_options):
        started = time.perf_counter()
        path = path_of[stem]
        try:
            if boxes is None:
                raise UserError(problem or f"{path}: selective search failed")
            image = read_image(path)
        except UserError as exc:
            if not skip_bad:
                raise UserError(f"{exc} (--skip-bad skips unreadable images)") from None
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
        drawn = draw_detections(image, found.boxes, found.labels, found.scores, detector.classes)
        write_png(out / f"{stem}.png", drawn)
        write_detections(out / f"{stem}.json", detections_of([stem], [found], detector.classes))
        seconds = time.perf_counter() - started
        parts.add(
            stem,
            {
                "boxes": found.boxes,
                "scores": found.scores,
                "labels": found.labels,
                "proposals": np.array([len(boxes)]),
                "seconds": np.array([seconds]),
            },
        )
        advance()
    return skipped
