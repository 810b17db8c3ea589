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
    Restart,
    RunDir,
    Seed,
    Split,
    Workers,
    parse_classes,
)

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
    restart: Restart = False,
    classes: Classes = None,
) -> None:
    """Pre-train a backbone by classifying the split's object crops; writes RUN/backbone.pt.

    The papers pre-train on ImageNet; this is the stand-in for users without ImageNet weights (and the
    demo's first network stage). Resumes from its checkpoint unless --restart.

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
    summary = run_pretrain(dataset, run, options, resume=not restart, progress=RichProgress())
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
    method: MethodOption = Method.rcnn,
    run: RunDir = DEFAULT_RUN,
    backbone: Backbone = None,
    weights: Annotated[
        str | None,
        typer.Option(help="Start from: RUN/backbone.pt (default), imagenet, random, or a weights file."),
    ] = None,
    iterations: Iterations = None,
    learning_rate: LearningRate = None,
    step: Step = None,
    seed: Seed = 0,
    checkpoint_every: CheckpointEvery = 1000,
    workers: Workers = 0,
    device: Device = "auto",
    restart: Restart = False,
    classes: Classes = None,
) -> None:
    """Fine-tune the network on the split's proposals; an (N+1)-way classifier.

    R-CNN (the paper's defaults): the whole network on warped windows, SGD at 0.001, x0.1 every 20k of 40k
    iterations, 32 foreground (IoU >= 0.5) and 96 background windows a mini-batch. SPP-net: fc6, fc7 and
    the new layer only, on the cached pyramids of `rcnn extract-features --method spp`; 25% foreground,
    background IoU in [0.1, 0.5); 250k iterations at 1e-4, then 50k at 1e-5. Writes
    RUN/METHOD/finetune/model.pt, with checkpoint.pt and log.csv beside it; resumes unless --restart.

    Examples:

      rcnn finetune --data data/demo --run runs/demo --iterations 600 --learning-rate 0.01 --step 400

      rcnn finetune --method spp --data data/demo --run runs/demo --iterations 2000

      rcnn finetune --data VOC2007 --run runs/voc --backbone alexnet --weights imagenet
    """
    from stages.voc import load_dataset

    dataset = load_dataset(data, split, parse_classes(classes))
    solver = _given(iterations=iterations, learning_rate=learning_rate, step=step)
    if method == Method.spp:
        from stages.sppnet import SppFinetuneOptions
        from stages.sppnet import finetune as run_finetune

        options = SppFinetuneOptions(seed=seed, checkpoint_every=checkpoint_every, device=device, **solver)
    else:
        from stages.rcnn import FinetuneOptions
        from stages.rcnn import finetune as run_finetune

        options = FinetuneOptions(
            backbone=backbone,
            weights=weights,
            seed=seed,
            checkpoint_every=checkpoint_every,
            workers=workers,
            device=device,
            **solver,
        )
    summary = run_finetune(dataset, run, options, resume=not restart, progress=RichProgress())
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
