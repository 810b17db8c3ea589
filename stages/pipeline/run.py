"""``rcnn run``: a config's stages in dependency order, in one process, each skipped when up to date.

``plan`` lists the steps a config asks for, each with what its artifact's manifest must record (its
resolved options) and the steps whose artifacts it reads, and says of each whether it will run, resume
(an interrupted run left a checkpoint, proposal shards or a partial cache) or is up to date: its manifest
records the same options and every input it recorded (size and modification time) is unchanged, and no
step it reads from runs. ``execute`` runs the steps that are not up to date through the same library
entry functions as the staged commands. A changed option thus reruns its stage and the ones that read
from it, and nothing else.

With an index of shared steps (``rcnn study``: ``stages.pipeline.sharing``), a step another run made alike
is taken from it before the plan runs.

Under ``torchrun`` every process plans the same steps; the stages that are data-parallel (a method's
fine-tuning that says so) run on every process, the others on rank 0 while the rest wait.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from stages.config.run_config import RunConfig, resolved_toml
from stages.core.atomic import atomic_path, ensure_folder
from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.formats import class_findings, detect_format, load_dataset
from stages.datasets.records import Dataset
from stages.evaluation.diagnosis import similar_classes
from stages.evaluation.metrics import default_metric
from stages.inference.detect import detect_images
from stages.inference.evaluate import Scoring, evaluate_run
from stages.methods.base import Method, Variant
from stages.pipeline.sharing import (
    Holder,
    SharedArtifacts,
    fingerprints,
    reads_the_same,
    snapshot,
    stamp_of,
    take,
    written,
)
from stages.proposals.options import ProposalOptions
from stages.proposals.sources import SelectiveSearch
from stages.runs.layout import RunLayout, manifest_path, parts_of, read_manifest, write_manifest
from stages.runs.processes import Processes, processes
from stages.runs.steps import SharedSteps, Step, StepKey
from stages.training.pretrain import pretrain

log = logging.getLogger("rcnn")


class State(Enum):
    RUN = "run"
    RESUME = "resume"
    UP_TO_DATE = "up to date"
    SHARE = "share"
    """Made by another run of a study, whose files it will take (``stages.pipeline.sharing``): only in a
    study's plan before it runs."""


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    state: State
    reason: str


@dataclass
class Context:
    """What the steps share while a plan executes: the config, the run folder, the datasets (loaded once
    each, when first asked for), the progress display, and whether this process writes the artifacts of
    the steps that run on every process (rank 0 under ``torchrun``)."""

    config: RunConfig
    run: RunLayout
    progress: Progress = SILENT
    writer: bool = True
    datasets: dict[str, Dataset] = field(default_factory=dict)

    def dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            data = self.config.data
            self.datasets[split] = load_dataset(
                Path(data.root), split, data.classes, data.skip_bad, self.progress, data.format
            )
        return self.datasets[split]


def steps(config: RunConfig) -> list[Step]:
    """Every step ``config`` asks for, each after the steps it reads from: the shared ones (proposals, where
    a step reads them; pre-training), each method's own (``Method.steps``) with the evaluation of each of
    its variants placed after the last step it reads, and the pictures of ``[detect]``."""
    run = config.run.layout
    data = config.data
    found = [
        _propose_step(run, split, config.propose, data.skip_bad)
        for split in dict.fromkeys((data.train, data.test))
    ]
    backbone: tuple[StepKey, ...] = ()
    if config.pretrain is not None:
        options = config.pretrain
        files = run.pretrain
        found.append(
            Step(
                StepKey("pretrain"),
                files.model,
                asdict(options),
                lambda ctx: pretrain(ctx.dataset(data.train), ctx.run, options, progress=ctx.progress),
                partial=(files.checkpoint,),
                stale=(files.checkpoint, files.log),
            )
        )
        backbone = (found[-1].key,)
    shared = SharedSteps(run, data.train, data.test, backbone)
    metric = config.evaluate.metric or default_metric(data.format or detect_format(Path(data.root)))
    for method in config.method_objects():
        settings = config.methods[method.name]
        own = method.steps(settings.tables, shared)
        for variant in settings.variants:
            evaluation = _evaluation_step(method, variant, config, shared, metric)
            reads = [index for index, step in enumerate(own) if step.key in evaluation.after]
            own.insert(max(reads, default=len(own) - 1) + 1, evaluation)
        found += own
    if config.detect is not None:
        found.append(_detect_step(config, run))
    read = {key for step in found for key in step.after}
    return [step for step in found if step.key.stage != "propose" or step.key in read]  # none unread


def _propose_step(run: RunLayout, split: str, options: ProposalOptions, skip_bad: bool) -> Step:
    return Step(
        SharedSteps.proposals(split),
        run.proposals(split),
        asdict(options),
        lambda ctx: SelectiveSearch(options).propose_split(
            ctx.dataset(split), ctx.run, skip_bad=skip_bad, progress=ctx.progress
        ),
        partial=(run.proposal_parts(split),),
        everywhere=True,
        summary=lambda found: found.headline if found is not None else "",
    )


def _evaluation_step(
    method: Method[Any], variant: Variant, config: RunConfig, shared: SharedSteps, metric: str
) -> Step:
    """The test of ``variant`` on the test split: detections, scored, their errors diagnosed."""
    files = method.files(shared.run)
    test = shared.test
    similar = config.evaluate.similar
    scoring = Scoring(metric, method.test_options, variant, config.evaluate.precision, True, similar)
    return Step(
        _evaluation_key(method, variant, test),
        files.results(test, variant.key),
        scoring.made_with(method, metric),
        lambda ctx: evaluate_run(
            ctx.dataset(test),
            ctx.run,
            method,
            metric,
            variant=variant,
            device=config.run.device,
            precision=config.evaluate.precision,
            diagnose=True,
            similar=similar,
            progress=ctx.progress,
        ),
        after=method.tested_after(variant, test),
        partial=(parts_of(files.detections(test, variant.key)),),
        everywhere=True,
    )


def _evaluation_key(method: Method[Any], variant: Variant, split: str) -> StepKey:
    return StepKey("evaluate", method.name, split, variant.note)


def _detect_step(config: RunConfig, run: RunLayout) -> Step:
    settings = config.detect
    assert settings is not None
    method = next(m for m in config.method_objects() if m.name == settings.method)
    variant = method.variant(settings.compressed)
    grid = method.files(run).detect / "grid.png"
    test = config.data.test

    def execute(ctx: Context) -> None:
        started = time.perf_counter()
        images = [record.path for record in ctx.dataset(test).images[: settings.images]]
        found = detect_images(
            images,
            ctx.run,
            method,
            score_thresh=settings.score_thresh,
            proposer=method.proposer(ctx.run) or SelectiveSearch(config.propose),
            device=config.run.device,
            variant=variant,
            precision=settings.precision,
            grid=grid,
            progress=ctx.progress,
        )
        if not ctx.writer:
            return
        write_manifest(
            grid,
            stage="detect",
            options=asdict(settings),
            inputs=images,
            seconds=time.perf_counter() - started,
            results={"detections": [len(r.detections) for r in found]},
        )

    return Step(
        StepKey("detect", method.name),
        grid,
        asdict(settings),
        execute,  # type: ignore[arg-type]
        after=(_evaluation_key(method, variant, test),),
        everywhere=True,
    )


def check_splits(context: Context) -> None:
    """Before any stage runs: the training and test splits read, and their class lists compared
    (``class_findings``); the similar classes of ``[evaluate]`` checked against them, not at the
    evaluation hours later. Different lists and unknown classes are a UserError; a class with nothing to
    train on, a warning."""
    data = context.config.data
    problems, warnings = class_findings(
        [context.dataset(split) for split in dict.fromkeys((data.train, data.test))]
    )
    if problems:
        raise UserError(f"{problems[0]} (or [data] classes in {context.config.source})")
    try:
        similar_classes(context.dataset(data.test), context.config.evaluate.similar)
    except UserError as exc:
        raise UserError(f"{context.config.source}: [evaluate] {exc}") from None
    said = context.writer and not context.config.run.replica  # once: not once a process, nor a seed
    for warning in warnings if said else ():
        log.warning(warning)


def plan(config: RunConfig, restart: bool = False, context: Context | None = None) -> list[PlannedStep]:
    """Each step of ``config`` with what ``run_config`` will do with it, and why; with ``restart``
    nothing is resumed (interrupted steps start over). The splits are checked first (``check_splits``,
    reading them into ``context``)."""
    check_splits(context or Context(config, config.run.layout))
    planned: list[PlannedStep] = []
    states: dict[StepKey, State] = {}
    found = steps(config)
    for index, step in enumerate(found):
        reruns = [key for key in step.after if states[key] is not State.UP_TO_DATE]
        if reruns:
            state, reason = State.RUN, f"after {reruns[0].label}"
        else:
            # an input a later step adds to (SPP-net's cache, completed after fine-tuning) has moved on
            later = {later.artifact.resolve() for later in found[index + 1 :]}
            state, reason = _state(step, restart, later)
        states[step.key] = state
        planned.append(PlannedStep(step, state, reason))
    return planned


def _state(step: Step, restart: bool, made_later: set[Path]) -> tuple[State, str]:
    manifest = read_manifest(step.artifact) if step.artifact.exists() else None
    if manifest is not None:
        if manifest.get("location") != str(step.artifact.resolve()):
            return State.RUN, "made elsewhere (a copied or moved run folder)"
        recorded = manifest.get("options", {})
        expected = _json(step.expects)
        changed = [key for key, value in expected.items() if _json(recorded.get(key)) != value]
        if changed:
            return State.RUN, f"{', '.join(changed)} changed"
        moved = [
            entry["path"]
            for entry in manifest.get("inputs", [])
            if not _unchanged(entry) and Path(entry["path"]).resolve() not in made_later
        ]
        if moved:
            return State.RUN, f"{moved[0]} changed"
        return State.UP_TO_DATE, ""
    if not restart and any(p.exists() for p in step.partial):
        return State.RESUME, "interrupted"
    return State.RUN, "not made yet" if not step.artifact.exists() else "no manifest"


def _json(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists, paths as text), so records compare equal."""
    return json.loads(json.dumps(value, default=str))


def _unchanged(entry: Mapping[str, Any]) -> bool:
    try:
        stat = Path(entry["path"]).stat()
    except (OSError, KeyError, TypeError):
        return False
    return stat.st_size == entry.get("bytes") and stat.st_mtime_ns == entry.get("mtime_ns")


@dataclass(frozen=True)
class RunOutcome:
    """What ``run_config`` did: the plan it followed, the steps whose files it took from another run
    (``shared``), and this process's rank (0 prints)."""

    planned: list[PlannedStep]
    rank: int = 0
    taken: tuple[StepKey, ...] = ()

    @property
    def ran(self) -> list[PlannedStep]:
        return [item for item in self.planned if item.state is not State.UP_TO_DATE]


def replicas(config: RunConfig, seeds: int) -> list[RunConfig]:
    """``config`` and its replicas for ``seeds`` seeds in all (``RunConfig.replica``)."""
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: give at least 1")
    return [config.replica(offset) for offset in range(seeds)]


def run_config(
    config: RunConfig,
    *,
    seeds: int = 1,
    restart: bool = False,
    progress: Progress = SILENT,
    show_plan: Callable[[list[PlannedStep], RunLayout], None] = lambda planned, run: None,
    on_step: Callable[[PlannedStep, float, str], None] = lambda item, seconds, summary: None,
    shared: SharedArtifacts | None = None,
) -> RunOutcome:
    """Plan ``config`` (``plan``), hand the plan and its run folder to ``show_plan``, run the steps that
    are not up to date in order (``on_step`` hears of each one done, with its seconds and
    ``Step.summary``) and write ``RUN/report.html``. With ``seeds`` > 1, then the same for each replica
    ``config.replica(k)``, k = 1 .. seeds - 1, in ``RUN/seeds/<k>/``: the methods trained and tested
    again with every seed + k, on the proposals made once; the report gives each method's spread over
    the seeds. With the index ``shared`` (``rcnn study``), a step that another run made alike is taken
    from it instead of made (``stages.pipeline.sharing``), and each step made is recorded in it.

    Each run's resolved config is written to its ``config.toml`` first. Files are written by rank 0 only.
    """
    run = config.run.layout
    planned: list[PlannedStep] = []
    taken: dict[StepKey, Path] = {}
    with processes(config.run.device) as procs:  # held for the whole run; the stages join it
        datasets: dict[str, Dataset] = {}  # read once for every seed
        for chosen in replicas(config, seeds):
            context = Context(
                chosen,
                chosen.run.layout,
                progress if procs.writer else SILENT,
                writer=procs.writer,
                datasets=datasets,
            )
            mine, told = plan(chosen, restart, context), on_step
            if shared is not None:
                mine, found = _take_shared(context, mine, shared, restart, procs)
                taken |= found
                told = _Recorder(
                    shared, fingerprints([i.step for i in mine], chosen.data), context.run, on_step
                )
            planned += execute_plan(context, mine, procs, show_plan, told)
        outcome = RunOutcome(planned, procs.rank, tuple(taken))
        page = run.report_page
        if procs.writer and (outcome.ran or taken or not page.exists()):
            from stages.report.page import write_report_page  # matplotlib: only when a page is due

            write_report_page([run], page)
    return outcome


def _take_shared(
    context: Context, planned: list[PlannedStep], shared: SharedArtifacts, restart: bool, procs: Processes
) -> tuple[list[PlannedStep], dict[StepKey, Path]]:
    """Take into the run the files of every step of ``planned`` that is not up to date and that another
    run of ``shared`` holds, where that run's step read the very files this one reads (rank 0 takes, the
    others wait); the plan made again, each step taken up to date and saying where it came from; and the
    steps taken, with the run each came from."""
    run = context.run
    prints = fingerprints([item.step for item in planned], context.config.data)
    artifacts = {item.step.key: item.step.artifact for item in planned}
    taken = {}
    for item in planned if procs.writer else []:
        if item.state is State.UP_TO_DATE:
            continue
        holder = shared.find(prints[item.step.key], run.root, prints.values())
        if holder is None or not reads_the_same(holder, run, [artifacts[key] for key in item.step.after]):
            continue
        remove_made(item.step)  # what an earlier or interrupted run of the step left here
        take(holder, run)
        stamps = {name: stamp_of(run.root / name) for name in holder.files}
        shared.record(
            prints[item.step.key], Holder(run.root, run.shared, {k: v for k, v in stamps.items() if v})
        )
        taken[item.step.key] = holder.root
    if taken:
        shared.save()
    procs.wait()  # the others plan again once rank 0 has taken the files
    replanned = [
        PlannedStep(item.step, item.state, f"made in {taken[item.step.key]}")
        if item.step.key in taken and item.state is State.UP_TO_DATE
        else item
        for item in plan(context.config, restart, context)
    ]
    return replanned, taken


class _Recorder:
    """``execute_plan``'s ``on_step`` under sharing: records in the index the files each step made (what
    changed in the run folder since the step before: ``sharing.written``), then hands on to ``on_step``."""

    def __init__(
        self,
        shared: SharedArtifacts,
        prints: dict[StepKey, str],
        run: RunLayout,
        on_step: Callable[[PlannedStep, float, str], None],
    ):
        self.shared, self.prints, self.run, self.on_step = shared, prints, run, on_step
        self.before = snapshot(run.root)
        self.not_steps = {path.relative_to(run.root).as_posix() for path in (run.config, run.report_page)}

    def __call__(self, item: PlannedStep, seconds: float, summary: str) -> None:
        after = snapshot(self.run.root)
        files = {k: v for k, v in written(self.before, after).items() if k not in self.not_steps}
        self.before = after
        if files:
            self.shared.record(self.prints[item.step.key], Holder(self.run.root, self.run.shared, files))
            self.shared.save()
        self.on_step(item, seconds, summary)


def execute_plan(
    context: Context,
    planned: list[PlannedStep],
    procs: Processes,
    show_plan: Callable[[list[PlannedStep], RunLayout], None],
    on_step: Callable[[PlannedStep, float, str], None],
) -> list[PlannedStep]:
    """Run the steps of ``planned`` that are not up to date, in order; return ``planned``."""
    ran = [item for item in planned if item.state is not State.UP_TO_DATE]
    if procs.writer:
        show_plan(planned, context.run)
        _write_config(context.config, context.run.config)
        for item in ran:  # all at once: no step may read what an earlier run of another left
            if item.state is State.RUN and item.step.replaces:
                remove_made(item.step)
    for item in ran:
        procs.wait()
        started = time.perf_counter()
        result = None
        if item.step.everywhere or procs.writer:  # the others wait for rank 0 at the next barrier
            result = item.step.execute(context)
        procs.wait()
        if procs.writer:
            on_step(item, time.perf_counter() - started, item.step.summary(result))
    return planned


def remove_made(step: Step) -> None:
    """Clear what an earlier run of ``step`` left, so that it starts from the beginning."""
    for path in (step.artifact, manifest_path(step.artifact), *step.partial, *step.stale):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _write_config(config: RunConfig, target: Path) -> None:
    """Write the resolved config to ``target`` unless it already says the same."""
    header = (
        "# The resolved config of this run: every option of every stage.\n"
        f"# Remake the run with: rcnn run {target}\n\n"
    )
    text = resolved_toml(config, header)
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return
    ensure_folder(target.parent)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
