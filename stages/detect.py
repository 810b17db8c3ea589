"""From region scores to detections, and its two users: ``rcnn evaluate --run`` (a split) and
``rcnn detect`` (any image a user has).

R-CNN's and SPP-net's test procedure (R-CNN section 2.2 and the release): per class, the 100 best-scoring
proposals, greedy NMS at IoU 0.3, then box regression of the survivors and NMS again; on a split, the
scores come from the feature cache. Fast R-CNN's (section 3): every proposal's class-specific box first,
then per class the 100 best, NMS at 0.3, and at most 100 detections an image; on a split, the network runs
on every image. NMS is torchvision's ``batched_nms``: a box is suppressed when its IoU with a kept,
higher-scoring box of its class is > 0.3.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stages.atomic import write_json
from stages.bbox import BoxRegressors, load_bbox
from stages.detections import Detections, write_detections
from stages.draw import draw_detections, write_png
from stages.errors import UserError
from stages.evaluation import Evaluation, evaluate, plot_pr_curves
from stages.features import FeatureCache, features_path
from stages.geometry import clip_boxes, decode_boxes
from stages.images import pick_device, read_image
from stages.progress import SILENT, Progress
from stages.proposals import ProposalOptions, propose_image
from stages.rcnn import RegionExtractor, load_finetuned
from stages.runs import method_path, proposals_path, write_manifest
from stages.svm import SvmModel, load_svms
from stages.voc import Dataset

log = logging.getLogger("rcnn")


@dataclass(frozen=True)
class DetectOptions:
    """The test settings; ``score_thresh`` drops weaker detections (None keeps all), ``per_image`` keeps
    the best of an image (None: all; Fast R-CNN: 100)."""

    per_class: int = 100
    nms_iou: float = 0.3
    score_thresh: float | None = None
    per_image: int | None = None


FAST_RCNN_TEST = DetectOptions(per_image=100)


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections: boxes (K, 4), scores (K,), labels (K,) in 1..C."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def nms_keep(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by per-class greedy NMS, best score first."""
    from torchvision.ops import batched_nms

    return batched_nms(
        torch.as_tensor(boxes, dtype=torch.float32),
        torch.as_tensor(scores, dtype=torch.float32),
        torch.as_tensor(labels, dtype=torch.int64),
        iou,
    ).numpy()


def detect_from_scores(
    boxes: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int],
    options: DetectOptions = DetectOptions(),
    regress: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[ImageDetections, ImageDetections | None]:
    """(N, 4) proposals and their (N, C) class scores -> detections without and with box regression.

    ``regress(rows (K,), labels (K,)) -> (K, 4)``: regression deltas of proposal rows for classes 1..C;
    without it the second result is None. ``image_size`` is (height, width), for clipping.
    """
    rows, labels, kept_scores = _best_per_class(scores, options)
    keep = nms_keep(boxes[rows], kept_scores, labels, options.nms_iou)
    rows, labels, kept_scores = rows[keep], labels[keep], kept_scores[keep]
    plain = ImageDetections(boxes[rows], kept_scores, labels)
    if regress is None:
        return plain, None
    moved = decode_boxes(torch.as_tensor(boxes[rows]), torch.as_tensor(regress(rows, labels))).numpy()
    moved = clip_boxes(moved, *image_size)
    again = nms_keep(moved, kept_scores, labels, options.nms_iou)
    return plain, ImageDetections(moved[again], kept_scores[again], labels[again])


def _best_per_class(scores: np.ndarray, options: DetectOptions) -> tuple[np.ndarray, ...]:
    """(N, C) scores -> rows, labels (1..C) and scores of each class's ``per_class`` best rows that pass
    ``score_thresh``."""
    num, classes = scores.shape
    k = min(options.per_class, num)
    rows = np.argsort(-scores, axis=0, kind="stable")[:k].T.reshape(-1)
    labels = np.repeat(np.arange(1, classes + 1), k)
    kept_scores = scores[rows, labels - 1]
    if options.score_thresh is not None:
        above = kept_scores >= options.score_thresh
        rows, labels, kept_scores = rows[above], labels[above], kept_scores[above]
    return rows, labels, kept_scores


def detect_from_class_boxes(
    class_boxes: np.ndarray, scores: np.ndarray, options: DetectOptions = FAST_RCNN_TEST
) -> ImageDetections:
    """(N, C, 4) class-specific boxes and (N, C) scores -> detections: each class's best boxes, NMS, then
    the ``per_image`` best overall (Fast R-CNN's test)."""
    rows, labels, kept_scores = _best_per_class(scores, options)
    boxes = class_boxes[rows, labels - 1].reshape(-1, 4)
    keep = nms_keep(boxes, kept_scores, labels, options.nms_iou)[: options.per_image]
    return ImageDetections(boxes[keep], kept_scores[keep], labels[keep])


def _regressor(bbox: BoxRegressors | None, features: np.ndarray | None):
    if bbox is None or features is None:
        return None
    return lambda rows, labels: bbox.deltas(features[rows], labels)


def _check_classes(svm: SvmModel, classes: Sequence[str], where: Path) -> None:
    if tuple(svm.classes) != tuple(classes):
        raise UserError(
            f"{where}: trained on classes {', '.join(svm.classes)}, not {', '.join(classes)}; "
            "pass --classes or retrain"
        )


def _to_columns(image_ids: list[str], found: list[ImageDetections], classes: Sequence[str]) -> Detections:
    names = np.array(classes, dtype=object)
    counts = [len(d) for d in found]
    return Detections(
        np.repeat(np.array(image_ids, dtype=object), counts),
        names[np.concatenate([d.labels for d in found]).astype(np.int64) - 1] if found else names[:0],
        np.concatenate([d.scores for d in found]).astype(np.float64) if found else np.zeros(0),
        np.concatenate([d.boxes for d in found]).reshape(-1, 4) if found else np.zeros((0, 4), np.float32),
    )


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


@dataclass
class _SplitDetections:
    image_ids: list[str]
    plain: list[ImageDetections]
    regressed: list[ImageDetections | None]
    inputs: list[Path]
    timing: dict[str, float] | None = None


def evaluate_run(
    dataset: Dataset,
    run: Path,
    method: str,
    metric: str = "voc07",
    options: DetectOptions | None = None,
    *,
    compressed: bool = False,
    device: str = "auto",
    progress: Progress = SILENT,
) -> RunEvaluation:
    """Detect on the split and score the detections; write detections, results JSON and PR curves.

    rcnn, spp: from the split's feature cache. fast: the network on every image and its proposals
    (``compressed``: the truncated-SVD model of ``rcnn compress``, results beside as ``<split>.svd.*``).
    """
    started = time.perf_counter()
    if method == "fast":
        options = options or FAST_RCNN_TEST
        found = _detect_split_fast(dataset, run, options, compressed, pick_device(device), progress)
    else:
        options = options or DetectOptions()
        found = _detect_split_from_cache(dataset, run, method, options, progress)
    seconds_per_image = (time.perf_counter() - started) / max(1, len(found.image_ids))
    has_bbox = found.regressed[:1] != [None]
    primary = _to_columns(found.image_ids, found.regressed if has_bbox else found.plain, dataset.classes)
    evaluation = evaluate(dataset, primary, metric)
    without = (
        evaluate(dataset, _to_columns(found.image_ids, found.plain, dataset.classes), metric)
        if has_bbox
        else None
    )
    name = f"{dataset.split}.svd" if compressed else dataset.split
    detections_path = method_path(run, method, "detections", f"{name}.json")
    results_path = method_path(run, method, "eval", f"{name}.json")
    plot_path = results_path.with_name(f"{name}.pr.png")
    write_detections(detections_path, primary)
    results = {
        **evaluation.to_json(),
        "method": method,
        "compressed": compressed,
        "split": dataset.split,
        "box_regression": has_bbox,
        "map_without_box_regression": None if without is None else round(without.map, 6),
        "seconds_per_image": round(seconds_per_image, 4),
        **({f"{k}_seconds_per_image": round(v, 4) for k, v in found.timing.items()} if found.timing else {}),
    }
    write_json(results_path, results)
    plot_pr_curves(evaluation, plot_path)
    write_manifest(
        results_path,
        stage="evaluate",
        options={"method": method, "metric": metric, "compressed": compressed, **asdict(options)},
        inputs=found.inputs,
        seconds=time.perf_counter() - started,
        results={"map": results["map"], "map_without_box_regression": results["map_without_box_regression"]},
    )
    return RunEvaluation(
        evaluation, without, detections_path, results_path, plot_path, seconds_per_image, found.timing
    )


def _detect_split_from_cache(
    dataset: Dataset, run: Path, method: str, options: DetectOptions, progress: Progress
) -> _SplitDetections:
    svm = load_svms(run, method)
    _check_classes(svm, dataset.classes, method_path(run, method, "svm.npz"))
    bbox = load_bbox(run, method, dataset.classes)
    if bbox is None:
        log.warning("no box regressors in %s; evaluating without box regression", method_path(run, method))
    source = features_path(run, method, dataset.split)
    command = (
        f"rcnn extract-features --method {method} --data {dataset.root} --split {dataset.split} --run {run}"
    )
    sizes = {r.image_id: (r.height, r.width) for r in dataset.images}
    found = _SplitDetections([], [], [], [source, method_path(run, method, "svm.npz")])
    with FeatureCache(source, command) as cache:
        missing = sorted(set(sizes) - set(cache.image_ids))
        if missing:
            raise UserError(
                f"{source}: no features for {len(missing)} images (first: {missing[0]}); rerun {command}"
            )
        columns = ["boxes", "gt_labels", svm.feature, *([bbox.feature] if bbox else [])]
        with progress.task(f"detecting ({method})", len(cache.image_ids), "img") as advance:
            for image in cache.images(list(dict.fromkeys(columns))):
                if image.image_id not in sizes:
                    continue
                proposals = image.proposals
                boxes = image.columns["boxes"][proposals]
                scores = svm.scores(image.columns[svm.feature][proposals])
                pooled = image.columns[bbox.feature][proposals] if bbox else None
                plain, moved = detect_from_scores(
                    boxes, scores, sizes[image.image_id], options, _regressor(bbox, pooled)
                )
                found.image_ids.append(image.image_id)
                found.plain.append(plain)
                found.regressed.append(moved)
                advance()
    return found


def _detect_split_fast(
    dataset: Dataset,
    run: Path,
    options: DetectOptions,
    compressed: bool,
    device: torch.device,
    progress: Progress,
) -> _SplitDetections:
    from stages.fast import detector_for
    from stages.rcnn import load_proposals

    detector, _, model_path = detector_for(run, compressed, device, dataset.classes)
    proposals = load_proposals(run, dataset)
    found = _SplitDetections([], [], [], [model_path, proposals_path(run, dataset.split)])
    conv = fc = 0.0
    with progress.task(f"detecting (fast{' + SVD' if compressed else ''})", len(dataset), "img") as advance:
        for record in dataset.images:
            boxes = proposals[record.image_id]
            scores, class_boxes = detector(read_image(record.path), boxes)
            conv, fc = conv + detector.last_timing[0], fc + detector.last_timing[1]
            unmoved = np.broadcast_to(boxes[:, None], class_boxes.shape)
            found.image_ids.append(record.image_id)
            found.plain.append(detect_from_class_boxes(unmoved, scores, options))
            found.regressed.append(detect_from_class_boxes(class_boxes, scores, options))
            advance()
    found.timing = {"conv": conv / max(1, len(dataset)), "fc": fc / max(1, len(dataset))}
    return found


def _extractor(run: Path, method: str, classes: Sequence[str], device: torch.device):
    """The method's feature pipeline for new images: (image, boxes) -> {feature point: (N, D)}."""
    if method == "spp":
        from stages.sppnet import SppExtractor, load_spp

        model, _, _ = load_spp(run, classes)
        manifests = sorted(method_path(run, "spp", "features").glob("*.manifest.json"))
        if not manifests:
            raise UserError(
                f"{method_path(run, 'spp', 'features')}: no SPP-net features; run extract-features first"
            )
        options = json.loads(manifests[0].read_text())["options"]
        return SppExtractor(model.net, options["scales"], options["window_size"], device, with_fc7=True)
    model, _ = load_finetuned(run, tuple(classes), method)
    return RegionExtractor(model, device)


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


def detect_images(
    paths: Sequence[Path],
    run: Path,
    method: str,
    out: Path | None = None,
    options: DetectOptions | None = None,
    proposal_options: ProposalOptions = ProposalOptions(),
    device: str = "auto",
    compressed: bool = False,
    progress: Progress = SILENT,
) -> list[DetectedImage]:
    """Selective search, then the method's detector on each image; writes ``OUT/<stem>.png`` (the
    annotated image) and ``OUT/<stem>.json`` (the exchange format). ``options`` default to the method's
    test settings with a score threshold for display: SVM margin 0 (rcnn, spp), probability 0.5 (fast)."""
    out = Path(out) if out is not None else method_path(run, method, "detect")
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) != len(stems):
        raise UserError("two images share a file name stem; their outputs would collide (detect them apart)")
    classes, find = _image_detector(run, method, options, compressed, pick_device(device))
    results = []
    with progress.task(f"detecting ({method})", len(paths), "img") as advance:
        for path, stem in zip(paths, stems, strict=True):
            started = time.perf_counter()
            image = read_image(path)
            boxes = propose_image(stem, path, proposal_options)
            found = find(image, boxes)
            picture, json_path = out / f"{stem}.png", out / f"{stem}.json"
            write_png(picture, draw_detections(image, found.boxes, found.labels, found.scores, classes))
            write_detections(json_path, _to_columns([stem], [found], classes))
            seconds = time.perf_counter() - started
            results.append(DetectedImage(Path(path), found, classes, len(boxes), picture, json_path, seconds))
            advance()
    return results


def _image_detector(
    run: Path, method: str, options: DetectOptions | None, compressed: bool, device: torch.device
) -> tuple[tuple[str, ...], Callable[[np.ndarray, np.ndarray], ImageDetections]]:
    """The classes and the (image, proposals) -> detections function of a run's method."""
    if method == "fast":
        from stages.fast import detector_for

        detector, meta, _ = detector_for(run, compressed, device)
        fast_options = options or DetectOptions(score_thresh=0.5, per_image=100)

        def find_fast(image: np.ndarray, boxes: np.ndarray) -> ImageDetections:
            scores, class_boxes = detector(image, boxes)
            return detect_from_class_boxes(class_boxes, scores, fast_options)

        return tuple(meta["classes"]), find_fast
    svm = load_svms(run, method)
    bbox = load_bbox(run, method, svm.classes)
    extractor = _extractor(run, method, svm.classes, device)
    svm_options = options or DetectOptions(score_thresh=0.0)

    def find(image: np.ndarray, boxes: np.ndarray) -> ImageDetections:
        features = {k: v.numpy() for k, v in extractor(image, boxes).items()}
        plain, moved = detect_from_scores(
            boxes,
            svm.scores(features[svm.feature]),
            image.shape[:2],
            svm_options,
            _regressor(bbox, features[bbox.feature] if bbox else None),
        )
        return moved if moved is not None else plain

    return tuple(svm.classes), find
