"""From region scores to detections, and its two users: ``rcnn evaluate --run`` (a split's cached
features) and ``rcnn detect`` (any image a user has).

R-CNN's test procedure (section 2.2 and the release): per class, the 100 best-scoring proposals, greedy
NMS at IoU 0.3, then box regression of the survivors and NMS again. NMS is torchvision's ``batched_nms``:
a box is suppressed when its IoU with a kept, higher-scoring box of its class is > 0.3.
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
from stages.runs import method_path, write_manifest
from stages.svm import SvmModel, load_svms
from stages.voc import Dataset

log = logging.getLogger("rcnn")


@dataclass(frozen=True)
class DetectOptions:
    """R-CNN's test settings; ``score_thresh`` drops weaker detections (None keeps all)."""

    per_class: int = 100
    nms_iou: float = 0.3
    score_thresh: float | None = None


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
    num, classes = scores.shape
    k = min(options.per_class, num)
    rows = np.argsort(-scores, axis=0, kind="stable")[:k].T.reshape(-1)  # the k best rows of each class
    labels = np.repeat(np.arange(1, classes + 1), k)
    kept_scores = scores[rows, labels - 1]
    if options.score_thresh is not None:
        above = kept_scores >= options.score_thresh
        rows, labels, kept_scores = rows[above], labels[above], kept_scores[above]
    keep = nms_keep(boxes[rows], kept_scores, labels, options.nms_iou)
    rows, labels, kept_scores = rows[keep], labels[keep], kept_scores[keep]
    plain = ImageDetections(boxes[rows], kept_scores, labels)
    if regress is None:
        return plain, None
    moved = decode_boxes(torch.as_tensor(boxes[rows]), torch.as_tensor(regress(rows, labels))).numpy()
    moved = clip_boxes(moved, *image_size)
    again = nms_keep(moved, kept_scores, labels, options.nms_iou)
    return plain, ImageDetections(moved[again], kept_scores[again], labels[again])


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
    """A method's results on a split: with box regression (when trained) and without."""

    evaluation: Evaluation
    without_box_regression: Evaluation | None
    detections_path: Path
    results_path: Path
    plot_path: Path
    seconds_per_image: float


def evaluate_run(
    dataset: Dataset,
    run: Path,
    method: str,
    metric: str = "voc07",
    options: DetectOptions = DetectOptions(),
    progress: Progress = SILENT,
) -> RunEvaluation:
    """Detect on the split from its cached features; write detections, results JSON and PR curves."""
    started = time.perf_counter()
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
    image_ids, plain, regressed = [], [], []
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
                found, moved = detect_from_scores(
                    boxes, scores, sizes[image.image_id], options, _regressor(bbox, pooled)
                )
                image_ids.append(image.image_id)
                plain.append(found)
                regressed.append(moved)
                advance()
    seconds_per_image = (time.perf_counter() - started) / max(1, len(image_ids))
    primary = _to_columns(image_ids, regressed if bbox else plain, dataset.classes)
    evaluation = evaluate(dataset, primary, metric)
    without = evaluate(dataset, _to_columns(image_ids, plain, dataset.classes), metric) if bbox else None
    detections_path = method_path(run, method, "detections", f"{dataset.split}.json")
    results_path = method_path(run, method, "eval", f"{dataset.split}.json")
    plot_path = results_path.with_suffix(".pr.png")
    write_detections(detections_path, primary)
    results = {
        **evaluation.to_json(),
        "method": method,
        "split": dataset.split,
        "box_regression": bbox is not None,
        "map_without_box_regression": None if without is None else round(without.map, 6),
        "seconds_per_image_from_cache": round(seconds_per_image, 4),
    }
    write_json(results_path, results)
    plot_pr_curves(evaluation, plot_path)
    write_manifest(
        results_path,
        stage="evaluate",
        options={"method": method, "metric": metric, **asdict(options)},
        inputs=[source, method_path(run, method, "svm.npz")],
        seconds=time.perf_counter() - started,
        results={"map": results["map"], "map_without_box_regression": results["map_without_box_regression"]},
    )
    return RunEvaluation(evaluation, without, detections_path, results_path, plot_path, seconds_per_image)


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
    options: DetectOptions = DetectOptions(score_thresh=0.0),
    proposal_options: ProposalOptions = ProposalOptions(),
    device: str = "auto",
    progress: Progress = SILENT,
) -> list[DetectedImage]:
    """Selective search, features, scores, box regression and NMS on each image; writes
    ``OUT/<stem>.png`` (the annotated image) and ``OUT/<stem>.json`` (the exchange format)."""
    out = Path(out) if out is not None else method_path(run, method, "detect")
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) != len(stems):
        raise UserError("two images share a file name stem; their outputs would collide (detect them apart)")
    svm = load_svms(run, method)
    bbox = load_bbox(run, method, svm.classes)
    extractor = _extractor(run, method, svm.classes, pick_device(device))
    results = []
    with progress.task(f"detecting ({method})", len(paths), "img") as advance:
        for path, stem in zip(paths, stems, strict=True):
            started = time.perf_counter()
            image = read_image(path)
            boxes = propose_image(stem, path, proposal_options)
            features = {k: v.numpy() for k, v in extractor(image, boxes).items()}
            plain, moved = detect_from_scores(
                boxes,
                svm.scores(features[svm.feature]),
                image.shape[:2],
                options,
                _regressor(bbox, features[bbox.feature] if bbox else None),
            )
            found = moved if moved is not None else plain
            picture, json_path = out / f"{stem}.png", out / f"{stem}.json"
            write_png(picture, draw_detections(image, found.boxes, found.labels, found.scores, svm.classes))
            write_detections(json_path, _to_columns([stem], [found], svm.classes))
            results.append(
                DetectedImage(
                    Path(path),
                    found,
                    svm.classes,
                    len(boxes),
                    picture,
                    json_path,
                    time.perf_counter() - started,
                )
            )
            advance()
    return results
