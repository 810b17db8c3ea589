"""The detectors of the lineage, one package each, and the registry the shared stages ask.

Each package holds its network, its sampling, its options and its stages; none imports another's. The
shared stages and the command line reach a method through its object here (``METHODS``); only the
benchmarks, which time the networks themselves, import a method's modules. The registry names each
method's class without importing it, so that the command line lists the methods without loading torch;
a method is loaded when first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from stages.core.errors import UserError

if TYPE_CHECKING:
    from stages.methods.base import CachedFeatureMethod, Method


class Registry(MutableMapping[str, "Method[Any]"]):
    """Methods by name, in the lineage's order: each given as its object or as ``"module:Class"``, loaded
    when first asked for. ``commands`` names, for each method, the staged commands beside ``finetune``,
    ``evaluate``, ``detect`` and ``export`` that run a stage of it: their ``--method`` choices."""

    def __init__(self, entries: dict[str, Any], commands: dict[str, frozenset[str]]):
        self._entries = dict(entries)
        self._commands = dict(commands)

    def with_command(self, command: str) -> list[str]:
        """The methods that ``rcnn COMMAND`` runs a stage of, in order."""
        return [name for name in self if command in self._commands.get(name, ())]

    def __getitem__(self, name: str) -> Method[Any]:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attribute)()
        return entry

    def __setitem__(self, name: str, method: Method[Any]) -> None:
        self._entries[name] = method

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


_CACHE_COMMANDS = frozenset({"extract-features", "train-svm", "train-bbox"})
METHODS = Registry(
    {
        "rcnn": "stages.methods.rcnn.method:RCNN",
        "spp": "stages.methods.spp.method:SPPNet",
        "fast": "stages.methods.fast.method:FastRCNN",
    },
    {"rcnn": _CACHE_COMMANDS, "spp": _CACHE_COMMANDS, "fast": frozenset({"compress"})},
)
"""The lineage in order, by name (``Method.name``)."""


def get_method(name: str) -> Method[Any]:
    """The method called ``name``; UserError listing the choices otherwise."""
    if name not in METHODS:
        raise UserError(f"--method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


def get_cached_method(name: str) -> CachedFeatureMethod[Any, Any]:
    """The method called ``name`` if it caches features (``rcnn extract-features``, ``train-svm``,
    ``train-bbox``); UserError naming the ones that do otherwise."""
    found = METHODS.with_command("extract-features")
    if name not in found:
        raise UserError(f"--method {name!r}: has no feature cache; choose one of {', '.join(found)}")
    return METHODS[name]  # type: ignore[return-value]
