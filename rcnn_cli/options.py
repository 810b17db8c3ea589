"""Options shared by several commands, declared once; the method choices come from the library's
registry, so a new method needs no change here."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from stages.core.options import DEVICE_HELP, PRECISION_HELP, CommandOption, command_options
from stages.datasets.options import FORMATS
from stages.methods import METHODS
from stages.networks.options import PRECISIONS
from stages.training.options import TrainingOptions

RunDir = Annotated[Path, typer.Option("--run", help="Run folder: every stage's artifacts live here.")]
DataRoot = Annotated[
    Path, typer.Option("--data", help="Dataset root: VOC, COCO or YOLO layout, found from its files.")
]
Split = Annotated[
    str,
    typer.Option(
        "--split",
        help="Split name: VOC's ImageSets/Main/<split>.txt, COCO's annotations/instances_<split>.json, "
        "YOLO's data.yaml entry (or images/<split>).",
    ),
]
Layout = Enum("Layout", {name: name for name in FORMATS}, type=str)  # type: ignore[misc]
DatasetFormat = Annotated[
    Layout | None,
    typer.Option(
        "--format", case_sensitive=False, help="Dataset layout (default: found from the root's files)."
    ),
]
Classes = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Comma-separated class names (default: VOC's 20 for a VOC year "
        "folder, else every name in the annotations, sorted).",
    ),
]
SkipBad = Annotated[
    bool, typer.Option("--skip-bad", help="Skip unreadable images and annotations (counted, listed).")
]
DEFAULT_RUN = Path("runs/default")
F = TypeVar("F", bound=Callable[..., Any])


def parse_classes(classes: str | None, option: str = "--classes") -> tuple[str, ...] | None:
    """``"a, b"`` -> ``("a", "b")``; None stays None. A usage error of ``option`` unless the names are
    distinct."""
    if classes is None:
        return None
    names = tuple(n.strip() for n in classes.split(",") if n.strip())
    if not names or len(set(names)) != len(names):
        raise typer.BadParameter("give distinct, comma-separated names", param_hint=option)
    return names


def parse_sizes(text: str, option: str, kind: type = int) -> tuple[Any, ...]:
    """``"480, 576"`` -> ``(480, 576)``; anything but positive integers (numbers, for ``kind`` float) is
    a usage error for ``option``."""
    try:
        sizes = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or not min(sizes) > 0 or (kind is int and min(sizes) < 1):
        what = "integers" if kind is int else "numbers"
        raise typer.BadParameter(f"{text!r}: give comma-separated positive {what}", param_hint=option)
    return sizes


def given(**values: Any) -> dict[str, Any]:
    """Only the options the user set, so the library's options keep their (the papers') defaults."""
    return {k: v for k, v in values.items() if v is not None}


MethodName = Enum("MethodName", {name: name for name in METHODS}, type=str)  # type: ignore[misc]
"""The detectors of the lineage (``stages.methods.METHODS``)."""
CachedMethod = Enum("CachedMethod", {n: n for n in METHODS.with_command("extract-features")}, type=str)  # type: ignore[misc]
"""The detectors with a feature cache, SVMs and separate box regressors."""
CompressibleMethod = Enum("CompressibleMethod", {n: n for n in METHODS.with_command("compress")}, type=str)  # type: ignore[misc]
"""The detectors with a truncated-SVD form (``rcnn compress``)."""

MethodOption = Annotated[MethodName, typer.Option("--method", help="Which detector's stage to run.")]
CachedMethodOption = Annotated[
    CachedMethod, typer.Option("--method", help="Which detector's stage to run (those with a feature cache).")
]
Device = Annotated[str, typer.Option(help=DEVICE_HELP)]
Compressed = Annotated[
    bool,
    typer.Option("--compressed", help="Fast and Faster R-CNN: the truncated-SVD model of `rcnn compress`."),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume/--restart",
        help="Continue the checkpoint of an interrupted run (the default), or start over.",
    ),
]
PrecisionName = Enum("PrecisionName", {name: name for name in PRECISIONS}, type=str)  # type: ignore[misc]
Precision = Annotated[
    PrecisionName,
    typer.Option(help=PRECISION_HELP),
]
DEFAULT_PRECISION = PrecisionName.fp32  # type: ignore[attr-defined]
DEFAULT_DEVICE = TrainingOptions.device


def layout_name(layout: Enum | None) -> str | None:
    """The ``--format`` given, as the library names it (None: found from the dataset's files)."""
    return None if layout is None else str(layout.value)


def stage_options(*sources: type | Mapping[str, type], only: Collection[str] = ()) -> Callable[[F], F]:
    """Give a command the options of a stage's options dataclasses (``stages.core.options``): each field
    with help, its ``--flag``, its help and, where every dataclass takes it with one default, that default;
    a mapping of dataclasses by method (``METHODS.command_options``) names after the help the methods
    that take an option when not all do; ``only``: just these. A parameter the command declares itself
    is left to it. The command gets the values set as ``given`` (name -> value; comma-separated sizes as
    tuples), so the library keeps the papers' defaults for the rest."""
    owners: dict[str, list[str]] = {}
    declared: dict[str, CommandOption] = {}
    defaults: dict[str, list[Any]] = {}
    named = [
        item
        for source in sources
        for item in (source.items() if isinstance(source, Mapping) else [("", source)])
    ]
    for owner, options_type in named:
        for found in command_options(options_type):
            if only and found.name not in only:
                continue
            declared.setdefault(found.name, found)
            defaults.setdefault(found.name, []).append(found.default)
            owners.setdefault(found.name, []).append(owner)

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = {name for name in signature.parameters if name != "given"}
        taken = {name: found for name, found in declared.items() if name not in own}
        added = []
        for name, found in taken.items():
            everyone = len(owners[name]) == len(named) and len(set(map(repr, defaults[name]))) == 1
            shown = defaults[name][0] if everyone else None  # else: the method's, None till given
            help = found.help
            if len(owners[name]) < len(named):  # the methods that take it, with their defaults
                takers = zip(owners[name], defaults[name], strict=True)
                help += f" ({'; '.join(o if d is None else f'{o}: {_shown(d)}' for o, d in takers)})"
            elif shown is None and any(d is not None for d in defaults[name]):
                takers = zip(owners[name], defaults[name], strict=True)
                help += f" (default: {'; '.join(f'{o} {_shown(d)}' for o, d in takers)})"
            decls = (f"{found.flag}/--no-{found.flag[2:]}",) if found.kind is bool else (found.flag,)
            kind = str if found.kind is tuple else found.kind
            default = None if shown is None else _shown(shown) if found.kind is tuple else shown
            option = typer.Option(*decls, help=help, show_default=shown is not None)
            annotation = Annotated[kind | None, option]  # type: ignore[valid-type]
            keyword = inspect.Parameter.KEYWORD_ONLY
            added.append(inspect.Parameter(name, keyword, default=default, annotation=annotation))

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            given = {}
            for name, found in taken.items():
                value = values.pop(name)
                if value is not None:
                    given[name] = parse_sizes(value, found.flag, found.item) if found.kind is tuple else value
            return command(**values, given=given)

        kept = [parameter for name, parameter in signature.parameters.items() if name != "given"]
        run.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return decorate


def _shown(value: Any) -> str:
    """A default as ``--help`` shows it: sizes comma-separated."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
