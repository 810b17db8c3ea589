"""Stage `propose`: selective-search boxes for every image of a split, or imported precomputed ones.

Artifact ``RUN/proposals/<split>.h5`` (schema in docs/run-folder.md): boxes in the toolkit's convention
(``stages.core.geometry``), float32, rows of image i at ``boxes[offsets[i]:offsets[i + 1]]`` in selective
search's ranking. Work is saved in parts as it goes (``RUN/proposals/.<split>.parts/``), each written
atomically, so a rerun after an interruption computes only the missing images; the final file is written
to a temporary name and renamed, so a killed run never leaves a corrupt one. Under ``torchrun`` the
processes share the images (``stages.runs.processes``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages.core.atomic import atomic_path
from stages.core.errors import UserError
from stages.core.geometry import clip_boxes, first_unique, nonempty, xywh_to_boxes
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset, ImageRecord
from stages.proposals import selective_search
from stages.proposals.options import ProposalOptions
from stages.proposals.recall import recall_curves
from stages.runs.layout import RunLayout, read_manifest, require_artifact, write_manifest
from stages.runs.processes import SINGLE, ImageShard, Processes, processes

log = logging.getLogger("rcnn")

FORMAT = "rcnn.proposals"
SCHEMA_VERSION = 1
BOX_CONVENTION = "x1,y1,x2,y2; 0-based continuous pixels (pixel i spans [i, i+1)); VOC xmin-1, xmax"


@dataclass(frozen=True)
class ProposalSummary:
    """What `propose` did: counts, recall of non-difficult objects (None without annotations), timings."""

    path: Path
    images: int
    computed: int
    boxes_per_image: float
    recall: dict[str, float] | None
    seconds: float
    images_per_second: float
    skipped: list[str] = field(default_factory=list)

    @property
    def headline(self) -> str:
        """One line: images, boxes an image and, for an annotated split, the recall at IoU 0.5."""
        found = f", recall {self.recall['0.5']:.3f} at IoU 0.5" if self.recall else ""
        return f"{self.images} images, {self.boxes_per_image:.0f} boxes an image{found}"


def to_boxes(rects: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """Selective search's (x, y, w, h) rectangles -> (K, 4) float32 boxes in original-image pixels,
    ranked, unique, clipped to the image of ``size`` (height, width)."""
    rects = np.asarray(rects).reshape(-1, 4)
    return clip_boxes(xywh_to_boxes(rects[first_unique(rects)]) / scale, *size)


def filter_boxes(boxes: np.ndarray, min_size: int, max_boxes: int) -> np.ndarray:
    """Drop boxes narrower or shorter than ``min_size`` and duplicates; keep the first ``max_boxes``."""
    keep = (
        nonempty(boxes)
        & ((boxes[:, 2] - boxes[:, 0]) >= min_size)
        & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    )
    boxes = boxes[keep]
    return boxes[first_unique(boxes)][:max_boxes]


def search_many(jobs: Sequence[tuple[str, str, str, int, int]], workers: int, background: bool = False):
    """Yield (image_id, boxes or None, problem or None) for every job, in completion order.

    A job is (image_id, path, mode, max_side, seed); ``workers`` > 1, or ``background``, runs them in
    spawned processes (so that the caller's own work overlaps them).
    """
    spawned = workers > 1 or background
    pool = multiprocessing.get_context("spawn").Pool(max(1, workers)) if spawned else None
    with pool or contextlib.nullcontext():
        results = (
            pool.imap_unordered(selective_search.worker, jobs) if pool else map(selective_search.worker, jobs)
        )
        for image_id, found, problem in results:
            yield image_id, None if found is None else to_boxes(*found), problem


def write_proposals(
    target: Path, images: Sequence[ImageRecord], boxes: dict[str, np.ndarray], attrs: dict
) -> None:
    """Write the proposals HDF5 file for ``images`` (split order) atomically."""
    counts = [len(boxes[r.image_id]) for r in images]
    with atomic_path(target) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update(
            {"format": FORMAT, "schema_version": SCHEMA_VERSION, "box_convention": BOX_CONVENTION, **attrs}
        )
        h5.create_dataset("image_ids", data=[r.image_id for r in images], dtype=h5py.string_dtype("utf-8"))
        h5.create_dataset(
            "image_sizes", data=np.array([[r.height, r.width] for r in images], dtype=np.int32).reshape(-1, 2)
        )
        h5.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        all_boxes = [boxes[r.image_id] for r in images]
        h5.create_dataset(
            "boxes",
            data=np.concatenate(all_boxes).astype(np.float32).reshape(-1, 4),
            chunks=True if sum(counts) else None,
            compression="gzip",
        )


def read_proposals(path: Path) -> dict[str, np.ndarray]:
    """Image id -> (K, 4) float32 boxes from a proposals file; UserError if it is not one."""
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != FORMAT:
                raise UserError(f"{path}: not a proposals file (format {h5.attrs.get('format')!r})")
            ids = h5["image_ids"].asstr()[:]
            offsets, boxes = h5["offsets"][:], h5["boxes"][:]
    except (OSError, KeyError) as exc:
        raise UserError(f"{path}: unreadable proposals file ({exc})") from None
    return {image_id: boxes[offsets[i] : offsets[i + 1]] for i, image_id in enumerate(ids)}


def proposals_dataset(path: Path) -> tuple[Path, str]:
    """(root, layout) of the dataset a proposals file was made from."""
    try:
        with h5py.File(path, "r") as h5:
            return Path(str(h5.attrs["dataset_root"])), str(h5.attrs.get("dataset_format", "voc"))
    except (OSError, KeyError) as exc:
        raise UserError(f"{path}: unreadable proposals file ({exc})") from None


def searched_with(run: RunLayout) -> ProposalOptions:
    """The selective-search settings of the run's proposals (``rcnn detect`` proposes as they were), when
    every searched split agrees; the defaults otherwise (no proposals, or splits searched differently)."""
    found = set()
    for path in sorted((run.shared / "proposals").glob("*.h5")):
        options = (read_manifest(path) or {}).get("options", {})
        if options.get("source") == "selective_search":
            found.add(
                tuple((name, options.get(name)) for name in ("mode", "max_boxes", "min_size", "max_side"))
            )
    if len(found) != 1:
        return ProposalOptions()
    return ProposalOptions(**dict(found.pop()))


def load_proposals(run: RunLayout, dataset: Dataset) -> tuple[Dataset, dict[str, np.ndarray]]:
    """The split's proposals, checked to cover every image of ``dataset``, and the split less the images
    that ``propose --skip-bad`` skipped as unreadable (with a warning that lists them)."""
    path = run.proposals(dataset.split)
    manifest = require_artifact(path, run.command_for(path, dataset.root))
    proposals = read_proposals(path)
    skipped = manifest.get("results", {}).get("skipped", {})
    left_out = {r.image_id: skipped[r.image_id] for r in dataset.images if r.image_id in skipped}
    if left_out:
        log.warning(
            "leaving out %d images that propose skipped (--skip-bad): %s",
            len(left_out),
            "; ".join(list(left_out.values())[:5]) + (" ..." if len(left_out) > 5 else ""),
        )
        dataset = dataset.without(left_out)
    missing = [r.image_id for r in dataset.images if r.image_id not in proposals]
    if missing:
        raise UserError(
            f"{path}: no proposals for {len(missing)} images (first: {missing[0]}); rerun propose"
        )
    if not dataset.images:
        raise UserError(f"{path}: every image of split {dataset.split!r} was skipped as unreadable")
    return dataset, proposals


LOW_RECALL = 0.7
"""Below this share of the objects found at IoU 0.5, proposals are the detectors' limit: say so."""
LOW_RECALL_DOCS = 'docs/your-own-data.md, "Large images, small objects"'
"""Where the docs say what to do about it."""


def low_recall_advice(
    dataset: Dataset, options: ProposalOptions, recall: float, per_image: float, source: str
) -> str:
    """What to say when a split's proposals find few of its objects: the recall, why it matters, and
    the settings worth changing for this split (its image and object sizes), as options of ``rcnn
    propose`` and keys of a config's ``[propose]``."""
    said = (
        f"the proposals of split {dataset.split!r} find {recall:.1%} of its objects at IoU 0.5 "
        f"(below {LOW_RECALL:.0%}): no detector finds what its proposals miss"
    )
    if source != "selective_search":
        return said + "; import better proposals, or make them with selective search (rcnn propose)"
    tips = []
    largest = max(max(r.height, r.width) for r in dataset.images)
    objects = np.concatenate([r.boxes[~r.difficult] for r in dataset.images])
    smallest_sides = np.minimum(objects[:, 2] - objects[:, 0], objects[:, 3] - objects[:, 1])
    if largest > options.max_side:
        shrunk = float(np.median(smallest_sides)) * options.max_side / largest
        tips.append(
            f"a larger max_side (images up to {largest} px are searched at {options.max_side}, where "
            f"the median object is {shrunk:.0f} px across): --max-side {largest}"
        )
    if options.mode != "quality":
        tips.append("selective search's quality mode (more strategies, more boxes): --mode quality")
    if per_image >= 0.9 * options.max_boxes:
        tips.append(f"more boxes than {options.max_boxes} an image: --max-boxes {2 * options.max_boxes}")
    if float(np.mean(smallest_sides < options.min_size)) > 0.1:
        tips.append(f"a min_size below {options.min_size} px, the side of many objects: --min-size 4")
    if not tips:
        return f"{said}; its objects may be too small or too crowded for selective search"
    return (
        f"{said}. Try {'; '.join(tips)} (in a config: the [propose] keys of the same names). Larger "
        f"searches take longer: {LOW_RECALL_DOCS}"
    )


@dataclass(frozen=True)
class _Found:
    """The boxes a stage found (image id -> (K, 4)), the problems it skipped, and how many images it
    computed in how many seconds."""

    boxes: dict[str, np.ndarray]
    skipped: dict[str, str]
    computed: int
    seconds: float


def _image_id(record: ImageRecord) -> str:
    return record.image_id


Proposed = tuple[str, np.ndarray | None, str | None]
"""One image's proposals: (image id, (K, 4) float32 boxes, or None where the detector makes its own or a
problem stopped it; the problem or None)."""
Maker = Callable[[list[ImageRecord], Processes], tuple[str, Iterator[Proposed]]]
"""``make(records, procs) -> (description, proposals)``: a proposer's work on this process's images, with
what the progress line calls it; proposals come as (image id, boxes or None, problem or None), in any
order."""


def propose(
    dataset: Dataset,
    run: RunLayout,
    options: ProposalOptions = ProposalOptions(),
    skip_bad: bool = False,
    progress: Progress = SILENT,
) -> ProposalSummary:
    """Run selective search on every image of ``dataset`` and write the run's proposals of its split, with
    ``procs.cores`` processes (``options.workers`` if given) on each process (``propose_with``)."""

    def search(records: list[ImageRecord], procs: Processes):
        workers = min(options.workers or procs.cores, max(1, len(records)))
        label = f"{procs.world_size} x {workers}" if procs.world_size > 1 else str(workers)
        pairs = [(r.image_id, r.path) for r in records]
        return f"selective search ({label} workers)", search_records(pairs, options, workers)

    def advice(recall: float, per_image: float) -> str:
        return low_recall_advice(dataset, options, recall, per_image, "selective_search")

    return propose_with(
        dataset,
        run,
        search,
        source="selective_search",
        settings=asdict(options),
        advice=advice,
        skip_bad=skip_bad,
        progress=progress,
    )


def search_records(
    images: Sequence[tuple[str, Path]], options: ProposalOptions, workers: int, background: bool = False
) -> Iterator[Proposed]:
    """Selective search on (image id, path) pairs with ``workers`` processes (one: in this process, unless
    ``background``), each image's boxes filtered by ``options`` (``filter_boxes``), in completion order."""
    jobs = [(image_id, str(path), options.mode, options.max_side, options.seed) for image_id, path in images]
    for image_id, boxes, problem in search_many(jobs, workers, background):
        yield (
            image_id,
            None if boxes is None else filter_boxes(boxes, options.min_size, options.max_boxes),
            problem,
        )


def propose_with(
    dataset: Dataset,
    run: RunLayout,
    make: Maker,
    *,
    source: str,
    settings: Mapping[str, Any],
    advice: Callable[[float, float], str],
    device: str = "cpu",
    skip_bad: bool = False,
    progress: Progress = SILENT,
) -> ProposalSummary:
    """Write the run's proposals of ``dataset``'s split, made by ``make`` (``Maker``) from ``source`` with
    ``settings``; ``advice(recall, boxes an image)`` says what to do when they find few objects.

    Finished images are kept in parts (``RUN/proposals/.<split>.parts/``) as they come, so a rerun with the
    same settings makes only the missing ones. Under ``torchrun`` each process makes its own shard of the
    images on ``device`` (``stages.runs.processes``), and rank 0 writes the file one process would write.
    An unreadable image is a UserError naming it, or with ``skip_bad`` is left out and listed.
    """
    started = time.perf_counter()
    with processes(device) as procs:
        stamp = {**settings, "source": source, "workers": None, "root": str(dataset.root)}  # any workers
        shard = ImageShard(procs, run.proposal_parts(dataset.split), stamp, dataset.images, _image_id)
        skipped: dict[str, str] = {}
        description, proposed = make(shard.todo, procs)
        made_started = time.perf_counter()  # after what ``make`` loads (a network)
        with shard.working(progress, description) as advance:
            for image_id, boxes, problem in proposed:
                if problem is not None or boxes is None:
                    if not skip_bad:
                        raise UserError(problem or f"{image_id}: no proposals ({source})")
                    skipped[image_id] = problem or "no proposals"
                else:
                    shard.parts.add(image_id, {"boxes": boxes})
                advance()
        outcomes = procs.gather((skipped, len(shard.todo) - len(skipped), time.perf_counter() - made_started))
        summary: ProposalSummary | None = None
        if procs.writer:
            merged = {image_id: arrays["boxes"] for image_id, arrays in shard.parts.load().items()}
            found_all = _Found(
                merged,
                {k: v for problems, _, _ in outcomes for k, v in problems.items()},
                sum(computed for _, computed, _ in outcomes),
                max(seconds for _, _, seconds in outcomes),
            )
            summary = _write_split(
                run, dataset, found_all, started, source=source, settings=settings, advice=advice, procs=procs
            )
            shard.parts.remove()
        return procs.from_writer(summary)


def _write_split(
    run: RunLayout,
    dataset: Dataset,
    found: _Found,
    started: float,
    *,
    source: str,
    settings: Mapping[str, Any],
    advice: Callable[[float, float], str],
    inputs: Sequence[Path] = (),
    procs: Processes = SINGLE,
) -> ProposalSummary:
    """Write the proposals file of the images with boxes, in split order, and its manifest, which records
    the ``source`` and its ``settings``."""
    target = run.proposals(dataset.split)
    if found.skipped:
        log.warning(
            "skipped %d unreadable images (--skip-bad): %s",
            len(found.skipped),
            "; ".join(found.skipped.values()),
        )
    kept = [r for r in dataset.images if r.image_id in found.boxes]
    if not kept:
        raise UserError(f"{target}: no image of split {dataset.split!r} could be searched")
    empty = [r.image_id for r in kept if len(found.boxes[r.image_id]) == 0]
    if empty:
        log.warning(
            "%d images have no proposals (too small for a %s-pixel box?), so no detections: %s",
            len(empty),
            settings.get("min_size", "minimum"),
            ", ".join(empty[:10]) + (", ..." if len(empty) > 10 else ""),
        )
    curves = recall_curves(dataset, found.boxes) if dataset.annotated else None
    recall = None if curves is None else {f"{iou:g}": curves.at(iou) for iou in (0.5, 0.7)}
    per_image = float(np.mean([len(found.boxes[r.image_id]) for r in kept]))
    if recall and recall["0.5"] < LOW_RECALL:
        log.warning(advice(recall["0.5"], per_image))
    write_proposals(
        target,
        kept,
        found.boxes,
        {
            "split": dataset.split,
            "source": source,
            "dataset_root": str(dataset.root),
            "dataset_format": dataset.format,
            **{k: v for k, v in settings.items() if k != "workers"},
        },
    )
    rate = found.computed / found.seconds if found.computed and found.seconds > 0 else 0.0
    seconds = time.perf_counter() - started
    results = {
        "images": len(kept),
        "computed": found.computed,
        "boxes_per_image": round(per_image, 1),
        "recall": recall,
        "recall_curves": None if curves is None else curves.to_json(),
        "images_per_second": round(rate, 3),
        "skipped": {**dataset.skipped, **found.skipped},
        "without_proposals": empty,
        "processes": procs.world_size,
        "dataset_root": str(dataset.root),
        "dataset_format": dataset.format,
    }
    write_manifest(
        target,
        stage="propose",
        options={**settings, "source": source},
        inputs=[*([dataset.source] if dataset.source else []), *inputs],
        seconds=seconds,
        results=results,
    )
    return ProposalSummary(
        target, len(kept), found.computed, per_image, recall, seconds, rate, list(found.skipped.values())
    )


def import_mat(
    dataset: Dataset, run: RunLayout, mat_file: Path, options: ProposalOptions = ProposalOptions()
) -> ProposalSummary:
    """Import precomputed proposals from a .mat file of the original Fast R-CNN release.

    The file holds a cell array ``boxes`` (one (K, 4) matrix an image, rows (y1, x1, y2, x2), 1-based
    inclusive) and, optionally, ``images`` (the ids, else the split's order is assumed). Boxes are
    converted to the toolkit's convention, clipped, filtered like searched ones and written as usual.
    """
    started = time.perf_counter()
    ids, matrices = _read_mat(Path(mat_file))
    if ids is None:
        if len(matrices) != len(dataset):
            raise UserError(
                f"{mat_file}: {len(matrices)} box matrices but split {dataset.split!r} "
                f"has {len(dataset)} images, and the file names no images"
            )
        ids = [r.image_id for r in dataset.images]
    if len(ids) != len(matrices):
        raise UserError(f"{mat_file}: {len(ids)} image names but {len(matrices)} box matrices")
    by_id = dict(zip(ids, matrices, strict=True))
    missing = [r.image_id for r in dataset.images if r.image_id not in by_id]
    if missing:
        raise UserError(
            f"{mat_file}: no boxes for {len(missing)} images of split {dataset.split!r} (first: {missing[0]})"
        )
    boxes = {}
    for record in dataset.images:
        matrix = np.asarray(by_id[record.image_id], dtype=np.float32).reshape(-1, 4)
        xyxy = matrix[:, [1, 0, 3, 2]]
        xyxy[:, :2] -= 1.0  # 1-based inclusive -> 0-based continuous
        clipped = clip_boxes(xyxy, record.height, record.width)
        boxes[record.image_id] = filter_boxes(clipped, options.min_size, options.max_boxes)
    found = _Found(boxes, {}, computed=0, seconds=0.0)

    def advice(recall: float, per_image: float) -> str:
        return low_recall_advice(dataset, options, recall, per_image, "import")

    settings = {k: v for k, v in asdict(options).items() if k != "workers"}
    return _write_split(
        run,
        dataset,
        found,
        started,
        source="import",
        settings=settings,
        advice=advice,
        inputs=[Path(mat_file)],
    )


def _read_mat(path: Path) -> tuple[list[str] | None, list[np.ndarray]]:
    """(ids or None, box matrices) from a MATLAB v5 file, or a v7.3 (HDF5) one."""
    import scipy.io

    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the .mat file of the split's boxes")
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if h5py.is_hdf5(path):  # MATLAB v7.3 files are HDF5
        return _read_mat73(path)
    try:
        content = scipy.io.loadmat(str(path))
    except (NotImplementedError, ValueError, OSError, TypeError, scipy.io.matlab.MatReadError) as exc:
        raise UserError(f"{path}: unreadable .mat file ({exc})") from None
    if "boxes" not in content:
        raise UserError(f"{path}: no variable 'boxes' (found: {', '.join(_public(content))})")
    matrices = [np.asarray(m) for m in np.asarray(content["boxes"], dtype=object).ravel()]
    ids = None
    if "images" in content:
        ids = [
            str(np.asarray(i).ravel()[0]).strip() for i in np.asarray(content["images"], dtype=object).ravel()
        ]
    return ids, matrices


def _read_mat73(path: Path) -> tuple[list[str] | None, list[np.ndarray]]:
    try:
        with h5py.File(path, "r") as h5:
            if "boxes" not in h5:
                raise UserError(f"{path}: no variable 'boxes' (found: {', '.join(h5)})")
            # MATLAB stores column-major: each referenced matrix reads back transposed.
            matrices = [np.asarray(h5[ref]).T for ref in h5["boxes"][()].ravel()]
            ids = None
            if "images" in h5:
                ids = [
                    "".join(chr(c) for c in np.asarray(h5[ref]).ravel()) for ref in h5["images"][()].ravel()
                ]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: unreadable .mat file ({exc})") from None
    return ids, matrices


def _public(content: dict) -> list[str]:
    return [k for k in content if not k.startswith("__")]


def propose_images(
    images: Sequence[tuple[str, Path]], options: ProposalOptions = ProposalOptions()
) -> Iterator[Proposed]:
    """Selective search on (image id, path) pairs for ``rcnn detect``: (image id, (K, 4) float32 boxes or
    None, problem or None), in completion order. Several images are searched by ``options.workers``
    spawned processes (default: one a core; the caller's network work is the smaller share), ahead of
    the caller; one image is searched here."""
    workers = min(options.workers or os.cpu_count() or 1, len(images))
    return search_records(images, options, workers, background=len(images) > 1)
