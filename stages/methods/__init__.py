"""The three detectors of the lineage, one package each, and the registry the shared stages ask.

Each package holds its network, its sampling and its stages; none imports another's. The shared stages
(``detect``, ``evaluate``, ``report``) and the command line reach a method through its object here; only
the benchmarks, which time the networks themselves, and Fast R-CNN's own ``rcnn compress`` import a
method's modules.
"""

from __future__ import annotations

from typing import Any

from stages.core.errors import UserError
from stages.methods.base import CachedFeatureMethod, Method
from stages.methods.fast import FastRCNN
from stages.methods.rcnn import RCNN
from stages.methods.spp import SPPNet

METHODS: dict[str, Method[Any]] = {method.name: method for method in (RCNN(), SPPNet(), FastRCNN())}
"""The lineage in order, by name."""

CACHED_METHODS: dict[str, CachedFeatureMethod[Any, Any]] = {
    name: method for name, method in METHODS.items() if isinstance(method, CachedFeatureMethod)
}
"""The methods with a feature cache, SVMs and box regressors."""


def get_method(name: str) -> Method[Any]:
    """The method called ``name``; UserError listing the choices otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"--method {name!r}: choose one of {', '.join(METHODS)}") from None


def get_cached_method(name: str) -> CachedFeatureMethod[Any, Any]:
    """The method called ``name`` if it caches features; UserError naming the ones that do otherwise."""
    try:
        return CACHED_METHODS[name]
    except KeyError:
        raise UserError(
            f"--method {name!r}: has no feature cache; choose one of {', '.join(CACHED_METHODS)}"
        ) from None
