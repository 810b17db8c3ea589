"""`rcnn data`: make the demo dataset, check a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import Classes, DataRoot, Split, parse_classes
from stages.datasets.demo import DemoOptions, generate_demo
from stages.datasets.voc import check_dataset

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
) -> None:
    """Generate the demo dataset (VOC layout; splits train, val, trainval, test).

    Example: rcnn data demo --out data/demo --seed 0
    """
    options = DemoOptions(seed=seed, num_train=num_train, num_val=num_val, num_test=num_test)
    path = generate_demo(out_dir, options, force=force)
    out.print(f"demo dataset: {path} ({num_train + num_val + num_test} images, seed {seed})")


@app.command("check")
def check(data: DataRoot, split: Split = "trainval", classes: Classes = None) -> None:
    """Validate a VOC-layout dataset: every annotation read, every image decoded; a table of counts
    and problems. Exits 2 when problems were found.

    Example: rcnn data check --data data/VOCdevkit/VOC2007 --split test
    """
    report = check_dataset(data, split, parse_classes(classes), progress=RichProgress())
    dataset = report.dataset
    table = Table(title=f"{data} / {split}: {len(dataset)} images, {report.empty_images} without objects")
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
