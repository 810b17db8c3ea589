"""The results of a run folder in one place: each method's mAP and the time every stage took.

Everything comes from the artifacts: ``RUN/<method>/eval/<split>.json`` for accuracy and the manifests
beside every artifact for timings, so the report can be made at any time and never runs anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stages.errors import UserError
from stages.runs import MANIFEST_SUFFIX


@dataclass(frozen=True)
class MethodResult:
    method: str
    split: str
    metric: str
    map: float | None
    map_without_box_regression: float | None


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
        results.append(
            MethodResult(
                content.get("method", path.parent.parent.name),
                content.get("split", path.stem),
                content.get("metric", "?"),
                content.get("map"),
                content.get("map_without_box_regression"),
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
    return RunReport(tuple(results), tuple(stage for *_, stage in stages))
