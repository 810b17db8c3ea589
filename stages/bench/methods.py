"""Benchmarks: throughput figures measured on the user's machine (`rcnn bench`)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from stages.bench.common import prepared_images, timed
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods import METHODS
from stages.methods.base import PLAIN, Benchmark, BenchSettings, Measure, Method
from stages.networks.precision import DTYPES, autocast, check_supported, grad_scaler
from stages.runs.devices import pick_device, synchronize

PAPER_VGG16 = {
    ("rcnn", ""): (47.0, 1, 84.0),
    ("spp", ""): (2.3, 20, 25.5),
    ("fast", ""): (0.32, 146, 9.5),
    ("fast", "svd"): (0.22, 213, 9.5),
}
"""Fast R-CNN's table 4 (VGG16, VOC07, one GPU), by (method, variant): test seconds an image, test
speed-up over R-CNN and training hours, as the paper prints them."""


@dataclass(frozen=True)
class MethodTiming:
    """One row's test seconds an image (conv and fc parts, proposals excluded), the multiply-adds of its
    conv layers and of its fc layers an image, and seconds a fine-tuning mini-batch (forward, backward
    and SGD step of the layers the method trains; None for a peer, which is not trained) with its
    multiply-adds (forward and backward). ``label`` names the row; a method's row has its ``method`` and
    ``variant`` (``Variant.key``), a peer's none."""

    label: str
    conv: float
    fc: float
    training_step: float | None
    conv_macs: float
    fc_macs: float
    method: str = ""
    variant: str = ""
    training_macs: float | None = None

    @property
    def total(self) -> float:
        return self.conv + self.fc

    def floor_fraction(self, macs_per_second: float) -> float:
        """The share of the machine's matrix-product rate reached: seconds the multiply-adds would take at
        that rate over the seconds they took."""
        return (self.conv_macs + self.fc_macs) / macs_per_second / self.total

    def training_floor_fraction(self, macs_per_second: float) -> float | None:
        """The same share for a training mini-batch; None for a row not trained."""
        if self.training_macs is None or not self.training_step:
            return None
        return self.training_macs / macs_per_second / self.training_step


@dataclass(frozen=True)
class MethodsBench:
    """``bench_methods``'s measurements: a row a method's variant, then the peers (torchvision's RoI
    heads); the machine's matrix-product rate at the precision (multiply-adds a second); and where the
    profiled test passes spend their time (row label -> seconds an image by kind of op)."""

    rows: list[MethodTiming]
    macs_per_second: float
    breakdowns: dict[str, dict[str, float]]
    peers: tuple[str, ...] = ()
    """The rows that are peers, not methods of the lineage."""
    training_breakdowns: dict[str, dict[str, float]] = field(default_factory=dict)
    """Where the profiled methods' training mini-batches spend their time (method label -> seconds a
    mini-batch by kind of op: forward, backward and SGD step)."""


MATMUL_SHAPE = (2000, 9216, 4096)
"""The matrix product the floor is measured with: AlexNet's fc6 over 2,000 RoIs."""


def matmul_rate(precision: str, device: torch.device, shape: tuple[int, int, int] = MATMUL_SHAPE) -> float:
    """Multiply-adds a second of one (m x k) by (k x n) matrix product in ``precision`` on ``device``: the
    best of five after a warm-up, the matrices made in ``precision`` beforehand (no cast is timed)."""
    check_supported(precision, device)
    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(*size, generator=generator).to(device, DTYPES[precision]) for size in ((m, k), (k, n))
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


def counted_macs(run: Callable[[], object], backward: bool = False) -> tuple[float, float]:
    """(conv, fc) multiply-adds of ``run()``, as ``torch.utils.flop_counter`` counts them: convolutions,
    and matrix products (the fc layers); with ``backward``, ``run()`` is a loss and its backward pass
    (the gradients of the inputs and of the weights) is counted too."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.set_grad_enabled(backward), FlopCounterMode(display=False) as counter:
        result = run()
        if backward:
            result.backward()  # type: ignore[attr-defined]
    conv = fc = 0
    for op, flops in counter.get_flop_counts().get("Global", {}).items():  # none: no torch op ran
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


def time_by_op(
    run: Callable[[], object], device: torch.device, repeats: int = 1, training: bool = False
) -> dict[str, float]:
    """Seconds of ``run()`` by kind of op (``_OP_KINDS``, the rest as "other"), from torch's profiler
    (self time, so nothing is counted twice; on a GPU the kernels' time), averaged over ``repeats``
    calls; gradients are tracked only for a ``training`` step (whose ops' backward passes are counted
    with their kind)."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    with _native_stderr_to_null(), torch.set_grad_enabled(training), profile(activities=activities) as prof:
        for _ in range(repeats):
            run()
    found = dict.fromkeys([*_OP_KINDS, "other"], 0.0)
    for event in prof.key_averages():
        kind = next((k for k, names in _OP_KINDS.items() if any(n in event.key for n in names)), "other")
        spent = event.self_device_time_total if on_gpu else event.self_cpu_time_total
        found[kind] += spent / 1e6 / repeats
    return found


def bench_methods(
    dataset: Dataset,
    backbone: str,
    images: int,
    proposals: int,
    image_size: int,
    steps: int,
    device: str,
    seed: int = 0,
    precision: str = "fp32",
    compress: Mapping[str, Any] | None = None,
    methods: Sequence[Method[Any]] | None = None,
    progress: Progress = SILENT,
) -> MethodsBench:
    """Every method's test pass (each variant's a row: Fast R-CNN + SVD with ``compress``'s ranks, the
    paper's ratios by default) and each method's peers (torchvision's RoI heads on Fast R-CNN's conv5), on
    the same images (shorter side ``image_size``), proposals, backbone and machine, with random weights
    (speed does not depend on them), the networks in ``precision``. The passes are the shipped ones
    (``Method.benchmark``): what ``rcnn detect`` and ``rcnn evaluate`` run.

    Test time: conv and fc parts an image, and their multiply-adds (``counted_macs``) against the
    machine's matrix-product rate (``matmul_rate``); where a method says so (``Benchmark.profiled``), its
    plain pass and its peers broken down by op (``time_by_op``). Training: the mean of ``steps`` timed
    mini-batches after one untimed (forward, backward and SGD step of what the method trains; a variant
    trains as its method).
    """
    torch.manual_seed(seed)
    chosen = pick_device(device)
    check_supported(precision, chosen)
    work = prepared_images(dataset, images, image_size, proposals, seed)
    settings = BenchSettings(
        backbone, 20, image_size, work, chosen, precision, compress=compress or {}, seed=seed
    )
    benches = {method: method.benchmark(settings) for method in (methods or list(METHODS.values()))}
    tests: dict[str, Measure] = {}
    made_by: dict[str, tuple[Method[Any] | None, str]] = {}
    for method, bench in benches.items():
        for variant, measure in bench.test.items():
            tests[method.row_label(variant)] = measure
            made_by[method.row_label(variant)] = method, variant.key
    peers = {name: measure for bench in benches.values() for name, measure in bench.peers.items()}
    timings = timed({**tests, **peers}, work, "test passes", progress)
    macs = {  # an image's, averaged as the times are
        name: tuple(np.mean([counted_macs(partial(measure, *job)) for job in work], axis=0))
        for name, measure in {**tests, **peers}.items()
    }
    trainers = {
        method: _trainer(bench, chosen, precision)
        for method, bench in benches.items()
        if bench.training is not None and bench.trained is not None
    }
    training = {
        method: _training_seconds(method.label, step, steps, chosen, progress)
        for method, step in trainers.items()
    }
    training_macs = {  # forward and backward (dropout as in training), the SGD step's few adds not counted
        method: sum(counted_macs(_in_training(benches[method]), backward=True)) for method in trainers
    }
    breakdowns, training_breakdowns = {}, {}
    for method, bench in benches.items():
        if bench.profiled:
            for name, measure in ((method.label, bench.test[PLAIN]), *bench.peers.items()):
                run = partial(_each, measure, work)
                breakdowns[name] = {kind: s / len(work) for kind, s in time_by_op(run, chosen).items()}
            if method in trainers:
                training_breakdowns[method.label] = time_by_op(trainers[method], chosen, steps, training=True)
    rows = []
    for name in {**tests, **peers}:
        (conv, fc), (conv_macs, fc_macs) = timings[name], macs[name]
        maker, key = made_by.get(name, (None, ""))
        trained = None if maker is None else training.get(maker)
        made = {} if maker is None else {"method": maker.name, "variant": key}
        counted = None if maker is None else training_macs.get(maker)
        rows.append(MethodTiming(name, conv, fc, trained, conv_macs, fc_macs, **made, training_macs=counted))
    rate = matmul_rate(precision, chosen)
    return MethodsBench(rows, rate, breakdowns, tuple(peers), training_breakdowns)


def _each(measure: Measure, work: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    for image, boxes in work:
        measure(image, boxes)


def _trainer(bench: Benchmark, device: torch.device, precision: str) -> Callable[[], None]:
    """One fine-tuning mini-batch of ``bench``: forward (``bench.training``), backward and an SGD step of
    ``bench.trained``'s trainable parameters, the loss scaled as in fine-tuning (fp16 on CUDA)."""
    assert bench.training is not None and bench.trained is not None
    model, forward = bench.trained, bench.training
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6, momentum=0.9)
    scaler = grad_scaler(precision, device)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            loss = forward()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        model.eval()  # the test passes share the network

    return step


def _in_training(bench: Benchmark) -> Callable[[], torch.Tensor]:
    """``bench``'s training loss, computed with its network in training mode."""
    assert bench.training is not None and bench.trained is not None
    model, forward = bench.trained, bench.training

    def loss() -> torch.Tensor:
        model.train()
        try:
            return forward()
        finally:
            model.eval()

    return loss


def _training_seconds(
    label: str, step: Callable[[], None], steps: int, device: torch.device, progress: Progress
) -> float:
    """Seconds a fine-tuning mini-batch (``_trainer``): the mean of ``steps`` after one untimed."""
    started = 0.0
    with progress.task(f"training: {label}", steps + 1, "step") as advance:
        for k in range(steps + 1):
            if k == 1:
                synchronize(device)
                started = time.perf_counter()
            step()
            advance()
        synchronize(device)
    return (time.perf_counter() - started) / steps
