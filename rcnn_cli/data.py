"""`rcnn data`: make the demo dataset, check a dataset, convert one to another layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import Classes, DataRoot, DatasetFormat, Layout, Split, layout_name, parse_classes
from stages.datasets.convert import convert as convert_split
from stages.datasets.demo import DemoOptions, generate_demo
from stages.datasets.formats import check_dataset, load_dataset

app = typer.Typer(help="Datasets: the embedded demo set, and checks of your own.", no_args_is_help=True)


@app.command("demo")
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the dataset.")] = Path("data/demo"),
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same images.")
    ] = DemoOptions.seed,
    num_train: Annotated[int, typer.Option(min=1, help="Images in the train split.")] = DemoOptions.num_train,
    num_val: Annotated[int, typer.Option(min=1, help="Images in the val split.")] = DemoOptions.num_val,
    num_test: Annotated[int, typer.Option(min=1, help="Images in the test split.")] = DemoOptions.num_test,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing folder.")] = False,
    layout: Annotated[Layout, typer.Option("--format", help="Layout to write.")] = Layout.voc,  # type: ignore[attr-defined]
) -> None:
    """Generate the demo dataset (splits train, val, trainval, test) in VOC, COCO or YOLO layout.

    Examples:

      rcnn data demo --out data/demo --seed 0

      rcnn data demo --out data/demo-coco --format coco
    """
    options = DemoOptions(seed=seed, num_train=num_train, num_val=num_val, num_test=num_test)
    path = generate_demo(out_dir, options, force=force, layout=layout.value)
    out.print(f"demo dataset: {path} ({layout.value}, {num_train + num_val + num_test} images, seed {seed})")


@app.command("convert")
def convert(
    data: DataRoot,
    split: Split,
    to: Annotated[Layout, typer.Option("--to", help="Layout to write.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write it to (other splits there stay).")],
    classes: Classes = None,
    layout: DatasetFormat = None,
) -> None:
    """Write a split in another layout: VOC, COCO or YOLO. Images are hard-linked where possible.

    Example: rcnn data convert --data data/demo --split trainval --to coco --out data/demo-coco
    """
    dataset = load_dataset(data, split, parse_classes(classes), format=layout_name(layout))
    done = convert_split(dataset, to.value, out_dir, RichProgress())
    out.print(f"{done.out}: split {split} as {to.value}, {done.images} images, {done.objects} objects")


@app.command("check")
def check(
    data: DataRoot, split: Split = "trainval", classes: Classes = None, layout: DatasetFormat = None
) -> None:
    """Validate a dataset (VOC, COCO or YOLO layout): every annotation read, every image decoded; a table
    of counts and problems, and the layout it was read as. Exits 2 when problems were found.

    Example: rcnn data check --data data/VOCdevkit/VOC2007 --split test
    """
    report = check_dataset(data, split, parse_classes(classes), RichProgress(), layout_name(layout))
    dataset = report.dataset
    table = Table(
        title=f"{data} / {split} ({dataset.format}): {len(dataset)} images, "
        f"{report.empty_images} without objects"
    )
    table.add_column("class")
    table.add_column("objects", justify="right")
    table.add_column("difficult", justify="right")
    for name in dataset.classes:
        table.add_row(name, str(report.objects[name]), str(report.difficult[name]))
    table.add_row(
        "[bold]all[/]",
        str(sum(report.objects.values())),
        str(sum(report.difficult.values())),
        end_section=True,
    )
    out.print(table)
    if report.problems:
        out.print(f"[yellow]{len(report.problems)} problems:[/]")
        for problem in report.problems:
            out.print(f"  {problem}", soft_wrap=True, markup=False)
        raise typer.Exit(2)
    out.print("[green]no problems found[/]")
