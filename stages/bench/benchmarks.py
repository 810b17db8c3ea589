"""Benchmarks: throughput figures measured on the user's machine (`rcnn bench`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch

from stages.cache.features import CacheWriter, FeatureCache
from stages.core.errors import UserError
from stages.core.progress import SILENT, Advance, Progress
from stages.datasets.image_files import read_bgr
from stages.datasets.records import Dataset
from stages.detections.postprocess import detect_from_class_boxes
from stages.methods import get_method
from stages.methods.base import CachedFeatureMethod
from stages.methods.fast.detector import FastDetector
from stages.methods.fast.minibatches import pad_images
from stages.methods.fast.network import FastRcnn, compress, default_ranks, multitask_loss, pooling_rois
from stages.methods.spp.network import SppClassifier, SppNet, scale_factors
from stages.networks.backbones import Backbone, Classifier, build_backbone
from stages.networks.inputs import read_image, to_network_input
from stages.networks.precision import PRECISIONS, autocast, check_supported, grad_scaler
from stages.networks.warp import warp_regions
from stages.proposals.propose import ProposalOptions, search_many
from stages.runs.devices import pick_device, synchronize
from stages.runs.layout import RunLayout, manifest_path, read_manifest, require_artifact
from stages.training.matching import LabelledRegions


@dataclass(frozen=True)
class ThroughputRow:
    """One configuration's measurement."""

    workers: int
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def bench_proposals(
    dataset: Dataset, images: int, options: ProposalOptions, progress: Progress = SILENT
) -> list[ThroughputRow]:
    """Selective search on the first ``images`` images of the split with 1 worker and with all cores.

    Process start-up is included, as a user of `rcnn propose` pays it too.
    """
    records = dataset.images[:images]
    jobs = [(r.image_id, str(r.path), options.mode, options.max_side, options.seed) for r in records]
    cores = os.cpu_count() or 1
    rows = []
    for workers in sorted({1, options.workers or cores}):
        started = time.perf_counter()
        with progress.task(f"selective search, {workers} workers", len(jobs), "img") as advance:
            for _, _, problem in search_many(jobs, workers):
                if problem is not None:
                    raise UserError(problem)
                advance()
        rows.append(ThroughputRow(workers, len(jobs), time.perf_counter() - started))
    return rows


@dataclass(frozen=True)
class SvmMemoryRow:
    """Peak memory of ``rcnn train-svm`` on a feature cache ``copies`` times the original's images."""

    copies: int
    rows: int
    file_bytes: int
    feature_bytes: int
    peak_rss_mb: float
    seconds: float


def bench_svm_memory(
    run: RunLayout,
    method: CachedFeatureMethod,
    split: str,
    copies: Sequence[int],
    progress: Progress = SILENT,
) -> list[SvmMemoryRow]:
    """Train the SVMs, each time in a fresh process, on caches holding the split's images ``k`` times
    (renamed copies), and read the peak resident memory each process recorded in its manifest.

    Streaming means the peak should not grow with the cache: only a block of images and the hard-negative
    caches are held in memory.
    """
    results = []
    with tempfile.TemporaryDirectory(prefix="rcnn-bench-") as scratch:
        for k in copies:
            scratch_run = RunLayout(Path(scratch) / f"x{k}")
            target = method.files(scratch_run).features(split)
            with FeatureCache.of(method.files(run), split) as cache:
                columns = ["boxes", "gt_labels", "class_iou", "target_boxes", *cache.feature_points]
                dims = {name: cache.dim(name) for name in cache.feature_points}
                dtype = cache.h5[cache.feature_points[0]].dtype.name
                ids = [f"{copy}-{i}" for copy in range(k) for i in cache.image_ids]
                writer = CacheWriter(target, {"copies": k}, cache.classes, dims, dtype, ids)
                with progress.task(f"writing a {k}x cache", len(ids), "img") as advance:
                    for copy in range(k):
                        for image in cache.images(columns):
                            c = image.columns
                            regions = LabelledRegions(
                                c["boxes"], c["gt_labels"], c["class_iou"], c["target_boxes"]
                            )
                            writer.append(f"{copy}-{image.image_id}", regions, {n: c[n] for n in dims})
                            advance()
                feature_bytes = sum(writer.h5[n].size * writer.h5[n].dtype.itemsize for n in dims)
                rows = int(writer.h5["offsets"][-1])
                writer.finish({})
            started = time.perf_counter()
            arguments = ["train-svm", "--method", method.name, "--run", str(scratch_run), "--split", split]
            subprocess.run([sys.executable, "-m", "rcnn_cli", *arguments], check=True, capture_output=True)
            manifest = json.loads(manifest_path(method.files(scratch_run).svm).read_text())
            results.append(
                SvmMemoryRow(
                    k,
                    rows,
                    target.stat().st_size,
                    feature_bytes,
                    manifest["results"]["peak_rss_mb"],
                    time.perf_counter() - started,
                )
            )
    return results


@dataclass(frozen=True)
class DetectMemoryRow:
    """``rcnn detect`` on one image size: the JPEG's size on disk, the process's peak resident memory."""

    width: int
    height: int
    file_bytes: int
    peak_rss_mb: float
    seconds: float


def bench_detect_memory(
    run: RunLayout, method: str, image: Path, long_sides: Sequence[int], progress: Progress = SILENT
) -> list[DetectMemoryRow]:
    """Peak resident memory of ``rcnn detect`` with ``method`` on ``image`` as it is and enlarged
    (bicubic, saved as JPEG) to each longer side: each size in a fresh process, whose peak the kernel
    reports when it ends (``wait4``)."""
    source = read_bgr(image)
    height, width = source.shape[:2]
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="rcnn-bench-") as scratch,
        progress.task("rcnn detect in a fresh process", len(long_sides) + 1, "size") as advance,
    ):
        for side in (max(height, width), *long_sides):
            path, factor = Path(image), side / max(height, width)
            if side != max(height, width):
                path = Path(scratch) / f"{side}.jpg"
                size = (round(width * factor), round(height * factor))
                cv2.imwrite(str(path), cv2.resize(source, size, interpolation=cv2.INTER_CUBIC))
            command = ["-m", "rcnn_cli", "detect", str(path), "--run", str(run.root), "--method", method]
            started = time.perf_counter()
            _, peak_mb = _in_fresh_process([*command, "--out", str(Path(scratch) / "out")], path)
            rows.append(
                DetectMemoryRow(
                    round(width * factor),
                    round(height * factor),
                    path.stat().st_size,
                    peak_mb,
                    time.perf_counter() - started,
                )
            )
            advance()
    return rows


@dataclass(frozen=True)
class CocoReadRow:
    """Reading a generated COCO split: the JSON's size, the seconds and peak memory of ``load_dataset``."""

    images: int
    annotations: int
    file_bytes: int
    seconds: float
    peak_rss_mb: float


def bench_coco_read(images: int, annotations: int, polygon_points: int = 24, seed: int = 0) -> CocoReadRow:
    """Write a COCO split of ``images`` images (empty files: reading never decodes them) and
    ``annotations`` objects, each with a ``polygon_points``-point segmentation as COCO's have (they are most
    of its 450 MB), and read it with ``load_dataset`` in a fresh process, whose peak memory the kernel
    reports (``wait4``)."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="rcnn-bench-") as scratch:
        root = Path(scratch)
        (root / "train").mkdir()
        (root / "annotations").mkdir()
        for k in range(images):
            (root / "train" / f"{k:012d}.jpg").touch()
        path = root / "annotations" / "instances_train.json"
        with open(path, "w", encoding="utf-8") as file:
            file.write('{"images": [')
            file.write(
                ",".join(
                    f'{{"id": {k}, "file_name": "{k:012d}.jpg", "width": 640, "height": 480}}'
                    for k in range(images)
                )
            )
            file.write('], "categories": [')
            file.write(",".join(f'{{"id": {c}, "name": "class{c}"}}' for c in range(1, 91, 9)))
            file.write('], "annotations": [')
            for start in range(0, annotations, 10_000):
                count = min(10_000, annotations - start)
                corners = rng.uniform(0, 300, (count, 2)).round(2)
                polygons = rng.uniform(0, 600, (count, 2 * polygon_points)).round(2)
                parts = []
                for n in range(count):
                    x, y = corners[n]
                    parts.append(
                        f'{{"id": {start + n + 1}, "image_id": {(start + n) % images}, '
                        f'"category_id": {1 + 9 * ((start + n) % 10)}, "bbox": [{x}, {y}, 120.5, 80.25], '
                        f'"area": 9000.0, "iscrowd": 0, "segmentation": [{polygons[n].tolist()}]}}'
                    )
                file.write(("," if start else "") + ",".join(parts))
            file.write("]}")
        code = (
            "import time; from stages.datasets.formats import load_dataset; t = time.perf_counter(); "
            f"d = load_dataset({str(root)!r}, 'train', format='coco'); print(time.perf_counter() - t, len(d))"
        )
        output, peak_mb = _in_fresh_process(["-c", code], path)
        seconds, _ = output.strip().splitlines()[-1].split()  # after any warnings
        return CocoReadRow(images, annotations, path.stat().st_size, float(seconds), peak_mb)


def _in_fresh_process(arguments: list[str], subject: Path) -> tuple[str, float]:
    """Run ``python ARGUMENTS`` in a fresh process: (its standard output, its peak resident memory in
    MiB, as the kernel reports it when the process ends: ``wait4``). UserError naming ``subject`` with
    the process's last line if it fails."""
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(
            [sys.executable, *arguments], stdout=output, stderr=subprocess.STDOUT, text=True
        )
        _, status, usage = os.wait4(process.pid, 0)
        output.seek(0)
        text = output.read()
    if os.waitstatus_to_exitcode(status) != 0:
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise UserError(f"{subject}: the measured process failed: {last}")
    return text, usage.ru_maxrss / 1024  # kilobytes on Linux


@dataclass(frozen=True)
class FeatureTiming:
    """Seconds an image to get the features of every proposal: the conv part (R-CNN: warping and
    conv1..pool5 of every region; SPP-net: conv1..conv5 once a scale) and the fc part (R-CNN: fc6, fc7;
    SPP-net: pyramid pooling, fc6, fc7)."""

    method: str
    scales: tuple[int, ...]
    conv: float
    fc: float

    @property
    def total(self) -> float:
        return self.conv + self.fc


def random_proposals(height: int, width: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 4) boxes inside the image, sides log-uniform between 16 px and the image's size."""
    sides = np.exp(rng.uniform(np.log(16), np.log([width, height]), (count, 2)))
    corners = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - sides)
    return np.concatenate([corners, corners + sides], axis=1).astype(np.float32)


def _prepared_images(
    dataset: Dataset, images: int, image_size: int, proposals: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The split's first ``images`` images resized to shorter side ``image_size``, with ``proposals``
    seeded random boxes each (the work does not depend on where boxes are)."""
    rng = np.random.default_rng(seed)
    work = []
    for record in dataset.images[:images]:
        image = read_image(record.path)
        factor = image_size / min(image.shape[:2])
        image = cv2.resize(image, (round(image.shape[1] * factor), round(image.shape[0] * factor)))
        height, width = image.shape[:2]
        work.append((image, random_proposals(height, width, proposals, rng)))
    if not work:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no images")
    return work


def _rcnn_seconds(
    net: Backbone, image: np.ndarray, boxes: np.ndarray, device: torch.device
) -> tuple[float, float]:
    """(conv, fc) seconds of R-CNN's features: warping and conv1..pool5 of every region, then fc6, fc7."""
    conv = fc = 0.0
    tensor = to_network_input(image, device)
    for chunk in torch.as_tensor(boxes, device=device).split(256):
        started = time.perf_counter()
        crops = warp_regions(tensor, chunk, net.spec.input_size, net.spec.context_padding)
        pooled = net.pool5(net.conv(crops.contiguous(memory_format=torch.channels_last)))
        synchronize(device)
        middle = time.perf_counter()
        net.head(pooled)
        synchronize(device)
        conv, fc = conv + middle - started, fc + time.perf_counter() - middle
    return conv, fc


def _spp_seconds(
    spp: SppNet, image: np.ndarray, boxes: np.ndarray, scales: Sequence[int], device: torch.device
) -> tuple[float, float]:
    """(conv, fc) seconds of SPP-net's features: conv5 once a scale, then the pyramids, fc6, fc7."""
    height, width = image.shape[:2]
    factors = scale_factors(height, width, scales)
    started = time.perf_counter()
    maps = spp.conv5(image, factors, device)
    synchronize(device)
    middle = time.perf_counter()
    spp.head(spp.pyramid(maps, torch.as_tensor(boxes, device=device), factors))
    synchronize(device)
    return middle - started, time.perf_counter() - middle


Key = TypeVar("Key", bound=Hashable)


def _timed(
    measures: Mapping[Key, Callable], work, label: str, progress: Progress
) -> dict[Key, tuple[float, float]]:
    """Mean (conv, fc) seconds an image of each ``measure(image, boxes)``, after one untimed warm-up call
    of each on 64 boxes (first-call allocations and kernel choice are not counted). The measures take
    their turns on each image, so that the machine's drift (up to 2x from hour to hour on this
    project's machines) falls on each alike and their comparison holds."""
    totals = {name: [0.0, 0.0] for name in measures}
    with torch.no_grad():
        for measure in measures.values():
            measure(work[0][0], work[0][1][:64])
        with progress.task(label, len(work) * len(measures), "pass") as advance:
            for image, boxes in work:
                for name, measure in measures.items():
                    conv, fc = measure(image, boxes)
                    totals[name][0] += conv
                    totals[name][1] += fc
                    advance()
    return {name: (conv / len(work), fc / len(work)) for name, (conv, fc) in totals.items()}


def bench_features(
    dataset: Dataset,
    backbone: str,
    images: int,
    proposals: int,
    image_size: int,
    scale_sets: Sequence[Sequence[int]],
    device: str,
    seed: int = 0,
    progress: Progress = SILENT,
) -> list[FeatureTiming]:
    """R-CNN's warped crops against SPP-net's shared conv5 on the same images, proposals and backbone.

    Images are resized so their shorter side is ``image_size`` (VOC's are about 375 x 500). Weights are
    random: speed does not depend on them.
    """
    torch.manual_seed(seed)
    chosen = pick_device(device)
    net = build_backbone(backbone).to(chosen).eval()
    spp = SppNet(net).to(chosen).eval()
    work = _prepared_images(dataset, images, image_size, proposals, seed)
    measures: dict[tuple[str, tuple[int, ...]], Callable] = {
        ("rcnn", ()): lambda i, b: _rcnn_seconds(net, i, b, chosen)
    }
    for scales in scale_sets:
        measures["spp", tuple(scales)] = lambda i, b, s=tuple(scales): _spp_seconds(spp, i, b, s, chosen)
    timings = _timed(measures, work, "features: rcnn, spp", progress)
    return [FeatureTiming(method, scales, *timing) for (method, scales), timing in timings.items()]


PAPER_VGG16 = {
    "R-CNN": (47.0, 1, 84.0),
    "SPP-net": (2.3, 20, 25.5),
    "Fast R-CNN": (0.32, 146, 9.5),
    "Fast R-CNN + SVD": (0.22, 213, 9.5),
}
"""Fast R-CNN's table 4 (VGG16, VOC07, one GPU): test seconds an image, test speed-up over R-CNN and
training hours, as the paper prints them."""


@dataclass(frozen=True)
class MethodTiming:
    """One method's test seconds an image (conv and fc parts, proposals excluded), the multiply-adds of
    its conv layers and of its fc layers an image, and seconds a fine-tuning mini-batch (forward,
    backward and SGD step of the layers the method trains; None for the peer, which is not trained)."""

    method: str
    conv: float
    fc: float
    training_step: float | None
    conv_macs: float
    fc_macs: float

    @property
    def total(self) -> float:
        return self.conv + self.fc

    def floor_fraction(self, macs_per_second: float) -> float:
        """The share of the machine's matrix-product rate reached: seconds the multiply-adds would take at
        that rate over the seconds they took."""
        return (self.conv_macs + self.fc_macs) / macs_per_second / self.total


@dataclass(frozen=True)
class MethodsBench:
    """``bench_methods``'s measurements: a row a method, then torchvision's RoI heads (the peer); the
    machine's matrix-product rate at the precision (multiply-adds a second); and where the test passes
    of Fast R-CNN and of the peer spend their time (seconds an image by kind of op, post-processing
    included)."""

    rows: list[MethodTiming]
    macs_per_second: float
    breakdowns: dict[str, dict[str, float]]


PEER = "torchvision"
"""The peer's row: torchvision's ``RoIHeads`` (``MultiScaleRoIAlign``, ``TwoMLPHead``,
``FastRCNNPredictor``, its post-processing) on Fast R-CNN's conv5, with Fast R-CNN's fc weights."""

MATMUL_SHAPE = (2000, 9216, 4096)
"""The matrix product the floor is measured with: AlexNet's fc6 over 2,000 RoIs."""


def matmul_rate(precision: str, device: torch.device, shape: tuple[int, int, int] = MATMUL_SHAPE) -> float:
    """Multiply-adds a second of one (m x k) by (k x n) matrix product in ``precision`` on ``device``: the
    best of five after a warm-up, the matrices made in ``precision`` beforehand (no cast is timed)."""
    check_supported(precision, device)
    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(*size, generator=generator).to(device, PRECISIONS[precision]) for size in ((m, k), (k, n))
    )
    best = float("inf")
    with torch.no_grad():
        for attempt in range(6):
            synchronize(device)
            started = time.perf_counter()
            a @ b
            synchronize(device)
            if attempt:
                best = min(best, time.perf_counter() - started)
    return m * k * n / best


_MATMULS = {"mm", "addmm", "bmm", "matmul"}


def counted_macs(run: Callable[[], object]) -> tuple[float, float]:
    """(conv, fc) multiply-adds of ``run()``, as ``torch.utils.flop_counter`` counts them: convolutions,
    and matrix products (the fc layers)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    conv = fc = 0
    for op, flops in counter.get_flop_counts()["Global"].items():
        name = str(op).split(".")[-1]
        if "convolution" in name:
            conv += flops
        elif name in _MATMULS:
            fc += flops
    return conv / 2, fc / 2  # a multiply-add is two floating-point operations


_OP_KINDS = {
    "convolutions": ("convolution", "conv2d"),
    "fc layers (matrix products)": ("addmm", "::mm", "bmm"),
    "max pooling and ReLU": ("max_pool", "relu", "clamp_min", "threshold"),
    "RoI pooling": ("roi_pool", "roi_align"),
    "NMS": ("nms",),
}


@contextlib.contextmanager
def _native_stderr_to_null() -> Iterator[None]:
    """Send what C++ code writes to standard error to /dev/null meanwhile: the profiler library prints
    its start and stop, and on machines without a GPU a failed device count, whatever its log level."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def time_by_op(run: Callable[[], object], device: torch.device, repeats: int = 1) -> dict[str, float]:
    """Seconds of ``run()`` by kind of op (``_OP_KINDS``, the rest as "other"), from torch's profiler
    (self time, so nothing is counted twice; on a GPU the kernels' time), averaged over ``repeats``
    calls."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    with _native_stderr_to_null(), torch.no_grad(), profile(activities=activities) as prof:
        for _ in range(repeats):
            run()
    found = dict.fromkeys([*_OP_KINDS, "other"], 0.0)
    for event in prof.key_averages():
        kind = next((k for k, names in _OP_KINDS.items() if any(n in event.key for n in names)), "other")
        spent = event.self_device_time_total if on_gpu else event.self_cpu_time_total
        found[kind] += spent / 1e6 / repeats
    return found


def torchvision_heads(fast: FastRcnn, score_thresh: float, nms_iou: float, per_image: int) -> torch.nn.Module:
    """torchvision's own RoI heads with ``fast``'s fc6, fc7, score and box layers: RoIAlign to the same
    grid on the one conv5 map, its two-layer head, its predictor and its post-processing (its box coder
    weights are 10, 10, 5, 5 where ours are 1: the boxes differ, the work does not)."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.ops import MultiScaleRoIAlign

    spec = fast.spec
    fc6, fc7 = (block[spec.fc_linear_index] for block in (fast.fc6, fast.fc7))
    head = TwoMLPHead(fc6.in_features, fc6.out_features)
    head.fc6.load_state_dict(fc6.state_dict())
    head.fc7.load_state_dict(fc7.state_dict())
    predictor = FastRCNNPredictor(fc7.out_features, fast.scores.out_features)
    predictor.cls_score.load_state_dict(fast.scores.state_dict())
    predictor.bbox_pred.load_state_dict(fast.deltas.state_dict())
    pool = MultiScaleRoIAlign(["0"], output_size=fast.pool_size, sampling_ratio=2)
    return RoIHeads(pool, head, predictor, 0.5, 0.5, 128, 0.25, None, score_thresh, nms_iou, per_image)


def _in_precision(measure: Callable, device: torch.device, precision: str) -> Callable:
    """``measure(image, boxes)`` with its networks in ``precision``."""

    def measured(image: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
        with autocast(precision, device):
            return measure(image, boxes)

    return measured


def _fast_measure(model: FastRcnn, side: int, device: torch.device, precision: str) -> Callable:
    """(conv, fc) seconds of Fast R-CNN's test pass of ``model`` at shorter side ``side``."""
    detector = FastDetector(model, side, 10 * side, device, precision)

    def measure(image: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
        detector(image, boxes)
        return detector.last_timing

    return measure


def _test_passes(
    net: Backbone,
    spp: SppNet,
    fast: FastRcnn,
    smaller: FastRcnn,
    side: int,
    device: torch.device,
    precision: str,
) -> dict[str, Callable]:
    """The (conv, fc) seconds of each method's test pass on an image of shorter side ``side``: R-CNN's
    warped crops, SPP-net at that one scale, Fast R-CNN at that scale and its compressed form
    ``smaller``."""
    return {
        "R-CNN": _in_precision(lambda i, b: _rcnn_seconds(net, i, b, device), device, precision),
        "SPP-net": _in_precision(lambda i, b: _spp_seconds(spp, i, b, (side,), device), device, precision),
        "Fast R-CNN": _fast_measure(fast, side, device, precision),
        "Fast R-CNN + SVD": _fast_measure(smaller, side, device, precision),
    }


def bench_methods(
    dataset: Dataset,
    backbone: str,
    images: int,
    proposals: int,
    image_size: int,
    ranks: tuple[int | None, int | None],
    steps: int,
    device: str,
    seed: int = 0,
    precision: str = "fp32",
    progress: Progress = SILENT,
) -> MethodsBench:
    """R-CNN, SPP-net (one scale), Fast R-CNN, Fast R-CNN + SVD and torchvision's RoI heads on Fast
    R-CNN's conv5 on the same images (shorter side ``image_size``), proposals, backbone and machine, with
    random weights (speed does not depend on them), the networks in ``precision``.

    Test time: conv and fc parts an image, and their multiply-adds (``counted_macs``) against the
    machine's matrix-product rate (``matmul_rate``). The peer's fc part is its whole heads with
    post-processing; Fast R-CNN's breakdown by op (``time_by_op``) includes its post-processing too.
    Training: the mean of ``steps`` timed mini-batches after one untimed: R-CNN 128 warped windows
    through the whole network; SPP-net 128 cached pyramids through fc6, fc7 and the scores; Fast R-CNN
    2 images and 128 RoIs end to end (conv2 and up). SPP-net's training also needs the pyramid cache of
    every training image (its test conv + pyramid time, see the table), R-CNN's the fc7 cache.
    """
    torch.manual_seed(seed)
    chosen = pick_device(device)
    check_supported(precision, chosen)
    work = _prepared_images(dataset, images, image_size, proposals, seed)
    classes = 20
    net = build_backbone(backbone).to(chosen).eval()
    spp = SppNet(build_backbone(backbone)).to(chosen).eval()
    fast = FastRcnn(build_backbone(backbone), classes).to(chosen).eval()
    defaults = default_ranks(fast)
    smaller = compress(fast.cpu(), (ranks[0] or defaults[0], ranks[1] or defaults[1]))
    fast, smaller = fast.to(chosen), smaller.to(chosen).eval()
    options = get_method("fast").test_options
    peer = torchvision_heads(fast, options.score_thresh or 0.0, options.nms_iou, options.per_image or 100)
    peer = peer.to(chosen).eval()

    def peer_seconds(image, boxes):
        started = time.perf_counter()
        conv5 = fast.conv5(to_network_input(image, chosen)[None])
        synchronize(chosen)
        middle = time.perf_counter()
        peer({"0": conv5}, [torch.as_tensor(boxes, device=chosen)], [image.shape[:2]])
        synchronize(chosen)
        return middle - started, time.perf_counter() - middle

    tests = {
        **_test_passes(net, spp, fast, smaller, image_size, chosen, precision),
        PEER: _in_precision(peer_seconds, chosen, precision),
    }
    timings = _timed(tests, work, "test passes", progress)
    macs = {  # an image's, averaged as the times are
        name: tuple(np.mean([counted_macs(partial(measure, *job)) for job in work], axis=0))
        for name, measure in tests.items()
    }

    rng = np.random.default_rng(seed)
    labels = torch.as_tensor(rng.integers(0, classes + 1, 128), device=chosen)
    image, boxes = work[0]
    windows = torch.as_tensor(np.resize(boxes, (128, 4)), device=chosen)  # cycled when fewer than 128
    rcnn_model = Classifier(net, classes + 1).to(chosen)
    spp_model = SppClassifier(spp, classes + 1).to(chosen)
    fast.freeze_early_layers()

    def rcnn_step():
        crops = warp_regions(
            to_network_input(image, chosen), windows, net.spec.input_size, net.spec.context_padding
        )
        return torch.nn.functional.cross_entropy(rcnn_model(crops), labels)

    pyramids = torch.rand(128, spp.pyramid_dim, device=chosen)

    def spp_step():
        return torch.nn.functional.cross_entropy(spp_model(pyramids), labels)

    pair = [work[k % len(work)] for k in range(2)]

    def fast_step():
        inputs = pad_images([to_network_input(im, chosen) for im, _ in pair])
        chosen_boxes = torch.cat([torch.as_tensor(np.resize(b, (64, 4)), device=chosen) for _, b in pair])
        index = torch.arange(2, device=chosen).repeat_interleave(64)
        scores, deltas = fast(inputs, pooling_rois(chosen_boxes, index, 1.0))
        return multitask_loss(scores, deltas, labels, torch.zeros(128, 4, device=chosen))[0]

    training = {}
    for name, model, step in (
        ("R-CNN", rcnn_model, rcnn_step),
        ("SPP-net", spp_model, spp_step),
        ("Fast R-CNN", fast, fast_step),
    ):
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6, momentum=0.9)
        scaler = grad_scaler(precision, chosen)  # as in fine-tuning: fp16 on CUDA scales the loss
        with progress.task(f"training: {name}", steps + 1, "step") as advance:
            for k in range(steps + 1):
                if k == 1:
                    synchronize(chosen)
                    started = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                with autocast(precision, chosen):
                    loss = step()
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                advance()
            synchronize(chosen)
        model.eval()
        training[name] = (time.perf_counter() - started) / steps
    training["Fast R-CNN + SVD"] = training["Fast R-CNN"]
    detector = FastDetector(fast, image_size, 10 * image_size, chosen, precision)

    def fast_test() -> None:
        for image, boxes in work:
            scores, class_boxes = detector(image, boxes)
            detect_from_class_boxes(class_boxes, scores, options)

    def peer_test() -> None:
        for image, boxes in work:
            tests[PEER](image, boxes)

    breakdowns = {
        name: {kind: seconds / len(work) for kind, seconds in time_by_op(run, chosen).items()}
        for name, run in (("Fast R-CNN", fast_test), (PEER, peer_test))
    }
    rows = [MethodTiming(name, *timings[name], training.get(name), *macs[name]) for name in tests]
    return MethodsBench(rows, matmul_rate(precision, chosen), breakdowns)


@dataclass(frozen=True)
class ScalingRow:
    """A stage run by ``processes`` processes under torchrun: its images and seconds (from its manifest:
    the stage's own time, without the start of Python and torch)."""

    stage: str
    processes: int
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def bench_processes(
    data: Path,
    split: str,
    run: RunLayout,
    method: CachedFeatureMethod,
    counts: Sequence[int],
    options: ProposalOptions,
    data_format: str | None = None,
    cores: int = 1,
    device: str = "auto",
    precision: str = "fp32",
    progress: Progress = SILENT,
) -> list[ScalingRow]:
    """``rcnn propose`` and ``rcnn extract-features --method METHOD`` on the whole split, under
    ``torchrun --nproc_per_node=N`` for each N of ``counts``, each in a fresh run folder that holds only
    the method's network from ``run`` (fine-tuned, or for SPP-net's pyramids the pre-trained backbone).

    Each process uses ``cores`` cores (selective-search workers, torch threads), so that the counts
    compare processes, as on machines or GPUs of their own, and not how one process shares a machine.
    ``device`` and ``precision``: of the feature extraction.
    """
    network = method.extraction_network(run)
    require_artifact(network, run.command_for(network))
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="rcnn-scaling-") as scratch,
        progress.task("torchrun stages", 2 * len(counts), "run") as advance,
    ):
        for count in counts:
            target = RunLayout(Path(scratch) / str(count))
            copy = target.root / network.relative_to(run.root)
            copy.parent.mkdir(parents=True)
            for source, made in ((network, copy), (manifest_path(network), manifest_path(copy))):
                os.link(source, made)  # a run folder of its own, the same file
            common = ["--data", str(data), "--split", split, "--run", str(target.root)]
            common += ["--format", data_format] if data_format else []
            search = ["--mode", options.mode, "--max-side", str(options.max_side), "--workers", str(cores)]
            extract = ["--method", method.name, "--device", device, "--precision", precision]
            for stage, arguments, artifact in (
                ("propose", ["propose", *common, *search], target.proposals(split)),
                (
                    f"extract-features ({method.name})",
                    ["extract-features", *extract, *common],
                    method.files(target).features(split),
                ),
            ):
                manifest = _torchrun(count, arguments, artifact, cores)
                rows.append(ScalingRow(stage, count, manifest["results"]["images"], manifest["seconds"]))
                advance()
    return rows


def _torchrun(processes: int, arguments: list[str], artifact: Path, threads: int) -> dict:
    """``torchrun --standalone --nproc_per_node=PROCESSES -m rcnn_cli -- ARGUMENTS`` with ``threads``
    torch threads a process; the manifest of the ``artifact`` it makes. UserError with the stage's own
    error line (or the last line it printed) if it fails."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={processes}", "-m", "rcnn_cli", "--", *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    manifest = read_manifest(artifact) if artifact.exists() else None
    if done.returncode != 0 or manifest is None:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        said = [line for line in lines if line.startswith(("error:", "internal error:"))]
        last = said[0] if said else next((line for line in reversed(lines) if "=" * 8 not in line), "")
        raise UserError(f"rcnn {arguments[0]} under torchrun ({processes} processes) failed: {last}")
    return manifest


@dataclass(frozen=True)
class GrowthRow:
    """Seconds an image at one image size and proposal count: selective search (None where the count
    is the variable: search decides it) and each method's test pass (proposals excluded)."""

    side: int
    proposals: int
    search: float | None
    methods: dict[str, float]


def bench_growth(
    dataset: Dataset,
    backbone: str,
    images: int,
    sides: Sequence[int],
    counts: Sequence[int],
    device: str,
    *,
    side_at: int = 600,
    proposals_at: int = 2000,
    mode: str = "fast",
    precision: str = "fp32",
    seed: int = 0,
    progress: Progress = SILENT,
) -> list[GrowthRow]:
    """How an image's cost grows: for each shorter side of ``sides`` (``proposals_at`` proposals),
    selective search (``mode``, at the image's own size) and the test pass of R-CNN, SPP-net (one scale:
    the side), Fast R-CNN and Fast R-CNN + SVD (the paper's ratios of ranks); then for each count of
    ``counts`` proposals (side ``side_at``), the test passes. Random weights, the first ``images``
    images of the split resized, seeded random boxes."""
    torch.manual_seed(seed)
    chosen = pick_device(device)
    check_supported(precision, chosen)
    net = build_backbone(backbone).to(chosen).eval()
    spp = SppNet(build_backbone(backbone)).to(chosen).eval()
    fast = FastRcnn(build_backbone(backbone), 20).eval()
    smaller = compress(fast, default_ranks(fast)).to(chosen).eval()
    fast = fast.to(chosen)

    methods = 4  # the test passes of _test_passes

    def seconds_of_passes(side: int, count: int, advance: Advance) -> dict[str, float]:
        work = _prepared_images(dataset, images, side, count, seed)
        passes = _test_passes(net, spp, fast, smaller, side, chosen, precision)
        found = {name: sum(timing) for name, timing in _timed(passes, work, "", SILENT).items()}
        advance(len(passes))
        return found

    rows = []
    passes = (methods + 1) * len(sides) + methods * len(counts)
    with (
        tempfile.TemporaryDirectory(prefix="rcnn-growth-") as scratch,
        progress.task("image sizes and proposal counts", passes, "pass") as advance,
    ):
        for side in sides:
            jobs = []
            for k, (image, _) in enumerate(_prepared_images(dataset, images, side, 1, seed)):
                path = Path(scratch) / f"{side}-{k}.png"
                cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                jobs.append((str(k), str(path), mode, max(image.shape[:2]), seed))
            started = time.perf_counter()
            for _, _, problem in search_many(jobs, 1):
                if problem is not None:
                    raise UserError(problem)
            search = (time.perf_counter() - started) / len(jobs)
            advance()
            rows.append(GrowthRow(side, proposals_at, search, seconds_of_passes(side, proposals_at, advance)))
        rows += [
            GrowthRow(side_at, count, None, seconds_of_passes(side_at, count, advance)) for count in counts
        ]
    return rows
