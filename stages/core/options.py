"""Options declared once: a stage's options dataclass holds each option's default (the paper's setting)
and, in the field's metadata, its command-line help (``option``), so that the staged commands make their
options from the dataclasses (``command_options``; ``rcnn_cli.options.stage_options``) and a new option
is one line. Options every stage shares (device, precision, workers, seed) have one declaration each
here."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None) -> Any:
    """A field of an options dataclass (required without a ``default``) with the help ``--help`` shows
    (``flag``: when not ``--name``)."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag})


DEVICE_HELP = "auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ..."
PRECISION_HELP = (
    "The network's arithmetic: fp32, bf16 (CPUs with AVX-512 BF16 or AMX, recent GPUs) or fp16 (CUDA; "
    "training scales the loss)."
)
"""The help of the device and precision options, which commands outside the options dataclasses take
too (``rcnn evaluate``, ``rcnn detect``, ``rcnn bench``)."""


def device_option(default: str = "auto") -> Any:
    return option(default, help=DEVICE_HELP)


def precision_option() -> Any:
    return option("fp32", help=PRECISION_HELP)


def workers_option() -> Any:
    return option(0, help="DataLoader worker processes (0: load in this process).")


def seed_option() -> Any:
    return option(0, help="Seed of sampling and initialisation.")


@dataclass(frozen=True)
class CommandOption:
    """One command-line option made from a field: ``name`` as the stage's options take it (a nested
    dataclass's fields flattened), its ``flag``, ``help``, value ``kind`` (bool, int, float, str, or
    tuple for comma-separated numbers of type ``item``) and ``default``."""

    name: str
    flag: str
    help: str
    kind: type
    default: Any
    item: type = int


def command_options(options_type: type) -> Iterator[CommandOption]:
    """The options of ``options_type`` that have help, in field order; a field a subclass redeclares (a new
    default) keeps the help of the class that declared it."""
    hints = typing.get_type_hints(options_type)
    for found in dataclasses.fields(options_type):
        kind = _plain(hints[found.name])
        if dataclasses.is_dataclass(kind):
            yield from command_options(kind)  # type: ignore[arg-type]
            continue
        metadata = _declared(options_type, found.name)
        if metadata is None:
            continue
        default = (
            found.default_factory() if found.default_factory is not dataclasses.MISSING else found.default
        )
        flag = metadata.get("flag") or f"--{found.name.replace('_', '-')}"
        yield CommandOption(found.name, flag, metadata["help"], kind, default, _item(hints[found.name]))


def _declared(options_type: type, name: str) -> typing.Mapping[str, Any] | None:
    """The metadata of the first declaration of ``name`` with help, up ``options_type``'s bases."""
    for base in options_type.__mro__:
        if dataclasses.is_dataclass(base):
            for found in dataclasses.fields(base):
                if found.name == name and "help" in found.metadata:
                    return found.metadata
    return None


def _item(kind: Any) -> type:
    """The numbers' type of ``tuple[float, ...]`` (or its ``| None``): float; int otherwise."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return float if typing.get_origin(kind) is tuple and float in typing.get_args(kind) else int


def _plain(kind: Any) -> Any:
    """``X | None`` -> X; ``tuple[int, ...]`` -> tuple."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return tuple if typing.get_origin(kind) is tuple else kind
