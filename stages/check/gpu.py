"""``rcnn bench gpu-check``: every CUDA path run once, briefly, on a machine lent for minutes: bare, offline,
reached with a small copy of the working tree.

``prepare_check_data`` makes, here, the folder the check carries (``data/gpu-check``, a few MB): a small
demo split and its selective-search proposals, searched on this machine's CPU, since the GPU machine's
OpenCV has no contrib modules; and the pure-Python packages that machine lacks (``site/``). ``gpu_check``
then runs there, from the working tree (``PYTHONPATH``, no install; ``scripts/gpu-check``):

1. the test suite's CUDA tests (``pytest -m cuda``);
2. the proposals' NMS and RoI pooling on the device against the CPU: agreement and time;
3. the demo's four methods trained and tested briefly (``rcnn run`` of ``configs/demo.toml`` with few
   iterations, on the carried proposals) on the device in each precision, and in fp32 on the CPU beside
   them: seconds, mAP and peak device memory of each method's stages;
4. ``rcnn bench methods`` with vgg16 (random weights: nothing downloads) on the device.

Each part that fails is a row saying how, and the others still run: one lease is all there may be. The
table goes to ``OUT/gpu-check.md`` and ``.json``, every step's output to ``OUT/gpu-check.log``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from stages.config.run_config import RunConfig, load_config
from stages.core.atomic import atomic_path, ensure_folder, write_json
from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.demo import generate_demo
from stages.datasets.formats import load_dataset
from stages.datasets.options import DemoOptions
from stages.pipeline.run import PlannedStep, run_config
from stages.pipeline.sharing import move_manifest
from stages.proposals.sources import SelectiveSearch
from stages.report.summary import report
from stages.runs.layout import MANIFEST_SUFFIX, RunLayout, read_manifest

log = logging.getLogger("rcnn")

ROOT = Path(__file__).resolve().parents[2]
"""The working tree: the check runs its tests and configs from it."""

BASE_CONFIG = ROOT / "configs" / "demo.toml"
CHECK_DATA = Path("data/gpu-check")
DEMO = DemoOptions(seed=0, num_train=24, num_val=8, num_test=16)
"""The carried split: 32 training and 16 test images of the demo (about 3 MB with their proposals)."""

CARRY_LIMIT = 48 << 20
"""The carried folder's most: the lease carries 64 MiB with the code."""

SITE_PACKAGES = ("tomli_w", "defusedxml")
"""Pure-Python packages of the toolkit that the GPU machine's image lacks, carried in ``site/``."""

SHORT = (
    "pretrain.iterations=100",
    "rcnn.finetune.iterations=40",
    "spp.finetune.iterations=60",
    "fast.finetune.iterations=100",
    "faster.finetune.iterations=100",
)
"""A short run: enough mini-batches for every path to run and the loss to move, not to learn."""


@dataclass(frozen=True)
class CheckRow:
    """One line of the check's table: what ran, where and in what precision; its seconds, mAP and peak
    device memory (GiB) where they apply; ``status`` ``ok``, ``skipped`` or what went wrong."""

    part: str
    what: str
    device: str
    precision: str = ""
    seconds: float | None = None
    map: float | None = None
    peak_gib: float | None = None
    status: str = "ok"
    note: str = ""


@dataclass
class CheckReport:
    """The check: the machine it ran on and its rows."""

    environment: dict[str, Any]
    rows: list[CheckRow] = field(default_factory=list)

    def markdown(self) -> str:
        head = "| part | what | device | precision | seconds | mAP | peak GiB | status | note |\n"
        head += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        lines = [
            f"| {r.part} | {r.what} | {r.device} | {r.precision} | {_number(r.seconds, '.2f')} | "
            f"{_number(r.map, '.3f')} | {_number(r.peak_gib, '.2f')} | {r.status} | {r.note} |"
            for r in self.rows
        ]
        machine = ", ".join(f"{k} {v}" for k, v in self.environment.items())
        return f"# rcnn gpu-check\n\n{machine}\n\n{head}" + "\n".join(lines) + "\n"


def _number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


# ---- the carried folder -----------------------------------------------------------------------------


def prepare_check_data(
    folder: Path = CHECK_DATA, demo: DemoOptions = DEMO, progress: Progress = SILENT
) -> Path:
    """Make the folder the check carries: the small ``demo`` split in ``demo/``, its proposals (the demo
    config's selective search, on this machine's CPU) in ``proposals/``, and ``site/`` with the packages
    of ``SITE_PACKAGES``; UserError past ``CARRY_LIMIT``."""
    folder = Path(folder)
    making = folder.with_name(f".{folder.name}.partial")  # renamed into place whole: never half a folder
    if making.exists():
        shutil.rmtree(making)
    data = generate_demo(making / "demo", demo)
    config = _config(making, making / "unused", "cpu", "fp32")
    search = SelectiveSearch(config.propose)
    for split in dict.fromkeys((config.data.train, config.data.test)):
        search.propose_split(load_dataset(data, split), RunLayout(making), progress=progress)
    for name in SITE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise UserError(f"{name}: not installed here; `make setup` installs it")
        source = Path(spec.origin).parent
        shutil.copytree(source, making / "site" / name, ignore=shutil.ignore_patterns("__pycache__"))
    check_data(making)
    if folder.exists():
        shutil.rmtree(folder)
    making.rename(folder)
    return folder


def check_data(folder: Path) -> Path:
    """``folder`` if it holds what the check carries, within ``CARRY_LIMIT``; UserError naming what is
    wrong, with the command that makes it."""
    folder = Path(folder)
    make = f"make it here with `rcnn bench gpu-check --prepare --data {folder}`"
    for needed in ("demo", "proposals"):
        if not (folder / needed).is_dir():
            raise UserError(f"{folder / needed}: not found; {make}")
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    if size > CARRY_LIMIT:
        raise UserError(f"{folder}: {size / 2**20:.0f} MiB, over the {CARRY_LIMIT >> 20} MiB a lease carries")
    return folder


def _config(data: Path, run: Path, device: str, precision: str, settings: Sequence[str] = ()) -> RunConfig:
    """The demo's config on the carried split, in ``run``, on ``device``, every network in ``precision``;
    no pictures."""
    base = load_config(BASE_CONFIG, [*settings, f"run.device={device}"], data_root=str(data / "demo"))
    overrides = [f"{table}.precision={precision}" for table in _precision_tables(base)]
    return load_config(
        BASE_CONFIG,
        [*settings, f"run.device={device}", *overrides],
        data_root=str(Path(data) / "demo"),
        run_folder=str(run),
        pictures=False,
    )


def _precision_tables(config: RunConfig) -> list[str]:
    """Every table of ``config`` whose options have a precision: the trainings, the caches, evaluation."""
    found = ["evaluate"] if hasattr(config.evaluate, "precision") else []
    if config.pretrain is not None:
        found.append("pretrain")
    for name, settings in config.methods.items():
        found += [
            f"{name}.{table}" for table, options in settings.tables.items() if hasattr(options, "precision")
        ]
    return found


def _carried_proposals(data: Path, run: RunLayout) -> None:
    """The carried proposals into ``run``, their manifests moved to this machine's paths (the folder and
    the dataset), so that ``rcnn run`` finds them up to date and never searches."""
    source = Path(data) / "proposals"
    ensure_folder(run.proposals_folder)
    for path in sorted(source.glob("*.h5")):
        shutil.copy2(path, run.proposals_folder / path.name)
        manifest = read_manifest(path) or {}
        made = Path(manifest.get("location", path)).parent
        root = Path(manifest.get("results", {}).get("dataset_root", data / "demo"))
        places = [(made, run.proposals_folder), (root, Path(data) / "demo")]
        name = path.with_suffix(MANIFEST_SUFFIX).name
        move_manifest(source / name, run.proposals_folder / name, places)


# ---- the check --------------------------------------------------------------------------------------


def gpu_check(
    data: Path = CHECK_DATA,
    out: Path = Path("runs/gpu-check"),
    device: str = "auto",
    precisions: Sequence[str] | None = None,
    cpu: bool = True,
    dry_run: bool = False,
    progress: Progress = SILENT,
) -> CheckReport:
    """Run the check (the module's docstring) with the carried folder ``data``, on ``device`` (``auto``:
    CUDA where there is one), its short runs in ``precisions`` (default: fp32, bf16 and fp16 on CUDA, fp32
    on the CPU), writing under ``out``; with ``cpu``, the short runs in fp32 on the CPU too. ``dry_run``:
    the folder checked, each short run's config resolved and its plan made (the carried proposals up to
    date), nothing run."""
    from stages.runs.devices import pick_device

    device = pick_device(device).type  # UserError for CUDA asked of a machine without
    data, out = check_data(data), ensure_folder(Path(out))
    found = CheckReport(_environment())
    if precisions is None:
        precisions = ("fp32", "bf16", "fp16") if device == "cuda" else ("fp32",)
    runs = [(device, precision) for precision in precisions] + (
        [("cpu", "fp32")] if cpu and device != "cpu" else []
    )
    with _logged(out / "gpu-check.log"):
        log.info("gpu-check on %s", found.environment)
        if dry_run:
            for where, precision in runs:
                found.rows.append(
                    _attempt("run", "plan", where, precision, partial(_plan, data, out, where, precision))
                )
        else:
            found.rows.append(_attempt("tests", "pytest -m cuda", device, "", lambda: _cuda_tests(out)))
            found.rows += _ops(device)
            for where, precision in runs:
                found.rows += _short_run(data, out, where, precision, progress)
            if device == "cpu":  # vgg16 with 2000 proposals an image: minutes on a CPU, seconds on a GPU
                found.rows.append(
                    CheckRow("bench", "rcnn bench methods --backbone vgg16", "cpu", status="skipped")
                )
            else:
                found.rows += _bench(data, device, progress)
        with atomic_path(out / "gpu-check.md") as tmp:
            tmp.write_text(found.markdown(), encoding="utf-8")
        write_json(
            out / "gpu-check.json",
            {"environment": found.environment, "rows": [dataclasses.asdict(r) for r in found.rows]},
        )
    return found


def _environment() -> dict[str, Any]:
    """The machine as the table's header gives it: Python, torch, CUDA and the GPU, OpenCV's contrib."""
    import cv2
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "cpu cores": os.cpu_count(),
        "opencv contrib": hasattr(cv2, "ximgproc"),
    }


@contextmanager
def _logged(path: Path) -> Iterator[None]:
    """Every log record of the check (the stages' too) also in ``path``."""
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        handler.close()


def _attempt(
    part: str, what: str, device: str, precision: str, work: Callable[[], CheckRow | None]
) -> CheckRow:
    """``work``'s row, or one saying how it failed (its traceback in the log): a failure ends one part."""
    started = time.perf_counter()
    try:
        row = work()
    except Exception as exc:  # the check reports every failure and goes on
        log.error("%s %s on %s %s failed:\n%s", part, what, device, precision, traceback.format_exc())
        first = str(exc).splitlines()[0] if str(exc) else ""
        return CheckRow(
            part,
            what,
            device,
            precision,
            time.perf_counter() - started,
            status=f"failed: {type(exc).__name__}: {first}"[:200],
        )
    return (
        row
        if isinstance(row, CheckRow)
        else CheckRow(part, what, device, precision, time.perf_counter() - started)
    )


def _plan(data: Path, out: Path, device: str, precision: str) -> CheckRow:
    """The short run's plan: its config resolved, the carried proposals up to date in it."""
    from stages.pipeline.run import State, plan

    run = out / "runs" / f"{device}-{precision}"
    config = _config(data, run, device, precision, SHORT)
    _carried_proposals(data, config.run.layout)
    planned = plan(config)
    searched = [
        p.step.name for p in planned if p.step.key.stage == "propose" and p.state is not State.UP_TO_DATE
    ]
    if searched:
        raise UserError(
            f"{run}: {', '.join(searched)} would run selective search: the carried proposals do not match"
        )
    return CheckRow("run", "plan", device, precision, note=f"{len(planned)} stages, proposals carried")


def _cuda_tests(out: Path) -> CheckRow:
    """The suite's CUDA tests in a process of their own (they skip without CUDA), counted from their
    JUnit report."""
    import xml.etree.ElementTree as ElementTree

    started = time.perf_counter()
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    report_file = out / "cuda-tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"]
    command += [f"--junit-xml={report_file}", str(ROOT / "tests")]
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    log.info("pytest -m cuda:\n%s%s", done.stdout, done.stderr)
    counts = "no report"
    if report_file.is_file():
        root = ElementTree.parse(report_file).getroot()
        suite = root.find("testsuite") if root.tag == "testsuites" else root
        if suite is not None:
            numbers = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
            counts = ", ".join(f"{value} {key}" for key, value in numbers.items())
    status = "ok" if done.returncode == 0 else f"failed ({done.returncode})"
    return CheckRow(
        "tests", "pytest -m cuda", "", "", time.perf_counter() - started, status=status, note=counts
    )


def _ops(device: str) -> list[CheckRow]:
    """torchvision's NMS and RoI pooling on ``device`` against the CPU: the same result, and the time."""
    import torch
    from torchvision.ops import batched_nms, roi_pool

    rows = []
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(20000, 2, generator=generator) * 800
    boxes = torch.cat([corners, corners + 16 + torch.rand(20000, 2, generator=generator) * 200], dim=1)
    scores, labels = (
        torch.rand(20000, generator=generator),
        torch.randint(0, 20, (20000,), generator=generator),
    )
    features = torch.randn(1, 512, 38, 63, generator=generator)
    rois = torch.cat([torch.zeros(2000, 1), boxes[:2000]], dim=1)

    def nms() -> CheckRow:
        expected = batched_nms(boxes, scores, labels, 0.7)
        moved = [t.to(device) for t in (boxes, scores, labels)]
        seconds = _timed(lambda: batched_nms(*moved, 0.7), device)
        found = batched_nms(*moved, 0.7).cpu()
        same = torch.equal(found.sort().values, expected.sort().values)
        return CheckRow(
            "ops",
            "batched NMS, 20000 boxes",
            device,
            "fp32",
            seconds,
            status="ok" if same else "differs from the CPU's",
        )

    def pool() -> CheckRow:
        expected = roi_pool(features, rois, (7, 7), 1 / 16)
        moved = features.to(device), rois.to(device)
        seconds = _timed(lambda: roi_pool(*moved, (7, 7), 1 / 16), device)
        error = (roi_pool(*moved, (7, 7), 1 / 16).cpu() - expected).abs().max().item()
        status = "ok" if error < 1e-5 else f"differs from the CPU's by {error:.2g}"
        return CheckRow(
            "ops", "RoI pooling, 2000 RoIs on 512 x 38 x 63", device, "fp32", seconds, status=status
        )

    for name, work in (("nms", nms), ("roi pooling", pool)):
        rows.append(_attempt("ops", name, device, "fp32", work))
    return rows


def _timed(work: Callable[[], Any], device: str, repeats: int = 10) -> float:
    """Seconds of one call of ``work``, the mean of ``repeats`` after one untimed, the device synchronised."""
    import torch

    work()
    synchronise = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    synchronise()
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    synchronise()
    return (time.perf_counter() - started) / repeats


def _short_run(data: Path, out: Path, device: str, precision: str, progress: Progress) -> list[CheckRow]:
    """The demo's methods trained and tested briefly on ``device`` in ``precision``: a row a method (its
    stages' seconds, its mAP, the peak device memory of its stages), or one row saying how the run failed."""
    import torch

    run = out / "runs" / f"{device}-{precision}"
    if run.exists():
        shutil.rmtree(run)
    peaks: dict[str, float] = {}
    seconds: dict[str, float] = {}
    cuda = device != "cpu"

    def on_step(item: PlannedStep, took: float, summary: str) -> None:
        method = item.step.key.method or "shared"
        seconds[method] = seconds.get(method, 0.0) + took
        if cuda:
            peaks[method] = max(peaks.get(method, 0.0), torch.cuda.max_memory_allocated() / 2**30)
            torch.cuda.reset_peak_memory_stats()
        log.info("done %s (%.1f s)%s", item.step.name, took, f": {summary}" if summary else "")

    def execute() -> None:
        config = _config(data, run, device, precision, SHORT)
        _carried_proposals(data, config.run.layout)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        run_config(config, progress=progress, on_step=on_step)

    failed = _attempt("run", "rcnn run (short)", device, precision, execute)
    if failed.status != "ok":
        return [failed]
    rows = [
        CheckRow(
            "run",
            "pre-training and proposals",
            device,
            precision,
            seconds.get("shared"),
            peak_gib=peaks.get("shared"),
        )
    ]
    for result in report(RunLayout(run)).results:
        rows.append(
            CheckRow(
                "run",
                result.label,
                device,
                precision,
                seconds.get(result.method),
                result.map,
                peaks.get(result.method),
                note=f"test {result.test_seconds_per_image:.4f} s/image"
                if result.test_seconds_per_image
                else "",
            )
        )
    return rows


def _bench(data: Path, device: str, progress: Progress) -> list[CheckRow]:
    """``rcnn bench methods`` with vgg16 (random weights) on ``device``: each method's test pass an image
    and a training step, two images of 2000 proposals at the papers' scale."""
    from stages.bench.methods import bench_methods

    found: list[CheckRow] = []

    def bench() -> None:
        dataset = load_dataset(Path(data) / "demo", "test")
        measured = bench_methods(dataset, "vgg16", 2, 2000, 600, 2, device, progress=progress)
        for row in measured.rows:
            note = "" if row.training_step is None else f"training step {row.training_step:.3f} s"
            found.append(
                CheckRow("bench", f"{row.label}, vgg16: test an image", device, "fp32", row.total, note=note)
            )

    failed = _attempt("bench", "rcnn bench methods --backbone vgg16", device, "fp32", bench)
    return found if failed.status == "ok" and found else [failed]
