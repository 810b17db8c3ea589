"""The run folder: the one place that knows where every artifact of a run lives, and the manifest
written beside each.

Layout (``RUN`` defaults to ``runs/default``)::

    RUN/proposals/<split>.h5                 selective-search (or imported) boxes
    RUN/proposals/.<split>.parts/            finished parts of an interrupted search
    RUN/backbone.pt                          the pre-trained backbone; RUN/pretrain/ its checkpoint and log
    RUN/<method>/finetune/model.pt           a detector's network; checkpoint.pt and log.csv beside it
    RUN/<method>/compressed/model.pt         its truncated-SVD form (Fast R-CNN)
    RUN/<method>/features/<split>.h5         the feature cache (R-CNN, SPP-net)
    RUN/<method>/svm.npz, bbox.npz           SVMs and box regressors (R-CNN, SPP-net)
    RUN/<method>/detections/<split>.json     detections of a split; <split>.svd.json for the compressed model
    RUN/<method>/eval/<split>.json           their evaluation, and <split>.pr.png
    RUN/<method>/eval/<split>.diagnosis.json  the diagnosis of their errors, and <split>.diagnosis.png
    RUN/<method>/detect/                     ``rcnn detect``'s pictures and JSON
    RUN/config.toml                          the resolved config of ``rcnn run``
    RUN/report.html                          the report page
    RUN/seeds/<k>/                           the run trained again with every seed + k (``rcnn run --seeds``):
                                             a run folder of its own, but for the proposals, RUN's
    <every artifact>.manifest.json           how it was made
    .<artifact stem>.parts/                  what the processes of an unfinished stage saved (``parts_of``)

A manifest records where the artifact was made (its absolute path), the resolved options, the inputs read
(size and mtime), library versions, timings and results, so a later stage can tell whether its inputs
exist, ``rcnn run`` whether an artifact is up to date, and the report can add up the time spent.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from stages.core.atomic import write_json
from stages.core.errors import UserError

MANIFEST_SUFFIX = ".manifest.json"
DIAGNOSIS_SUFFIX = ".diagnosis.json"
REPLICAS = "seeds"
"""``RUN/seeds/<k>/``: the run's replicas, each trained with every seed + k."""


@dataclass(frozen=True)
class TrainingFiles:
    """What a training stage writes: the model, and in its folder the checkpoint and the loss log."""

    model: Path
    checkpoint: Path
    log: Path

    def part(self, name: str) -> TrainingFiles:
        """The checkpoint and log of part ``name`` of a training in several parts, in ``name/`` beside
        this checkpoint; the parts end in this one model."""
        return _training_files(self.model, self.checkpoint.parent / name)


def _training_files(model: Path, folder: Path) -> TrainingFiles:
    return TrainingFiles(model, folder / "checkpoint.pt", folder / "log.csv")


@dataclass(frozen=True)
class MethodLayout:
    """``RUN/<name>/``: the artifacts of one detector."""

    run: Path
    name: str

    @property
    def root(self) -> Path:
        return self.run / self.name

    @property
    def finetune(self) -> TrainingFiles:
        """``finetune/model.pt``, with ``checkpoint.pt`` and ``log.csv`` beside it."""
        folder = self.root / "finetune"
        return _training_files(folder / "model.pt", folder)

    @property
    def compressed(self) -> Path:
        """``compressed/model.pt``: the truncated-SVD network."""
        return self.root / "compressed" / "model.pt"

    def features(self, split: str) -> Path:
        """``features/<split>.h5``: the split's feature cache."""
        return self.root / "features" / f"{split}.h5"

    @property
    def svm(self) -> Path:
        return self.root / "svm.npz"

    @property
    def bbox(self) -> Path:
        return self.root / "bbox.npz"

    def detections(self, split: str, variant: str = "") -> Path:
        """``detections/<split>.json``; ``<split>.<variant>.json`` for a variant of the network
        (``svd``: the compressed model)."""
        return self.root / "detections" / f"{_evaluation_name(split, variant)}.json"

    def results(self, split: str, variant: str = "") -> Path:
        """``eval/<split>.json`` (``<split>.<variant>.json``): the evaluation."""
        return self.root / "eval" / f"{_evaluation_name(split, variant)}.json"

    def pr_curves(self, split: str, variant: str = "") -> Path:
        """``eval/<split>.pr.png`` (``<split>.<variant>.pr.png``): the evaluation's PR curves."""
        return self.root / "eval" / f"{_evaluation_name(split, variant)}.pr.png"

    def diagnosis(self, split: str, variant: str = "") -> Path:
        """``eval/<split>.diagnosis.json`` (``<split>.<variant>.diagnosis.json``): the error diagnosis of
        the evaluation's detections; its plot beside it as ``.png``."""
        return self.root / "eval" / f"{_evaluation_name(split, variant)}{DIAGNOSIS_SUFFIX}"

    def evaluations(self) -> list[Path]:
        """Every evaluation results file of the method, sorted."""
        return sorted(
            p
            for p in (self.root / "eval").glob("*.json")
            if not p.name.endswith((MANIFEST_SUFFIX, DIAGNOSIS_SUFFIX))
        )

    @property
    def detect(self) -> Path:
        """``detect/``: where ``rcnn detect`` writes by default."""
        return self.root / "detect"


def _evaluation_name(split: str, variant: str) -> str:
    return f"{split}.{variant}" if variant else split


def parts_of(artifact: Path) -> Path:
    """``.<stem>.parts/`` beside ``artifact``: the parts that the processes of its stage save as they go,
    for a rerun to continue from, until the artifact is merged from them."""
    return artifact.with_name(f".{artifact.stem}.parts")


@dataclass(frozen=True)
class RunLayout:
    """A run folder: every artifact path of a run is a property or method of this object. A replica
    (``replica``) knows the run it replicates (``replica_of``), whose proposals it reads."""

    root: Path
    replica_of: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def shared(self) -> Path:
        """Where the proposals are: a replica's are its run's, made once for every seed (selective search
        has none); any other run's are its own."""
        return self.root if self.replica_of is None else Path(self.replica_of)

    @property
    def replica_offset(self) -> int:
        """k for the replica ``RUN/seeds/<k>/``, which adds k to every training seed; 0 for a run."""
        return 0 if self.replica_of is None else int(self.root.name)

    def replica(self, offset: int) -> RunLayout:
        """The run trained again with every training seed + ``offset``: ``seeds/<offset>/``; this run
        for 0."""
        return self if offset == 0 else RunLayout(self.root / REPLICAS / str(offset), self.root)

    def replicas(self) -> list[RunLayout]:
        """This run and its replicas that exist, by offset."""
        found = [int(p.name) for p in (self.root / REPLICAS).glob("*") if p.is_dir() and p.name.isdigit()]
        return [self, *(self.replica(offset) for offset in sorted(found) if offset > 0)]

    @property
    def proposals_folder(self) -> Path:
        """``proposals/`` (a replica's: its run's)."""
        return self.shared / "proposals"

    def proposals(self, split: str) -> Path:
        """``proposals/<split>.h5`` (a replica's: its run's)."""
        return self.proposals_folder / f"{split}.h5"

    def proposal_parts(self, split: str) -> Path:
        """``proposals/.<split>.parts/``: finished parts of an interrupted search."""
        return parts_of(self.proposals(split))

    @property
    def pretrain(self) -> TrainingFiles:
        """``backbone.pt``, with its checkpoint and log in ``pretrain/``."""
        return _training_files(self.root / "backbone.pt", self.root / "pretrain")

    def method(self, name: str) -> MethodLayout:
        """``<name>/``: the artifacts of one detector."""
        return MethodLayout(self.root, name)

    @property
    def config(self) -> Path:
        """``config.toml``: the resolved config ``rcnn run`` ran."""
        return self.root / "config.toml"

    @property
    def report_page(self) -> Path:
        """``report.html``: the page ``rcnn report`` and ``rcnn run`` write."""
        return self.root / "report.html"

    def manifests(self) -> list[Path]:
        """Every manifest in the run folder, less its replicas' (runs of their own)."""
        replicas = self.root / REPLICAS
        return sorted(p for p in self.root.rglob(f"*{MANIFEST_SUFFIX}") if not p.is_relative_to(replicas))

    def command_for(self, artifact: Path, data: Path | str | None = None) -> str:
        """The command that makes ``artifact`` of this run, as an error's hint prints it: runnable as
        printed, with the stage's defaults and ``--data`` as ``data_option`` gives it."""
        artifact = Path(artifact)
        parts = artifact.relative_to(self.root if artifact.is_relative_to(self.root) else self.shared).parts
        stem = Path(parts[-1]).stem.removesuffix(".svd")
        on, run = self.data_option(data), f"--run {self}"
        if parts[0] == "proposals":
            return f"rcnn propose {on} --split {stem} {run}"
        if parts == ("backbone.pt",):
            return f"rcnn pretrain {on} {run}"
        method, kind = parts[0], parts[1]
        commands = {
            "finetune": f"rcnn finetune --method {method} {on} {run}",
            "compressed": f"rcnn compress {run}",
            "features": f"rcnn extract-features --method {method} {on} --split {stem} {run}",
            "svm.npz": f"rcnn train-svm --method {method} {run}",
            "bbox.npz": f"rcnn train-bbox --method {method} {run}",
        }
        compressed = " --compressed" if parts[-1].startswith(f"{stem}.svd") else ""
        evaluate = f"rcnn evaluate {on} --split {stem} {run} --method {method}{compressed}"
        return commands.get(kind, evaluate)

    def data_option(self, root: Path | str | None = None) -> str:
        """``--data ROOT`` for a command a hint prints: ``root`` when the caller knows the dataset, else
        the one the run's proposals were made from (their manifests record it), else a placeholder."""
        for proposals in sorted(self.proposals_folder.glob("*.h5")) if root is None else ():
            try:  # a hint never fails for a manifest it only looks into
                root = (read_manifest(proposals) or {}).get("results", {}).get("dataset_root")
            except UserError:
                continue
            if root:
                break
        return f"--data {root or 'ROOT'}"

    def __str__(self) -> str:
        return str(self.root)


def manifest_path(artifact: Path) -> Path:
    """The manifest that sits beside ``artifact`` (``x.h5`` -> ``x.manifest.json``)."""
    return Path(artifact).with_suffix(MANIFEST_SUFFIX)


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
    is_options = dataclasses.is_dataclass(options) and not isinstance(options, type)
    resolved = dataclasses.asdict(options) if is_options else dict(options)
    payload = {
        "stage": stage,
        "artifact": Path(artifact).name,
        "location": str(Path(artifact).resolve()),
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


def read_manifest(artifact: Path) -> dict | None:
    """The manifest beside ``artifact``, or None when there is none."""
    path = manifest_path(artifact)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable manifest ({exc})") from None


def require_artifact(artifact: Path, command: str) -> dict:
    """Check that ``artifact`` exists with its manifest; return the manifest.

    Raises UserError naming the artifact and the command that makes it.
    """
    artifact = Path(artifact)
    if not artifact.exists():
        raise UserError(f"{artifact}: not found; make it with `{command}`")
    path = manifest_path(artifact)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: manifest missing; remake {artifact.name} with `{command}`") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable manifest ({exc}); remake it with `{command}`") from None
