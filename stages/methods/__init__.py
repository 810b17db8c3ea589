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
    """Methods by name, in the lineage's order: each named by ``"module:Class"`` and loaded when first asked
    for, or given as an object. A method package's ``options`` module (torch-free) says which staged commands
    beside ``evaluate``, ``detect`` and ``export`` run a stage of it, with their options
    (``COMMAND_OPTIONS``): the command line's ``--method`` choices and options, without loading torch."""

    def __init__(self, targets: dict[str, str]):
        self._targets = dict(targets)
        self._methods: dict[str, Method[Any]] = {}

    def command_options(self, command: str) -> dict[str, type]:
        """The options of ``rcnn COMMAND`` for each method that it runs a stage of, in order."""
        found = {}
        for name, package in self._packages():
            declared = importlib.import_module(f"{package}.options").COMMAND_OPTIONS
            if command in declared:
                found[name] = declared[command]
        return found

    def proposers(self) -> dict[str, str]:
        """The methods whose trained network proposes, by what ``rcnn propose --proposer`` calls it (their
        options module's ``PROPOSER``)."""
        found = {}
        for name, package in self._packages():
            proposer = getattr(importlib.import_module(f"{package}.options"), "PROPOSER", None)
            if proposer is not None:
                found[proposer] = name
        return found

    def _packages(self) -> Iterator[tuple[str, str]]:
        """(name, package) of each method registered by name (an object has no options module to read)."""
        for name in self:
            target = self._targets.get(name)
            if target is not None:
                yield name, target.partition(":")[0].rpartition(".")[0]

    def with_command(self, command: str) -> list[str]:
        """The methods that ``rcnn COMMAND`` runs a stage of, in order."""
        return list(self.command_options(command))

    def __getitem__(self, name: str) -> Method[Any]:
        if name not in self._methods:
            module, _, attribute = self._targets[name].partition(":")
            self._methods[name] = getattr(importlib.import_module(module), attribute)()
        return self._methods[name]

    def __setitem__(self, name: str, method: Method[Any]) -> None:
        self._targets.pop(name, None)
        self._methods[name] = method

    def __delitem__(self, name: str) -> None:
        self._targets.pop(name, None)
        self._methods.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._targets, *self._methods]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*self._targets, *self._methods]))


METHODS = Registry(
    {
        "rcnn": "stages.methods.rcnn.method:RCNN",
        "spp": "stages.methods.spp.method:SPPNet",
        "fast": "stages.methods.fast.method:FastRCNN",
        "faster": "stages.methods.faster.method:FasterRCNN",
    }
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
