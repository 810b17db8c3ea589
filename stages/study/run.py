"""``rcnn study``: every variant of a study run as ``rcnn run`` runs a config, in ``DIR/<name>/``, each
step that an earlier variant made identically taken from it instead of made again
(``stages.pipeline.sharing``, its index in ``DIR/../shared.json``); then the comparison
(``stages.study.summary``) and ``DIR/study.html``.

Resumable and up to date as ``rcnn run`` is: a variant's steps that are up to date are skipped, an
interrupted one resumes, a changed option reruns what it changes. With ``seeds`` every variant is also
trained again with every seed + 1, ... (``RunConfig.replica``), and the replicas share what their
variants' replicas made alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.config.run_config import RunConfig
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.pipeline.run import Context, PlannedStep, State, plan, replicas, run_config
from stages.pipeline.sharing import SharedArtifacts, fingerprints
from stages.runs.layout import RunLayout
from stages.runs.processes import processes
from stages.runs.steps import StepKey
from stages.study.config import Study, StudyVariant
from stages.study.page import write_study_page
from stages.study.summary import StudyReport, study_report

INDEX = "shared.json"
"""The steps that studies' runs made, with their files (``SharedArtifacts``): beside the study's folder
``DIR``, in ``DIR/../shared.json``, so that the studies run side by side (``runs/studies/*``) share with
each other too: the demo's proposals and backbone, a Fast R-CNN that several studies train alike."""

PAGE = "study.html"


@dataclass(frozen=True)
class VariantRun:
    """A variant of a study with its resolved run config (seed + 0)."""

    variant: StudyVariant
    config: RunConfig

    @property
    def layout(self) -> RunLayout:
        return self.config.run.layout


def variant_runs(
    study: Study, folder: Path, data_root: str | None = None, settings: Sequence[str] = ()
) -> list[VariantRun]:
    """Each variant of ``study`` with its run config in ``folder/<name>/`` (``Study.variant_config``):
    all resolved before anything runs, so that a bad override fails at once."""
    return [VariantRun(v, study.variant_config(v, folder, data_root, settings)) for v in study.variants]


def index_path(folder: Path) -> Path:
    """The index of shared steps for the study in ``folder`` (``INDEX``)."""
    return Path(folder).resolve().parent / INDEX


def plan_study(
    runs: Sequence[VariantRun], folder: Path, seeds: int = 1, restart: bool = False
) -> list[tuple[RunConfig, list[PlannedStep]]]:
    """Each run's plan (each variant, then its replicas): a step that an earlier run of the study will
    have made, or one recorded in the index, shows as ``State.SHARE`` with the run it comes from."""
    index = SharedArtifacts(index_path(folder))
    coming: dict[str, Path] = {}
    datasets: dict[str, Dataset] = {}
    found = []
    for config in (replica for run in runs for replica in replicas(run.config, seeds)):
        layout = config.run.layout
        planned = plan(config, restart, Context(config, layout, datasets=datasets))
        prints = fingerprints([item.step for item in planned], config.data)
        shown: list[PlannedStep] = []
        states: dict[StepKey, State] = {}
        for item in planned:
            fingerprint = prints[item.step.key]
            if item.state is not State.UP_TO_DATE:
                holder = index.find(fingerprint, layout.root, prints.values())
                source = holder.root if holder is not None else coming.get(fingerprint)
                if source is not None:
                    item = PlannedStep(item.step, State.SHARE, f"made in {source}")
                elif item.reason.startswith("after "):  # what it runs after may be shared instead
                    reruns = [key for key in item.step.after if states[key] in (State.RUN, State.RESUME)]
                    reason = f"after {reruns[0].label}" if reruns else "not made yet"
                    item = PlannedStep(item.step, item.state, reason)
            coming.setdefault(fingerprint, layout.root)
            states[item.step.key] = item.state
            shown.append(item)
        found.append((config, shown))
    return found


@dataclass(frozen=True)
class StudyOutcome:
    """What ``run_study`` did: the steps it made and took, and on rank 0 the comparison and its page."""

    made: int
    taken: int
    report: StudyReport | None = None
    page: Path | None = None


def default_folder(path: Path) -> Path:
    """Where a study runs unless told: ``runs/studies/`` and the study file's path below a folder named
    ``studies`` (``configs/studies/voc07/fast_layers.toml`` -> ``runs/studies/voc07/fast_layers``), else
    its stem: the demo's and VOC's forms of a study apart."""
    path = Path(path).resolve()
    parents = [parent for parent in path.parents if parent.name == "studies"]
    below = path.relative_to(parents[0]).with_suffix("") if parents else Path(path.stem)
    return Path("runs") / "studies" / below


def run_study(
    study: Study,
    runs: Sequence[VariantRun],
    folder: Path,
    *,
    seeds: int = 1,
    restart: bool = False,
    progress: Progress = SILENT,
    show_plan: Callable[[list[PlannedStep], RunLayout], None] = lambda planned, run: None,
    on_step: Callable[[PlannedStep, float, str], None] = lambda item, seconds, summary: None,
) -> StudyOutcome:
    """Run every variant of ``study`` (``runs``, from ``variant_runs``; with ``seeds``, their replicas too)
    in order, each an ``rcnn run`` that takes from the index what another run made alike
    (``run_config``'s ``shared``); then write the comparison's page ``folder/study.html``. Files are
    written by rank 0 only."""
    index = SharedArtifacts(index_path(folder))
    made = taken = 0
    with processes(runs[0].config.run.device) as procs:  # held for the whole study; each run joins it
        for run in runs:
            outcome = run_config(
                run.config,
                seeds=seeds,
                restart=restart,
                progress=progress,
                show_plan=show_plan,
                on_step=on_step,
                shared=index,
            )
            made, taken = made + len(outcome.ran), taken + len(outcome.taken)
        if not procs.writer:
            return StudyOutcome(made, taken)
        found = study_report(study, [run.config for run in runs])
        page = write_study_page(found, Path(folder) / PAGE)
    return StudyOutcome(made, taken, found, page)
