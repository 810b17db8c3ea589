"""`rcnn pretrain`, `rcnn finetune` and `rcnn compress`: the network-training stages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import (
    DEFAULT_RUN,
    Classes,
    CompressibleMethod,
    DataRoot,
    DatasetFormat,
    MethodName,
    MethodOption,
    Resume,
    RunDir,
    SkipBad,
    Split,
    layout_name,
    parse_classes,
    stage_options,
)
from stages.methods import METHODS, get_method
from stages.training.options import PretrainOptions

if TYPE_CHECKING:
    from stages.training.solver import TrainingSummary


def _table(title: str, rows: dict[str, str]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows.items():
        table.add_row(key, value)
    out.print(table)


def _training_rows(summary: TrainingSummary, accuracy_of: str) -> dict[str, str]:
    return {
        **{name.replace("_", " "): str(count) for name, count in summary.trained_on.items()},
        "iterations": str(summary.iterations),
        "final loss": f"{summary.final_loss:.4f}",
        f"final accuracy ({accuracy_of})": f"{summary.final_accuracy:.3f}",
        "seconds": f"{summary.seconds:.1f}",
    }


@stage_options(PretrainOptions)
def pretrain(
    data: DataRoot,
    split: Split = "trainval",
    run: RunDir = DEFAULT_RUN,
    resume: Resume = True,
    classes: Classes = None,
    layout: DatasetFormat = None,
    skip_bad: SkipBad = False,
    *,
    given: dict[str, Any],
) -> None:
    """Pre-train a backbone by classifying the split's object crops; writes RUN/backbone.pt.

    The papers pre-train on ImageNet; this is the stand-in for users without ImageNet weights (and the
    demo's first network stage). Resumes from its checkpoint (--resume, the default) unless --restart.

    Example: rcnn pretrain --data data/demo --split trainval --run runs/demo --iterations 300
    """
    from stages.datasets.formats import load_dataset
    from stages.runs.layout import RunLayout
    from stages.training.pretrain import pretrain as run_pretrain

    options = PretrainOptions(**given)
    dataset = load_dataset(data, split, parse_classes(classes), skip_bad, RichProgress(), layout_name(layout))
    summary = run_pretrain(dataset, RunLayout(run), options, resume=resume, progress=RichProgress())
    _table(f"pre-trained {options.backbone}: {summary.path}", _training_rows(summary, "training crops"))


@stage_options(METHODS.command_options("finetune"))
def finetune(
    data: DataRoot,
    split: Split = "trainval",
    method: MethodOption = MethodName.fast,  # type: ignore[attr-defined]
    run: RunDir = DEFAULT_RUN,
    resume: Resume = True,
    classes: Classes = None,
    layout: DatasetFormat = None,
    skip_bad: SkipBad = False,
    *,
    given: dict[str, Any],
) -> None:
    """Fine-tune a detector's network on the split (and its proposals). Options left out take the method's
    paper settings.

    Fast R-CNN (the default; the paper's settings): the whole network from conv2 (conv3_1 for vgg16) up
    (--trainable-from another conv layer, or fc6 for the fc layers alone: section 4.5's ablation),
    end to end with the multi-task loss, 2 images and 128 RoIs a mini-batch (25% foreground), flipped at
    random; SGD at 0.001, x0.1 after 30k of 40k iterations. Data-parallel under torchrun (NCCL on GPUs, gloo
    on CPUs). R-CNN: the whole network on warped windows, 32 foreground (IoU >= 0.5) and 96 background
    windows a mini-batch, x0.1 every 20k of 40k iterations. SPP-net: fc6, fc7 and the new layer only, on
    the cached pyramids of `rcnn extract-features --method spp`; 250k iterations at 1e-4, then 50k at 1e-5.
    Faster R-CNN: a region proposal network on Fast R-CNN's conv5, trained with it (approximate joint
    training: one image a mini-batch, 256 anchors for the RPN, 128 of its proposals for Fast R-CNN's head);
    no proposals read; 60k iterations at 0.001, then 20k at 0.0001. --scheme alternating: the paper's 4
    steps instead (RPN; Fast R-CNN on its proposals; the RPN's layers, then the head's, on a frozen shared
    conv), each of --iterations, each checkpointed in RUN/faster/finetune/stepK/.
    Writes RUN/METHOD/finetune/model.pt, with checkpoint.pt and log.csv beside it; an interrupted run
    resumes (--resume, the default) unless --restart.
    Under torchrun, put `--` before `finetune` (torchrun would take --run for its --run-path).

    Examples:

      rcnn finetune --data data/demo --run runs/demo --scales 480 --iterations 2000 --step 1500

      torchrun --nproc_per_node=2 -m rcnn_cli -- finetune --data data/demo --run runs/demo --device cpu

      rcnn finetune --method rcnn --data data/demo --run runs/demo --iterations 600

      rcnn finetune --method spp --data data/demo --run runs/demo --iterations 2000

      rcnn finetune --method faster --data data/demo --run runs/demo --anchor-sizes 32,64,128,256

      rcnn finetune --method faster --scheme alternating --data data/demo --run runs/alt --iterations 1000
    """
    from stages.datasets.formats import load_dataset
    from stages.runs.layout import RunLayout

    chosen = get_method(method.value)
    options = chosen.finetune_options(given)
    dataset = load_dataset(data, split, parse_classes(classes), skip_bad, RichProgress(), layout_name(layout))
    summary = chosen.finetune(dataset, RunLayout(run), options, resume=resume, progress=RichProgress())
    if summary.writer:
        processes = f"{summary.processes} process{'es' if summary.processes > 1 else ''}"
        _table(
            f"fine-tuned ({chosen.name}, {processes}): {summary.path}",
            _training_rows(summary, "training batches"),
        )


@stage_options(METHODS.command_options("compress"))
def compress(
    run: RunDir = DEFAULT_RUN,
    method: Annotated[
        CompressibleMethod, typer.Option("--method", help="Which detector's network to compress.")
    ] = CompressibleMethod.fast,  # type: ignore[attr-defined]
    *,
    given: dict[str, Any],
) -> None:
    """Compress Fast (or Faster) R-CNN's fc6 and fc7 by truncated SVD (Fast R-CNN section 3.1) into
    RUN/METHOD/compressed/model.pt.

    Each layer W (u x v) becomes two: S_t V_t^T (t x v, no bias) then U_t (u x t, with the bias). The
    defaults are the paper's VGG16 ratios (1024 and 256 of 4096). Use it with `rcnn detect --compressed`
    and `rcnn evaluate --method fast --compressed`.

    Examples:

      rcnn compress --run runs/demo --fc6-rank 128 --fc7-rank 32

      rcnn compress --method faster --run runs/demo
    """
    from stages.runs.layout import RunLayout

    chosen = get_method(method.value)
    options = chosen.compress_options(given)
    summary = chosen.compress(RunLayout(run), options)
    _table(
        f"compressed: {summary.path}",
        {
            "fc6 rank, fc7 rank": f"{summary.ranks[0]}, {summary.ranks[1]}",
            "fc6 + fc7 parameters": f"{summary.parameters_before:,} -> {summary.parameters_after:,}",
        },
    )
