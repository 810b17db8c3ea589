"""The run folder: where each stage finds its inputs and writes its artifacts, with a manifest beside each.

Layout (``RUN`` defaults to ``runs/default``)::

    RUN/proposals/<split>.h5                 selective-search (or imported) boxes
    RUN/proposals/<split>.manifest.json
    RUN/<method>/...                         the stages of one detector (rcnn, spp, fast)

A manifest records the resolved options, the inputs read (size and mtime), library versions, timings and
results, so a later stage can tell whether its inputs exist and were made with compatible settings.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from stages.atomic import write_json
from stages.errors import UserError

MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(artifact: Path) -> Path:
    """The manifest that sits beside ``artifact`` (``x.h5`` -> ``x.manifest.json``)."""
    artifact = Path(artifact)
    return artifact.with_suffix(MANIFEST_SUFFIX)


def proposals_path(run: Path, split: str) -> Path:
    """``RUN/proposals/<split>.h5``."""
    return Path(run) / "proposals" / f"{split}.h5"


def describe_input(path: Path) -> dict[str, Any]:
    """What a manifest records of an input file: its path, size and modification time."""
    stat = Path(path).stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def library_versions() -> dict[str, str]:
    """Versions of Python, the toolkit and the libraries whose behaviour shapes the artifacts."""
    versions = {"python": platform.python_version()}
    for name in (
        "rcnn-toolkit",
        "torch",
        "torchvision",
        "numpy",
        "opencv-contrib-python-headless",
        "h5py",
        "scikit-learn",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_manifest(
    artifact: Path,
    *,
    stage: str,
    options: Any,
    inputs: list[Path],
    seconds: float,
    results: Mapping[str, Any] | None = None,
) -> Path:
    """Write the manifest of ``artifact``; ``options`` is a dataclass (or a mapping) of resolved settings."""
    resolved = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    payload = {
        "stage": stage,
        "artifact": Path(artifact).name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": resolved,
        "inputs": [describe_input(p) for p in inputs],
        "versions": library_versions(),
        "seconds": round(seconds, 3),
        "results": dict(results or {}),
    }
    target = manifest_path(artifact)
    write_json(target, payload)
    return target


def require_artifact(artifact: Path, command: str, expect: Mapping[str, Any] | None = None) -> dict:
    """Check that ``artifact`` exists (with its manifest) and was made with the ``expect``-ed options.

    Returns the manifest. Raises UserError naming the artifact and the command that makes it.
    """
    artifact = Path(artifact)
    if not artifact.exists():
        raise UserError(f"{artifact}: not found; make it with `{command}`")
    path = manifest_path(artifact)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: manifest missing; remake {artifact.name} with `{command}`") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable manifest ({exc}); remake it with `{command}`") from None
    made_with = manifest.get("options", {})
    for key, wanted in (expect or {}).items():
        if made_with.get(key) != wanted:
            raise UserError(
                f"{artifact}: made with {key}={made_with.get(key)!r}, this needs {key}={wanted!r}; "
                f"remake it with `{command}`"
            )
    return manifest


def backbone_path(run: Path) -> Path:
    """``RUN/backbone.pt``: the pre-trained backbone (``rcnn pretrain``)."""
    return Path(run) / "backbone.pt"


def method_path(run: Path, method: str, *parts: str) -> Path:
    """``RUN/<method>/<parts...>``: where a detector's stages keep their artifacts."""
    return Path(run, method, *parts)
