"""The results of a run folder in one place: each method's mAP and the time every stage took.

Everything comes from the artifacts: ``RUN/<method>/eval/<split>.json`` for accuracy and the manifests
beside every artifact for timings, so the report can be made at any time and never runs anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stages.errors import UserError
from stages.runs import MANIFEST_SUFFIX, manifest_path


@dataclass(frozen=True)
class MethodResult:
    """One evaluation: accuracy, test seconds an image (proposals excluded) and training seconds (the
    method's own stages; proposals and pre-training are shared by all methods and not counted)."""

    method: str
    split: str
    metric: str
    map: float | None
    map_without_box_regression: float | None
    compressed: bool = False
    test_seconds_per_image: float | None = None
    training_seconds: float | None = None

    @property
    def label(self) -> str:
        return {"rcnn": "R-CNN", "spp": "SPP-net", "fast": "Fast R-CNN"}.get(self.method, self.method) + (
            " + SVD" if self.compressed else ""
        )


@dataclass(frozen=True)
class StageTime:
    stage: str
    artifact: str
    seconds: float


@dataclass(frozen=True)
class RunReport:
    results: tuple[MethodResult, ...]
    stages: tuple[StageTime, ...]

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None


def report(run: Path) -> RunReport:
    """Collect the results and stage timings recorded in ``run``."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder")
    results = []
    for path in sorted(run.glob("*/eval/*.json")):
        if path.name.endswith(MANIFEST_SUFFIX):
            continue
        content = _read(path)
        method = content.get("method", path.parent.parent.name)
        split = content.get("split", path.stem)
        compressed = bool(content.get("compressed"))
        results.append(
            MethodResult(
                method,
                split,
                content.get("metric", "?"),
                content.get("map"),
                content.get("map_without_box_regression"),
                compressed,
                _test_seconds(run, method, split, content),
                _training_seconds(run, method, compressed),
            )
        )
    stages = []
    for path in run.rglob(f"*{MANIFEST_SUFFIX}"):
        manifest = _read(path)
        name = manifest.get("artifact", path.name.removesuffix(MANIFEST_SUFFIX))
        artifact = path.with_name(name).relative_to(run)
        stage = StageTime(manifest.get("stage", "?"), str(artifact), float(manifest.get("seconds", 0.0)))
        stages.append((manifest.get("created", ""), str(artifact), stage))
    stages.sort(key=lambda item: item[:2])
    lineage = ["rcnn", "spp", "fast"]
    results.sort(key=lambda r: (lineage.index(r.method) if r.method in lineage else 3, r.split, r.compressed))
    return RunReport(tuple(results), tuple(stage for *_, stage in stages))


def _manifest(artifact: Path) -> dict | None:
    found = manifest_path(artifact)
    return _read(found) if found.is_file() else None


def _test_seconds(run: Path, method: str, split: str, results: dict) -> float | None:
    """Seconds an image at test time: the evaluation's, plus, for cache-based methods, the split's
    feature extraction."""
    seconds = results.get("seconds_per_image")
    if seconds is None or method == "fast":
        return seconds
    features = _manifest(run / method / "features" / f"{split}.h5")
    if features is None or not features["results"].get("images"):
        return None
    return seconds + features["seconds"] / features["results"]["images"]


def _training_seconds(run: Path, method: str, compressed: bool) -> float | None:
    """The method's training: fine-tuning, and for R-CNN and SPP-net the training split's features
    (SPP-net's include the pyramid pass fine-tuning read), SVMs and box regressors; + SVD compression."""
    finetune = _manifest(run / method / "finetune" / "model.pt")
    if finetune is None:
        return None
    total = finetune["seconds"]
    if method != "fast":
        svm = _manifest(run / method / "svm.npz")
        parts = [svm, _manifest(run / method / "bbox.npz")]
        if svm is not None:
            parts.append(_manifest(run / method / "features" / f"{svm['options']['split']}.h5"))
        total += sum(part["seconds"] for part in parts if part is not None)
    if compressed:
        compress = _manifest(run / method / "compressed" / "model.pt")
        if compress is None:
            return None
        total += compress["seconds"]
    return total
