"""`rcnn data`: make the demo dataset, check a dataset, convert one to another layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import (
    Classes,
    DataRoot,
    DatasetFormat,
    Layout,
    Split,
    layout_name,
    parse_classes,
    parse_sizes,
)
from stages.datasets.options import DemoOptions

app = typer.Typer(
    help="Datasets: the embedded demo set, and checks of your own.",
    no_args_is_help=True,
    add_completion=False,
)


def _pair(text: str, option: str) -> tuple[int, int]:
    """``"40,80"`` -> (40, 80); anything else is a usage error for ``option``."""
    found = parse_sizes(text, option)
    if len(found) != 2:
        raise typer.BadParameter(f"{text!r}: give two numbers, MIN,MAX", param_hint=option)
    return found[0], found[1]


@app.command("demo")
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the dataset.")] = Path("data/demo"),
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same images.")
    ] = DemoOptions.seed,
    num_train: Annotated[int, typer.Option(min=1, help="Images in the train split.")] = DemoOptions.num_train,
    num_val: Annotated[int, typer.Option(min=1, help="Images in the val split.")] = DemoOptions.num_val,
    num_test: Annotated[int, typer.Option(min=1, help="Images in the test split.")] = DemoOptions.num_test,
    objects: Annotated[
        str, typer.Option(help="Objects an image: MIN,MAX.")
    ] = f"{DemoOptions.min_objects},{DemoOptions.max_objects}",
    sizes: Annotated[
        str, typer.Option(help="Object sizes (the longer side, px, log-uniform): MIN,MAX.")
    ] = f"{DemoOptions.min_size},{DemoOptions.max_size}",
    difficult_below: Annotated[
        int, typer.Option(min=0, help="Objects with a longer side below this (px) are difficult; 0: none.")
    ] = DemoOptions.difficult_below,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing folder.")] = False,
    layout: Annotated[
        Layout, typer.Option("--format", case_sensitive=False, help="Layout to write.")
    ] = Layout.voc,  # type: ignore[attr-defined]
) -> None:
    """Generate the demo dataset (splits train, val, trainval, test) in VOC, COCO or YOLO layout.

    Examples:

      rcnn data demo --out data/demo --seed 0

      rcnn data demo --out data/demo-coco --format coco

      rcnn data demo --out data/dense --objects 40,80 --sizes 12,30 --difficult-below 0  (a dense scene)
    """
    from stages.datasets.demo import generate_demo

    fewest, most = _pair(objects, "--objects")
    smallest, largest = _pair(sizes, "--sizes")
    options = DemoOptions(
        seed, num_train, num_val, num_test, fewest, most, smallest, largest, difficult_below
    )
    path = generate_demo(out_dir, options, force=force, layout=layout.value)
    out.print(f"demo dataset: {path} ({layout.value}, {num_train + num_val + num_test} images, seed {seed})")


@app.command("convert")
def convert(
    data: DataRoot,
    split: Split,
    to: Annotated[Layout, typer.Option("--to", case_sensitive=False, help="Layout to write.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write it to (other splits there stay).")],
    classes: Classes = None,
    layout: DatasetFormat = None,
) -> None:
    """Write a split in another layout: VOC, COCO or YOLO. Images are hard-linked where possible.

    Example: rcnn data convert --data data/demo --split trainval --to coco --out data/demo-coco
    """
    from stages.datasets.convert import convert as convert_split
    from stages.datasets.formats import load_dataset

    dataset = load_dataset(data, split, parse_classes(classes), format=layout_name(layout))
    done = convert_split(dataset, to.value, out_dir, RichProgress())
    out.print(f"{done.out}: split {split} as {to.value}, {done.images} images, {done.objects} objects")


@app.command("check")
def check(
    data: DataRoot,
    split: Annotated[
        list[str] | None,
        typer.Option(
            "--split",
            help="A split to check (repeatable; default: trainval). The first is the one to train on: "
            "the others' classes are compared with it.",
        ),
    ] = None,
    classes: Classes = None,
    layout: DatasetFormat = None,
) -> None:
    """Validate a dataset (VOC, COCO or YOLO layout): every annotation read, every image decoded; a table
    of each split's counts, the problems, and the layout it was read as. With several splits, their class
    lists must agree, and a class with objects to test but none to train on is a warning. Exits 2 when
    problems were found.

    Examples:

      rcnn data check --data data/VOCdevkit/VOC2007 --split trainval --split test

      rcnn data check --data my-coco --split train --split val --classes tree
    """
    from stages.datasets.formats import check_dataset

    found = check_dataset(
        data, split or ["trainval"], parse_classes(classes), RichProgress(), layout_name(layout)
    )
    first = found.splits[0].dataset
    title = "; ".join(
        f"{report.dataset.split}: {len(report.dataset)} images, {report.empty_images} without objects"
        for report in found.splits
    )
    table = Table(title=f"{data} ({first.format}): {title}")
    table.add_column("class")
    for report in found.splits:
        table.add_column(f"{escape(report.dataset.split)}\nobjects", justify="right")
        table.add_column(f"{escape(report.dataset.split)}\ndifficult", justify="right")
    names = list(dict.fromkeys(name for report in found.splits for name in report.dataset.classes))
    for name in names:
        counts = [
            (str(report.objects[name]), str(report.difficult[name])) if name in report.objects else ("-", "-")
            for report in found.splits
        ]
        table.add_row(escape(name), *(cell for pair in counts for cell in pair))
    totals = [(sum(r.objects.values()), sum(r.difficult.values())) for r in found.splits]
    table.add_row("[bold]all[/]", *(str(n) for pair in totals for n in pair), end_section=True)
    out.print(table)
    for warning in found.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if found.problems:
        count = len(found.problems)
        out.print(f"[yellow]{count} problem{'s' if count > 1 else ''}:[/]")
        for problem in found.problems:
            out.print(f"  {problem}", soft_wrap=True, markup=False)
        raise typer.Exit(2)
    out.print("[green]no problems found[/]")
