"""`rcnn bench`: speed measured on this machine."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from rcnn_cli.console import RichProgress, compact_table, out
from rcnn_cli.options import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    DEFAULT_RUN,
    CachedMethod,
    CachedMethodOption,
    DataRoot,
    DatasetFormat,
    Device,
    MethodName,
    MethodOption,
    Precision,
    RunDir,
    Split,
    given,
    layout_name,
    parse_sizes,
    stage_options,
)
from stages.methods import get_cached_method
from stages.proposals.options import ProposalOptions

app = typer.Typer(
    help="Benchmarks: speed measured on this machine.", no_args_is_help=True, add_completion=False
)

BenchBackbone = Annotated[str, typer.Option(help="tiny, alexnet, vgg16 or zf5 (random weights).")]
BenchImages = Annotated[int, typer.Option(min=1, help="Images to time.")]
BenchProposals = Annotated[int, typer.Option(min=1, help="Proposals an image.")]


def _machine() -> str:
    """This machine in a table title: processor and cores."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


@app.command("proposals")
def proposals(
    data: DataRoot,
    layout: DatasetFormat = None,
    split: Split = "test",
    images: Annotated[int, typer.Option(min=1, help="Images to search.")] = 40,
    run: Annotated[
        Path | None,
        typer.Option(
            help="A run folder: its trained networks that propose (Faster R-CNN's RPN) are scored too, and "
            "selective search searches as the run's proposals were searched."
        ),
    ] = None,
    device: Device = DEFAULT_DEVICE,
    mode: Annotated[
        str | None,
        typer.Option(help="Selective search: single, fast or quality (default: the run's, else fast)."),
    ] = None,
    max_side: Annotated[
        int | None,
        typer.Option(min=16, help="Selective search's longer side (px; default: the run's, else 500)."),
    ] = None,
) -> None:
    """Selective-search throughput (images/s) with 1 worker and with all cores, and each proposer's
    recall against IoU (0.5 to 0.95) with its best 300, 1,000 and 2,000 proposals an image, beside its
    seconds an image (Faster R-CNN's figure 2 and table 5, on your data).

    Examples:

      rcnn bench proposals --data data/demo --split test --images 40

      rcnn bench proposals --data data/demo --split test --images 40 --run runs/demo
    """
    from stages.bench.proposals import bench_proposals
    from stages.datasets.formats import load_dataset
    from stages.proposals.recall import PROPOSAL_COUNTS
    from stages.runs.layout import RunLayout

    dataset = load_dataset(data, split, format=layout_name(layout))
    layout_of_run = None if run is None else RunLayout(run)
    searched = given(mode=mode, max_side=max_side)
    found = bench_proposals(dataset, images, searched, layout_of_run, device, progress=RichProgress())
    table = Table(title=f"selective search ({found.options.mode}) on {data}/{split}: {_machine()}")
    for column in ("workers", "images", "seconds", "images/s", "speed-up"):
        table.add_column(column, justify="right")
    rows = found.throughput
    for row in rows:
        table.add_row(
            str(row.workers),
            str(row.images),
            f"{row.seconds:.1f}",
            f"{row.images_per_second:.2f}",
            f"{row.images_per_second / rows[0].images_per_second:.2f}x",
        )
    out.print(table)
    if all(proposer.curves is None for proposer in found.proposers):
        return
    recall = compact_table(
        f"proposal recall on {images} images of {data}/{split} (R: at IoU 0.5, with the best 300; "
        "AR: averaged over IoU 0.5 to 0.95)"
    )
    recall.add_column("proposer", no_wrap=True)
    for column in ("s/\nimage", "boxes/\nimage", "R\n300"):
        recall.add_column(column, justify="right")
    for count in PROPOSAL_COUNTS:
        recall.add_column(f"AR\n{count}", justify="right")
    for proposer in found.proposers:
        if (curves := proposer.curves) is not None:
            recall.add_row(
                proposer.label,
                f"{proposer.seconds_per_image:.3f}",
                f"{curves.boxes_per_image:.0f}",
                f"{curves.at(0.5, '300'):.3f}",
                *(f"{curves.average(str(count)):.3f}" for count in PROPOSAL_COUNTS),
            )
    out.print(recall)


@app.command("detect-memory")
def detect_memory(
    image: Annotated[Path, typer.Option(help="The image to enlarge (keeps its aspect).")],
    run: RunDir = DEFAULT_RUN,
    method: MethodOption = MethodName.fast,  # type: ignore[attr-defined]
    long_sides: Annotated[
        str, typer.Option(help="Comma-separated longer sides in pixels to enlarge the image to.")
    ] = "4000,12000",
) -> None:
    """Peak memory of `rcnn detect` on an image as it is and enlarged to each longer side.

    Each size runs `rcnn detect` in a fresh process; the kernel reports its peak resident memory.
    The first row is what detect costs on an ordinary image (most of it: loading torch).

    Example: rcnn bench detect-memory --run runs/demo --image data/demo/JPEGImages/000003.jpg
    """
    from stages.bench.detect_memory import bench_detect_memory
    from stages.runs.layout import RunLayout

    rows = bench_detect_memory(
        RunLayout(run),
        method.value,
        image,
        parse_sizes(long_sides, "--long-sides"),
        progress=RichProgress(),
    )
    table = Table(title=f"rcnn detect --method {method.value}: peak memory by image size ({_machine()})")
    for column in ("image", "megapixels", "JPEG MiB", "peak RSS MiB", "seconds"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            f"{r.width} x {r.height}",
            f"{r.width * r.height / 1e6:.1f}",
            f"{r.file_bytes / 2**20:.1f}",
            f"{r.peak_rss_mb:.0f}",
            f"{r.seconds:.1f}",
        )
    out.print(table)


@app.command("coco-read")
def coco_read(
    images: Annotated[int, typer.Option(min=1, help="Images in the generated split.")] = 118_287,
    annotations: Annotated[int, typer.Option(min=0, help="Objects in it.")] = 860_001,
) -> None:
    """Time and peak memory of reading a generated COCO split (default: COCO train2017's counts, with
    24-point segmentations: a JSON of about 450 MB), in a fresh process.

    Example: rcnn bench coco-read --images 5000 --annotations 36781
    """
    from stages.bench.coco_read import bench_coco_read

    row = bench_coco_read(images, annotations)
    table = Table(title=f"reading a COCO split with load_dataset ({_machine()})")
    for column in ("images", "annotations", "JSON MiB", "seconds", "peak RSS MiB"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{row.images:,}",
        f"{row.annotations:,}",
        f"{row.file_bytes / 2**20:.0f}",
        f"{row.seconds:.1f}",
        f"{row.peak_rss_mb:.0f}",
    )
    out.print(table)


@app.command("svm-memory")
def svm_memory(
    run: RunDir = DEFAULT_RUN,
    method: CachedMethodOption = CachedMethod.rcnn,  # type: ignore[attr-defined]
    split: Annotated[str, typer.Option(help="Split whose feature cache to enlarge.")] = "trainval",
    copies: Annotated[str, typer.Option(help="Comma-separated cache sizes, in copies of the split.")] = "1,4",
) -> None:
    """Peak memory of train-svm on the split's feature cache and on copies of it k times the size.

    Each size runs `rcnn train-svm` in a fresh process and reads the peak resident memory it recorded.

    Example: rcnn bench svm-memory --run runs/demo --copies 1,4
    """
    from stages.bench.svm_memory import bench_svm_memory
    from stages.runs.layout import RunLayout

    sizes = list(parse_sizes(copies, "--copies"))
    rows = bench_svm_memory(
        RunLayout(run), get_cached_method(method.value), split, sizes, progress=RichProgress()
    )
    table = Table(title=f"train-svm peak memory ({method.value}, {split} cache x copies)")
    for column in ("copies", "regions", "file MiB", "features MiB (uncompressed)", "peak RSS MiB", "seconds"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r.copies),
            str(r.rows),
            f"{r.file_bytes / 2**20:.0f}",
            f"{r.feature_bytes / 2**20:.0f}",
            f"{r.peak_rss_mb:.0f}",
            f"{r.seconds:.1f}",
        )
    out.print(table)


@app.command("features")
def features(
    data: DataRoot,
    layout: DatasetFormat = None,
    split: Split = "test",
    backbone: BenchBackbone = "zf5",
    images: BenchImages = 5,
    proposals: BenchProposals = 2000,
    image_size: Annotated[int, typer.Option(help="Shorter side the images are resized to (px).")] = 375,
    scales: Annotated[
        list[str] | None,
        typer.Option(help="SPP-net scale sets, comma-separated, repeatable (default: 688 and the five)."),
    ] = None,
    device: Device = DEFAULT_DEVICE,
) -> None:
    """Feature time an image: R-CNN's warped crops against SPP-net's shared conv5, same images,
    proposals, backbone and machine; conv and fc parts and the speed-up.

    The paper (ZF-5, GPU, proposals excluded): 102x at one scale, 38x at five.

    Example: rcnn bench features --data data/demo --backbone zf5 --images 3
    """
    from stages.bench.features import bench_features
    from stages.datasets.formats import load_dataset

    groups = scales or ["688", "480,576,688,864,1200"]
    scale_sets = [parse_sizes(group, "--scales") for group in groups]
    rows = bench_features(
        load_dataset(data, split, format=layout_name(layout)),
        backbone,
        images,
        proposals,
        image_size,
        scale_sets,
        device,
        progress=RichProgress(),
    )
    table = Table(
        title=f"features of {proposals} proposals an image, {backbone}, shorter side {image_size}: "
        + f"{_machine()}, {device}"
    )
    for column in ("method", "scales", "conv s/img", "fc s/img", "total s/img", "speed-up over R-CNN"):
        table.add_column(column, justify="left" if column in ("method", "scales") else "right")
    for row in rows:
        table.add_row(
            row.method,
            ",".join(map(str, row.scales)) or "-",
            *(_seconds(value) for value in (row.conv, row.fc, row.total)),
            _times(rows[0].total / row.total),
        )
    out.print(table)


@app.command("methods")
def methods(
    data: DataRoot,
    layout: DatasetFormat = None,
    split: Split = "test",
    backbone: BenchBackbone = "tiny",
    images: BenchImages = 3,
    proposals: BenchProposals = 2000,
    image_size: Annotated[
        int, typer.Option(help="Shorter side of the images (px): SPP-net's scale and Fast R-CNN's.")
    ] = 600,
    fc6_rank: Annotated[int | None, typer.Option(help="SVD rank of fc6 (default: width / 4).")] = None,
    fc7_rank: Annotated[int | None, typer.Option(help="SVD rank of fc7 (default: width / 16).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Timed training mini-batches a method.")] = 3,
    device: Device = DEFAULT_DEVICE,
    precision: Precision = DEFAULT_PRECISION,
) -> None:
    """The lineage side by side: test seconds an image (conv, fc, total) and seconds a training
    mini-batch of R-CNN, SPP-net (one scale), Fast R-CNN and Fast R-CNN + SVD, on the same images,
    proposals, backbone and machine, with the speed-ups over R-CNN and the paper's VGG16 figures beside;
    torchvision's RoI heads on Fast R-CNN's conv5 and fc weights as a peer. Then the work (multiply-adds
    of the conv and fc layers) against this machine's matrix-product rate at the precision, and where
    Fast R-CNN's test pass spends its time.

    Examples:

      rcnn bench methods --data data/demo --backbone alexnet --images 2

      rcnn bench methods --data data/demo --backbone alexnet --images 2 --precision bf16
    """
    from stages.bench.methods import MATMUL_SHAPE, PAPER_VGG16, bench_methods
    from stages.datasets.formats import load_dataset

    bench = bench_methods(
        load_dataset(data, split, format=layout_name(layout)),
        backbone,
        images,
        proposals,
        image_size,
        steps,
        device,
        precision=precision.value,
        compress=given(fc6_rank=fc6_rank, fc7_rank=fc7_rank),
        progress=RichProgress(),
    )
    rows = bench.rows
    table = compact_table(  # nine columns
        title=f"{proposals} proposals an image, {backbone}, shorter side {image_size}: "
        + f"{_machine()}, {device}, {precision.value}",
        caption="test seconds an image (proposals excluded); train: seconds a mini-batch; paper: Fast R-CNN "
        "table 4, VGG16, one GPU (test s an image, speed-up, training hours); "
        f"{', '.join(bench.peers)}: a peer of a method's test pass, not trained (see --help)",
    )
    columns = (
        "method",
        "conv\ns",
        "fc\ns",
        "test\ns",
        "speed\nup",
        "train\ns",
        "paper\ns",
        "paper\nx",
        "paper\nh",
    )
    table.add_column(columns[0], no_wrap=True)
    for column in columns[1:]:
        table.add_column(column, justify="right")
    for row in rows:
        figures = PAPER_VGG16.get((row.method, row.variant))
        paper = [f"{figures[0]:.2f}", f"{figures[1]}x", f"{figures[2]:g}"] if figures else ["", "", ""]
        table.add_row(
            row.label,
            *(_seconds(value) for value in (row.conv, row.fc, row.total)),
            _times(rows[0].total / row.total),
            "" if row.training_step is None else _seconds(row.training_step),
            *paper,
        )
    out.print(table)
    rate = bench.macs_per_second
    floor = compact_table(
        title=f"the work against the floor: {rate / 1e9:.0f} G multiply-adds a second "
        f"({'x'.join(map(str, MATMUL_SHAPE))} matrix product, {precision.value})",
        caption="G: 10^9 multiply-adds an image; floor: seconds at the matrix-product rate",
    )
    floor.add_column("method", no_wrap=True)
    for column in ("conv\nG", "fc\nG", "conv\nfloor s", "fc\nfloor s", "test\ns", "of the\nfloor"):
        floor.add_column(column, justify="right")
    for row in rows:
        floor.add_row(
            row.label,
            f"{row.conv_macs / 1e9:.4g}",
            f"{row.fc_macs / 1e9:.4g}",
            _seconds(row.conv_macs / rate),
            _seconds(row.fc_macs / rate),
            _seconds(row.total),
            f"{row.floor_fraction(rate):.0%}",
        )
    out.print(floor)
    out.print(
        _breakdown(
            "where the test passes spend their time (torch profiler, post-processing included)",
            bench.breakdowns,
            "s an image",
        )
    )
    trained = [
        row for row in rows if row.training_macs is not None and not row.variant
    ]  # a variant trains as its method
    if trained:
        training = compact_table(
            title="training mini-batches against the floor (forward and backward)",
            caption="G: 10^9 multiply-adds a mini-batch, forward and backward; floor: seconds at the "
            "matrix-product rate; train: forward, backward and SGD step",
        )
        training.add_column("method", no_wrap=True)
        for column in ("G", "floor\ns", "train\ns", "of the\nfloor"):
            training.add_column(column, justify="right")
        for row in trained:
            assert row.training_step is not None and row.training_macs is not None
            training.add_row(
                row.label,
                f"{row.training_macs / 1e9:.4g}",
                _seconds(row.training_macs / rate),
                _seconds(row.training_step),
                f"{row.training_floor_fraction(rate):.0%}",
            )
        out.print(training)
    if bench.training_breakdowns:
        title = "where the training mini-batches spend their time (torch profiler, backward with its op)"
        out.print(_breakdown(title, bench.training_breakdowns, "s a batch"))


def _breakdown(title: str, breakdowns: dict[str, dict[str, float]], unit: str) -> Table:
    """Seconds by kind of op of each profiled pass (name -> kind -> seconds), with their shares."""
    table = compact_table(title)
    table.add_column("ops")
    for name in breakdowns:
        table.add_column(f"{name}\n{unit}", justify="right")
        table.add_column("\nshare", justify="right")
    wholes = {name: sum(parts.values()) for name, parts in breakdowns.items()}
    for kind in next(iter(breakdowns.values())):
        cells = []
        for name, parts in breakdowns.items():
            cells += [_seconds(parts[kind]), f"{parts[kind] / wholes[name]:.0%}"]
        table.add_row(kind, *cells)
    return table


@app.command("scaling")
@stage_options(ProposalOptions, only=("mode", "max_side"))
def scaling(
    data: DataRoot,
    layout: DatasetFormat = None,
    split: Split = "test",
    run: Annotated[
        Path, typer.Option(help="A run with the method's network (its fine-tuned model or backbone.pt).")
    ] = Path("runs/demo"),
    method: CachedMethodOption = CachedMethod.rcnn,  # type: ignore[attr-defined]
    before_finetuning: Annotated[
        bool,
        typer.Option(
            "--before-finetuning", help="SPP-net: time the first pass (the pyramids, from backbone.pt)."
        ),
    ] = False,
    processes: Annotated[
        str,
        typer.Option(help="Process counts, comma-separated (default: 1, 2, 4, ... up to the cores)."),
    ] = "",
    cores: Annotated[
        int, typer.Option(min=1, help="Cores a process (selective-search workers, torch threads).")
    ] = 1,
    backbone: BenchBackbone = "tiny",
    images: Annotated[int, typer.Option(min=1, help="Images a size and count of the growth table.")] = 2,
    sides: Annotated[str, typer.Option(help="Shorter sides of the growth table (px).")] = "300,600,900,1200",
    counts: Annotated[str, typer.Option(help="Proposal counts of the growth table.")] = "500,1000,2000,4000",
    device: Device = DEFAULT_DEVICE,
    precision: Precision = DEFAULT_PRECISION,
    *,
    given: dict[str, Any],
) -> None:
    """How cost grows: images a second of `rcnn propose` and `rcnn extract-features` on the whole split
    with 1, 2, ... processes (torchrun; --cores each, one by default, so that the counts compare
    processes as if each had a machine or GPU of its own), then the seconds an image of selective search
    and of each method's test pass as images grow (at 2,000 proposals) and as proposals grow (at shorter
    side 600): enough to predict the cost of a dataset.

    Examples:

      rcnn bench scaling --data data/demo --run runs/demo

      rcnn bench scaling --data data/demo --run runs/demo --backbone alexnet --images 1 --processes 1,2
    """
    from stages.bench.scaling import bench_growth, bench_processes
    from stages.datasets.formats import load_dataset
    from stages.runs.layout import RunLayout

    cores_here = os.cpu_count() or 1
    doublings = tuple(2**k for k in range(cores_here.bit_length()) if 2**k <= cores_here)
    counts_of = parse_sizes(processes, "--processes") if processes else doublings
    rows = bench_processes(
        data,
        split,
        RunLayout(run),
        get_cached_method(method.value),
        counts_of,
        (searched := ProposalOptions(**given)),
        layout_name(layout),
        cores,
        device,
        precision.value,
        before_finetuning=before_finetuning,
        progress=RichProgress(),
    )
    table = compact_table(
        title=f"the stages under torchrun on {data}/{split}, {cores} core(s) a process, features on "
        f"{device} in {precision.value}: {_machine()}",
    )
    base = counts_of[0]
    for column in ("stage", "processes", "images", "seconds", "images/s", f"speed-up over {base}"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    first = {row.stage: row for row in rows if row.processes == base}
    for row in rows:
        table.add_row(
            row.stage,
            str(row.processes),
            str(row.images),
            f"{row.seconds:.1f}",
            f"{row.images_per_second:.2f}",
            _times(row.images_per_second / first[row.stage].images_per_second),
        )
    out.print(table)
    grown = bench_growth(
        load_dataset(data, split, format=layout_name(layout)),
        backbone,
        images,
        parse_sizes(sides, "--sides"),
        parse_sizes(counts, "--counts"),
        device,
        mode=searched.mode,
        precision=precision.value,
        progress=RichProgress(),
    )
    growth = compact_table(
        title=f"seconds an image as images and proposals grow: {backbone}, {device}, {precision.value}",
        caption=f"selective search: {searched.mode} mode, one process, at the image's size; test passes: "
        "proposals excluded, SPP-net at one scale (the side)",
    )
    names = list(grown[0].methods)
    for column in ("shorter side", "proposals", "selective search", *names):
        growth.add_column(column, justify="right")
    for grew in grown:
        growth.add_row(
            str(grew.side),
            str(grew.proposals),
            "" if grew.search is None else _seconds(grew.search),
            *(_seconds(grew.methods[name]) for name in names),
        )
    out.print(growth)


def _seconds(value: float) -> str:
    """At most five characters, as many decimals as fit: 0.123, 12.35, 123.5, 1235."""
    decimals = next((d for d, limit in ((3, 9.9995), (2, 99.995), (1, 999.95)) if value < limit), 0)
    return f"{value:.{decimals}f}"


def _times(value: float) -> str:
    """A speed-up in at most five characters: 1.0x, 26.6x, 147x."""
    return f"{value:.1f}x" if value < 99.95 else f"{value:.0f}x"


@app.command("startup")
def startup(
    repeats: Annotated[int, typer.Option(min=1, help="Runs of each command's --help.")] = 5,
) -> None:
    """Seconds the command line takes to answer --help (rcnn and every command), each in a fresh process.

    Example: rcnn bench startup --repeats 5
    """
    import typer.main

    from rcnn_cli.app import app as root
    from stages.bench.startup import bench_startup

    def paths(group, path: list[str]):
        yield path
        for name, command in sorted(getattr(group, "commands", {}).items()):
            yield from paths(command, [*path, name])

    commands = list(paths(typer.main.get_command(root), []))
    rows = bench_startup(commands, repeats, progress=RichProgress())
    table = Table(title=f"rcnn ... --help, {repeats} runs each: {_machine()}", box=box.SIMPLE_HEAD)
    for column in ("command", "median s", "best s"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for row in rows:
        table.add_row(f"rcnn {row.command}".strip(), f"{row.median:.2f}", f"{row.best:.2f}")
    out.print(table)


@app.command("gpu-check")
def gpu_check(
    data: Annotated[
        Path, typer.Option(help="The carried folder: the small demo split and its proposals (--prepare).")
    ] = Path("data/gpu-check"),
    out_folder: Annotated[
        Path, typer.Option("--out", help="Where the table, the log and the short runs go.")
    ] = Path("runs/gpu-check"),
    device: Device = DEFAULT_DEVICE,
    precisions: Annotated[
        str | None,
        typer.Option(help="Comma-separated precisions of the short runs (default: fp32,bf16,fp16 on CUDA)."),
    ] = None,
    cpu: Annotated[
        bool, typer.Option(help="The short runs in fp32 on the CPU too, beside the device's.")
    ] = True,
    prepare: Annotated[
        bool, typer.Option("--prepare", help="Make the carried folder here (selective search on this CPU).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the folder and plan each short run; run nothing.")
    ] = False,
) -> None:
    """The CUDA paths run once, briefly, in minutes: the CUDA tests, NMS and RoI pooling against the CPU,
    the demo's four methods trained and tested on the device in each precision (and on the CPU beside
    them), and `bench methods` with vgg16; one table (seconds, mAP, peak GPU memory) and a log in --out.

    Runs from the working tree (scripts/gpu-check sets PYTHONPATH; no install) with the carried folder,
    made here first with --prepare: selective search stays on this machine's CPU.

    Examples:

      rcnn bench gpu-check --prepare

      scripts/gpu-check --device cuda --out $OUT

      rcnn bench gpu-check --device cpu --dry-run
    """
    from stages.check.gpu import gpu_check as check
    from stages.check.gpu import prepare_check_data

    if prepare:
        folder = prepare_check_data(data, progress=RichProgress())
        out.print(f"made {folder}: carry it to the GPU machine with the working tree")
        return
    chosen = None if precisions is None else [p.strip() for p in precisions.split(",") if p.strip()]
    found = check(data, out_folder, device, chosen, cpu=cpu, dry_run=dry_run, progress=RichProgress())
    table = compact_table(f"gpu-check: {', '.join(f'{k} {v}' for k, v in found.environment.items())}")
    for column in ("part", "what", "device", "precision", "s", "mAP", "peak GiB", "status"):
        table.add_column(column, justify="right" if column in ("s", "mAP", "peak GiB") else "left")
    for row in found.rows:
        numbers = [f"{row.seconds:.2f}" if row.seconds is not None else "-"]
        numbers += [f"{row.map:.3f}" if row.map is not None else "-"]
        numbers += [f"{row.peak_gib:.2f}" if row.peak_gib is not None else "-"]
        table.add_row(row.part, row.what, row.device, row.precision, *numbers, row.status)
    out.print(table)
    out.print(f"table: {out_folder / 'gpu-check.md'}; log: {out_folder / 'gpu-check.log'}")
