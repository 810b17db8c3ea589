"""`rcnn pretrain` and `rcnn finetune`: the two network-training stages."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import (
    DEFAULT_RUN,
    Classes,
    DataRoot,
    Device,
    Method,
    MethodOption,
    Resume,
    RunDir,
    Seed,
    Split,
    Workers,
    parse_classes,
    parse_sizes,
)
from stages.errors import UserError

Backbone = Annotated[str | None, typer.Option(help="Backbone: tiny, alexnet, vgg16 or zf5.")]
Iterations = Annotated[int | None, typer.Option(help="SGD iterations (mini-batches).")]
LearningRate = Annotated[float | None, typer.Option(help="Base learning rate.")]
Step = Annotated[int | None, typer.Option(help="Multiply the rate by 0.1 every this many iterations.")]
CheckpointEvery = Annotated[int, typer.Option(help="Save a checkpoint every this many iterations.")]


def _given(**values):
    """Only the options the user set, so the library's dataclass keeps the papers' defaults."""
    return {k: v for k, v in values.items() if v is not None}


def _summary(title: str, rows: dict[str, str]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows.items():
        table.add_row(key, value)
    out.print(table)


def pretrain(
    data: DataRoot,
    split: Split = "trainval",
    run: RunDir = DEFAULT_RUN,
    backbone: Annotated[str, typer.Option(help="Backbone: tiny, alexnet, vgg16 or zf5.")] = "tiny",
    weights: Annotated[
        str | None, typer.Option(help="Start from: imagenet, or a weights file (default: random init).")
    ] = None,
    iterations: Iterations = None,
    batch_size: Annotated[int | None, typer.Option(help="Crops a mini-batch.")] = None,
    learning_rate: LearningRate = None,
    step: Step = None,
    seed: Seed = 0,
    checkpoint_every: CheckpointEvery = 500,
    workers: Workers = 0,
    device: Device = "auto",
    resume: Resume = True,
    classes: Classes = None,
) -> None:
    """Pre-train a backbone by classifying the split's object crops; writes RUN/backbone.pt.

    The papers pre-train on ImageNet; this is the stand-in for users without ImageNet weights (and the
    demo's first network stage). Resumes from its checkpoint (--resume, the default) unless --restart.

    Example: rcnn pretrain --data data/demo --split trainval --run runs/demo --iterations 300
    """
    from stages.pretrain import PretrainOptions
    from stages.pretrain import pretrain as run_pretrain
    from stages.voc import load_dataset

    options = PretrainOptions(
        backbone=backbone,
        weights=weights,
        seed=seed,
        checkpoint_every=checkpoint_every,
        workers=workers,
        device=device,
        **_given(iterations=iterations, batch_size=batch_size, learning_rate=learning_rate, step=step),
    )
    dataset = load_dataset(data, split, parse_classes(classes))
    summary = run_pretrain(dataset, run, options, resume=resume, progress=RichProgress())
    _summary(
        f"pre-trained {backbone}: {summary.path}",
        {
            "objects": str(summary.objects),
            "iterations": str(summary.iterations),
            "final loss": f"{summary.final_loss:.4f}",
            "final accuracy (training crops)": f"{summary.final_accuracy:.3f}",
            "seconds": f"{summary.seconds:.1f}",
        },
    )


def finetune(
    data: DataRoot,
    split: Split = "trainval",
    method: MethodOption = Method.fast,
    run: RunDir = DEFAULT_RUN,
    backbone: Backbone = None,
    weights: Annotated[
        str | None,
        typer.Option(help="Start from: RUN/backbone.pt (default), imagenet, random, or a weights file."),
    ] = None,
    iterations: Iterations = None,
    learning_rate: LearningRate = None,
    step: Step = None,
    scales: Annotated[
        str,
        typer.Option(
            help="Fast R-CNN: shorter side(s); several = a random one an image (480,576,688,864,1200)."
        ),
    ] = "600",
    max_size: Annotated[
        int | None, typer.Option(help="Fast R-CNN: longest side at most (default 1000, 2000 multi-scale).")
    ] = None,
    test_scale: Annotated[
        int | None, typer.Option(help="Fast R-CNN: test scale (default: the training scale, or 600).")
    ] = None,
    seed: Seed = 0,
    checkpoint_every: CheckpointEvery = 1000,
    workers: Workers = 0,
    device: Device = "auto",
    resume: Resume = True,
    classes: Classes = None,
) -> None:
    """Fine-tune a detector's network on the split's proposals.

    Fast R-CNN (the default; the paper's settings): the whole network from conv2 (conv3_1 for vgg16) up,
    end to end with the multi-task loss, 2 images and 128 RoIs a mini-batch (25% foreground), flipped at
    random; SGD at 0.001, x0.1 after 30k of 40k iterations. Data-parallel under torchrun (NCCL on GPUs, gloo
    on CPUs). R-CNN: the whole network on warped windows, 32 foreground (IoU >= 0.5) and 96 background
    windows a mini-batch, x0.1 every 20k of 40k iterations. SPP-net: fc6, fc7 and the new layer only, on
    the cached pyramids of `rcnn extract-features --method spp`; 250k iterations at 1e-4, then 50k at 1e-5.
    Writes RUN/METHOD/finetune/model.pt, with checkpoint.pt and log.csv beside it; an interrupted run
    resumes (--resume, the default) unless --restart.
    Under torchrun, put `--` before `finetune` (torchrun would take --run for its --run-path).

    Examples:

      rcnn finetune --data data/demo --run runs/demo --scales 480 --iterations 2000 --step 1500

      torchrun --nproc_per_node=2 -m rcnn_cli -- finetune --data data/demo --run runs/demo --device cpu

      rcnn finetune --method rcnn --data data/demo --run runs/demo --iterations 600

      rcnn finetune --method spp --data data/demo --run runs/demo --iterations 2000
    """
    from stages.voc import load_dataset

    dataset = load_dataset(data, split, parse_classes(classes))
    solver = _given(iterations=iterations, learning_rate=learning_rate, step=step)
    common = dict(seed=seed, checkpoint_every=checkpoint_every, device=device, **solver)
    network = dict(backbone=backbone, weights=weights, workers=workers, **common)
    if method == Method.fast:
        from stages.fast import FastFinetuneOptions
        from stages.fast import finetune as run_finetune
        from stages.fast_sampling import SamplingOptions

        sizes = parse_sizes(scales, "--scales")
        sampling = SamplingOptions(scales=sizes, max_size=max_size or (1000 if len(sizes) == 1 else 2000))
        options = FastFinetuneOptions(sampling=sampling, test_scale=test_scale, **network)
    elif method == Method.spp:
        from stages.sppnet import SppFinetuneOptions
        from stages.sppnet import finetune as run_finetune

        if backbone is not None or weights is not None:
            raise UserError(
                "--backbone/--weights: SPP-net fine-tunes on cached pyramids; choose the conv layers with "
                "rcnn extract-features --method spp --backbone/--weights"
            )
        options = SppFinetuneOptions(**common)
    else:
        from stages.rcnn import FinetuneOptions
        from stages.rcnn import finetune as run_finetune

        options = FinetuneOptions(**network)
    summary = run_finetune(dataset, run, options, resume=resume, progress=RichProgress())
    if method == Method.fast:
        if summary.rank == 0:
            _summary(
                f"fine-tuned (fast, {summary.world_size} process{'es' if summary.world_size > 1 else ''}): "
                f"{summary.path}",
                {
                    "images (foreground RoIs)": f"{summary.images} ({summary.foreground})",
                    "iterations": str(summary.iterations),
                    "final loss": f"{summary.final_loss:.4f}",
                    "final accuracy (training batches)": f"{summary.final_accuracy:.3f}",
                    "seconds": f"{summary.seconds:.1f}",
                },
            )
        return
    _summary(
        f"fine-tuned ({method.value}): {summary.path}",
        {
            "windows (foreground)": f"{summary.windows} ({summary.foreground})",
            "iterations": str(summary.iterations),
            "final loss": f"{summary.final_loss:.4f}",
            "final accuracy (training batches)": f"{summary.final_accuracy:.3f}",
            "seconds": f"{summary.seconds:.1f}",
        },
    )


def compress(
    run: RunDir = DEFAULT_RUN,
    fc6_rank: Annotated[
        int | None, typer.Option(help="Singular values kept of fc6 (default: width / 4).")
    ] = None,
    fc7_rank: Annotated[
        int | None, typer.Option(help="Singular values kept of fc7 (default: width / 16).")
    ] = None,
) -> None:
    """Compress Fast R-CNN's fc6 and fc7 by truncated SVD (section 3.1) into RUN/fast/compressed/model.pt.

    Each layer W (u x v) becomes two: S_t V_t^T (t x v, no bias) then U_t (u x t, with the bias). The
    defaults are the paper's VGG16 ratios (1024 and 256 of 4096). Use it with `rcnn detect --compressed`
    and `rcnn evaluate --method fast --compressed`.

    Example: rcnn compress --run runs/demo --fc6-rank 128 --fc7-rank 32
    """
    from stages.fast import compress_run

    summary = compress_run(run, (fc6_rank, fc7_rank))
    _summary(
        f"compressed: {summary.path}",
        {
            "fc6 rank, fc7 rank": f"{summary.ranks[0]}, {summary.ranks[1]}",
            "fc6 + fc7 parameters": f"{summary.parameters_before:,} -> {summary.parameters_after:,}",
        },
    )
