"""`rcnn bench scaling`: ``propose`` and ``extract-features`` under torchrun with 1, 2, ... processes
(``bench_processes``), and how an image's cost grows with its size and its proposals (``bench_growth``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import torch

from stages.bench.common import prepared_images, timed
from stages.core.errors import UserError
from stages.core.progress import SILENT, Advance, Progress
from stages.datasets.records import Dataset
from stages.methods import METHODS
from stages.methods.base import BenchSettings, CachedFeatureMethod
from stages.networks.precision import check_supported
from stages.proposals.options import ProposalOptions
from stages.proposals.propose import search_many
from stages.runs.devices import pick_device
from stages.runs.layout import RunLayout, manifest_path, read_manifest, require_artifact


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
    *,
    before_finetuning: bool = False,
    progress: Progress = SILENT,
) -> list[ScalingRow]:
    """``rcnn propose`` and ``rcnn extract-features --method METHOD`` on the whole split, under
    ``torchrun --nproc_per_node=N`` for each N of ``counts``, each in a fresh run folder that holds only
    the method's network from ``run`` (fine-tuned; with ``before_finetuning``, SPP-net's first pass,
    from the pre-trained backbone).

    Each process uses ``cores`` cores (selective-search workers, torch threads), so that the counts
    compare processes, as on machines or GPUs of their own, and not how one process shares a machine.
    ``device`` and ``precision``: of the feature extraction.
    """
    network = method.extraction_network(run, before_finetuning=before_finetuning)
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
            extract += ["--before-finetuning"] if before_finetuning else []
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
    selective search (``mode``, at the image's own size) and each method's test pass of every variant
    (``Method.benchmark``: R-CNN, SPP-net at one scale, the side, Fast R-CNN and Fast R-CNN + SVD with the
    paper's ratios of ranks); then for each count of
    ``counts`` proposals (side ``side_at``), the test passes. Random weights, the first ``images``
    images of the split resized, seeded random boxes."""
    torch.manual_seed(seed)
    chosen = pick_device(device)
    check_supported(precision, chosen)
    lineage = list(METHODS.values())
    methods = sum(len(method.variants) for method in lineage)  # a test pass each

    def seconds_of_passes(side: int, count: int, advance: Advance) -> dict[str, float]:
        work = prepared_images(dataset, images, side, count, seed)
        settings = BenchSettings(backbone, 20, side, work, chosen, precision, seed=seed)
        passes = {}
        for method in lineage:
            for variant, measure in method.benchmark(settings).test.items():
                passes[method.row_label(variant)] = measure
        found = {name: sum(timing) for name, timing in timed(passes, work, "", SILENT).items()}
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
            for k, (image, _) in enumerate(prepared_images(dataset, images, side, 1, seed)):
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
