"""``rcnn detect``: a method on any image a user has, its proposals made on the spot; each image's
detections drawn and written. The method supplies its detector (``stages.methods``).
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

from stages.core.atomic import ensure_folder, file_target
from stages.core.errors import UserError
from stages.core.progress import SILENT, Advance, Progress
from stages.datasets.image_files import is_image_name
from stages.detections.draw import draw_detections, write_grid, write_png
from stages.detections.files import detections_of, write_detections
from stages.detections.postprocess import ImageDetections
from stages.methods.base import PLAIN, ImageDetector, Method, Variant
from stages.networks.inputs import read_image
from stages.proposals.sources import Proposer, run_proposer
from stages.runs.layout import RunLayout, describe_input, parts_of
from stages.runs.processes import ImageParts, ImageShard, processes

log = logging.getLogger("rcnn")


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
    proposer: Proposer | None = None,
    device: str = "auto",
    variant: Variant = PLAIN,
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

    The proposals come from ``proposer`` (default: the method's own, ``Method.proposer``, else the
    run's: selective search as the run's proposals were searched, ``run_proposer``), in worker processes
    ahead of the network: each image is detected as soon as its proposals arrive. Results come back in
    the order of ``paths``.

    Each image's detections are kept in parts as they come (``OUT/.detect.parts/``), so a rerun of an
    interrupted call with the same images and settings detects only the rest; under ``torchrun`` each
    process takes its shard of the images (``stages.runs.processes``) and rank 0 writes ``save_json`` and
    ``grid``.
    """
    proposer = proposer or method.proposer(run) or run_proposer(run)
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
        detector = method.detector(run, options, procs.device, variant=variant, precision=precision)
        stamp = {
            "method": method.name,
            "compressed": variant.compressed,
            "precision": precision,
            "options": asdict(options),
            "proposals": {"source": proposer.source, **proposer.settings()},
            "inputs": [describe_input(path) for path in method.detector_inputs(run, variant=variant)],
            "images": [str(path.resolve()) for path in paths],
        }
        jobs = list(zip(stems, paths, strict=True))
        shard = ImageShard(procs, parts_of(out / "detect"), stamp, jobs, _stem)
        with shard.working(progress, f"detecting ({method.name})") as advance:
            skipped = _detect_each(
                shard.todo, detector, out, proposer, procs.cores, skip_bad, shard.parts, advance
            )
        gathered = procs.gather(skipped)
        found = shard.parts.load()
        procs.wait()  # every process has read the parts
        if procs.writer:
            shard.parts.remove()
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


def _stem(job: tuple[str, Path]) -> str:
    return job[0]


def _detect_each(
    images: list[tuple[str, Path]],
    detector: ImageDetector,
    out: Path,
    proposer: Proposer,
    workers: int,
    skip_bad: bool,
    parts: ImageParts,
    advance: Advance,
) -> list[str]:
    """``detect_images`` on this process's ``images`` (stem, path): each image's pictures written and
    its detections added to ``parts``; returns the problems of the unreadable images skipped."""
    skipped: list[str] = []
    path_of = dict(images)
    for stem, boxes, problem in proposer.propose_images(images, workers):
        started = time.perf_counter()
        path = path_of[stem]
        try:
            if problem is not None:
                raise UserError(problem)
            image = read_image(path)
        except UserError as exc:
            if not skip_bad:
                raise UserError(f"{exc} (--skip-bad skips unreadable images)") from None
            skipped.append(str(exc))
            advance()
            continue
        if boxes is not None and len(boxes) == 0:
            log.warning("%s: no proposals (%s), so no detections", path, proposer.source)
        found, proposals = detector.find(image, boxes)
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
                "proposals": np.array([proposals]),
                "seconds": np.array([seconds]),
            },
        )
        advance()
    return skipped
