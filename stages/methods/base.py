"""What a detector of the lineage is to the shared stages.

``Method`` is the interface ``rcnn run``, ``detect``, ``evaluate``, ``report`` and the command line ask:
its name and label, its config tables and the steps they make, the forms of its network that are tested
as rows of their own (``Variant``), how to fine-tune it, its detector for any image, its detections of a
split, and what its training and test cost. ``CachedFeatureMethod`` implements the half R-CNN and SPP-net
share: features cached per region, linear SVMs and box regressors fitted on them, detection from the
cache. A method is an object of one of these types (``stages.methods.METHODS``); no shared stage compares
method names or tests a method's type.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch

from stages.cache.box_regression import BoxRegressors, load_bbox, train_bbox
from stages.cache.features import ExtractSummary, RegionFeatures
from stages.cache.files import FeatureCache
from stages.cache.options import BboxOptions, SvmOptions
from stages.cache.svm import load_svms, train_svms
from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.detections.postprocess import DetectOptions, ImageDetections, detect_from_scores
from stages.proposals.sources import Proposer
from stages.runs.layout import MethodLayout, RunLayout, parts_of, read_manifest
from stages.runs.steps import SharedSteps, Step, StepKey
from stages.training.options import TrainingOptions
from stages.training.solver import TrainingSummary

log = logging.getLogger("rcnn")

OptionsT = TypeVar("OptionsT")
FinetuneT = TypeVar("FinetuneT", bound=TrainingOptions)
ExtractT = TypeVar("ExtractT")


def options_from(
    options_type: type[OptionsT], given: Mapping[str, Any], stage: str, hints: Mapping[str, str] | None = None
) -> OptionsT:
    """``options_type`` with the ``given`` fields set, the others at their defaults (the paper's).

    A given option that ``options_type`` has no field for is a UserError naming it and ``stage``, or
    saying its ``hints`` entry (where to set it instead).
    """
    names = {f.name for f in fields(options_type)}  # type: ignore[arg-type]
    unknown = sorted(set(given) - names)
    if unknown:
        option = unknown[0]
        hint = (hints or {}).get(option, f"not an option of {stage}")
        raise UserError(f"--{option.replace('_', '-')}: {hint}")
    return options_type(**given)


@dataclass(frozen=True)
class ImageDetector:
    """A trained detector on any image: ``find(image (H, W, 3) uint8 RGB, proposals (N, 4) or None)``
    gives its detections, labels 1..C of ``classes``, and how many proposals they came from. A detector
    whose network proposes (its method's ``proposer`` is a ``NetworkProposals``) is given None and makes
    its own from the conv5 it computes anyway."""

    classes: tuple[str, ...]
    find: Callable[[np.ndarray, np.ndarray | None], tuple[ImageDetections, int]]


@dataclass(frozen=True)
class ImageResult:
    """A method's detections of one image of a split: of the proposals' own boxes (``plain``) and after
    box regression (``regressed``, None without regressors); for a method that times its parts, their
    seconds on this image (``timing``); for a method whose network proposes, its proposals best first
    (``proposals`` (N, 4), up to ``stages.proposals.recall.PROPOSAL_COUNTS``' largest), whose recall
    the evaluation records."""

    image_id: str
    plain: ImageDetections
    regressed: ImageDetections | None
    timing: Mapping[str, float] | None = None
    proposals: np.ndarray | None = None


@dataclass(frozen=True)
class Variant:
    """A form of a method's trained network that is tested and reported as a row of its own: the network
    as trained (``PLAIN``), or one made from it (``SVD``, Fast R-CNN's truncated fc layers).

    ``key`` names its files (``<split>.<key>.json``; none for ``PLAIN``); ``label`` follows the method's
    in tables; ``note`` follows its steps' labels; ``table`` is the method's config table that asks for
    it and holds its paper figures (``[fast.compress.paper]``), none for a form always made;
    ``compressed`` is what its manifests and results record."""

    key: str = ""
    label: str = ""
    note: str = ""
    table: str = ""
    compressed: bool = False


PLAIN = Variant()
SVD = Variant("svd", " + SVD", "SVD", "compress", compressed=True)
"""The truncated-SVD form of a network's fc layers (Fast R-CNN, section 3.1): ``rcnn compress``."""


@dataclass(frozen=True)
class ConfigTable:
    """One table of a method's part of a run config, ``[<method>.<name>]``: the options of one of its
    stages (``options_type``, the paper's defaults); an ``optional`` table's stage runs only when the
    config has the table."""

    name: str
    options_type: type
    optional: bool = False


Measure = Callable[[np.ndarray, np.ndarray], tuple[float, float]]
"""``(image (H, W, 3) uint8 RGB, proposals (N, 4)) -> (conv, fc)``: the seconds of the two parts of a test
pass on the image, which it runs."""


@dataclass(frozen=True)
class Benchmark:
    """A method's shipped test pass and a fine-tuning mini-batch with random weights (speed does not depend
    on them), for ``rcnn bench``.

    ``test``: each variant's test pass (``Measure``), the code ``rcnn detect`` and ``rcnn evaluate`` run;
    ``training``: the loss of one fine-tuning mini-batch (forward only: the bench adds the backward pass
    and the SGD step of ``trained``'s trainable parameters), None for a method not fine-tuned; ``peers``:
    other implementations of the same work to compare with (name -> ``Measure``); ``profiled``: whether
    ``rcnn bench methods`` shows where its plain test pass spends its time, op by op."""

    test: Mapping[Variant, Measure]
    training: Callable[[], torch.Tensor] | None = None
    trained: torch.nn.Module | None = None
    peers: Mapping[str, Measure] = field(default_factory=dict)
    profiled: bool = False


@dataclass(frozen=True)
class BenchSettings:
    """What a benchmark is built for: the backbone (random weights), the number of classes, the images'
    shorter side (the test scale; SPP-net's ``scales`` where given), the images with their proposals
    (``work``, what the training mini-batch is drawn from), the device and precision, the options given
    for a compressed variant (``compress``: the SVD's ranks; the paper's otherwise) and the seed of the
    random labels."""

    backbone: str
    classes: int
    side: int
    work: Sequence[tuple[np.ndarray, np.ndarray]]
    device: torch.device
    precision: str = "fp32"
    scales: tuple[int, ...] | None = None
    compress: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0


class Method(ABC, Generic[FinetuneT]):
    """A detector of the lineage, as the shared stages see it; ``FinetuneT`` is its fine-tuning options."""

    name: ClassVar[str]
    """The ``--method`` value and the run folder's ``RUN/<name>/``."""
    label: ClassVar[str]
    """The name in tables."""
    test_options: ClassVar[DetectOptions]
    """The paper's test settings (NMS, detections kept)."""
    display_threshold: ClassVar[float]
    """``rcnn detect``'s default score threshold: what is worth drawing on a picture."""
    finetunes_distributed: ClassVar[bool] = False
    """Whether its fine-tuning is data-parallel under ``torchrun`` (every process takes part)."""
    compress_options_type: ClassVar[type | None] = None
    """The options of its compressed form (``rcnn compress``), None for a method that has none."""
    finetune_options_type: ClassVar[type[TrainingOptions]]
    """Its fine-tuning options (``FinetuneT``), with the paper's defaults."""
    option_hints: ClassVar[Mapping[str, str]] = {}
    """For command-line options the method does not take: where to set them instead."""
    variants: ClassVar[tuple[Variant, ...]] = (PLAIN,)
    """The forms of its network that are tested as rows of their own, ``PLAIN`` first."""

    @property
    def tables(self) -> tuple[ConfigTable, ...]:
        """Its tables in a run config, in the order its stages run (``stages.config``)."""
        tables = [ConfigTable("finetune", self.finetune_options_type)]
        if self.compress_options_type is not None:
            tables.append(ConfigTable("compress", self.compress_options_type, optional=True))
        return tuple(tables)

    def files(self, run: RunLayout) -> MethodLayout:
        """Where this method keeps its artifacts in ``run``."""
        return run.method(self.name)

    def proposer(self, run: RunLayout) -> Proposer | None:
        """The proposals its detector takes on new images when its network makes its own; None (the
        lineage's three) for the run's proposer (``stages.proposals.sources.run_proposer``)."""
        return None

    def model_proposer(self, model: Path, boxes: int, device: str = "auto") -> Proposer:
        """Its trained network ``model`` as the proposals of any method, ``boxes`` an image, for a method
        whose network proposes (``rcnn propose --proposer``); UserError for the others."""
        raise UserError(f"{self.label}'s network makes no proposals")

    def row_label(self, variant: Variant = PLAIN) -> str:
        """Its name in tables: ``Fast R-CNN + SVD``."""
        return self.label + variant.label

    def variant(self, compressed: bool) -> Variant:
        """Its compressed form (``--compressed``, a result's ``"compressed"``), or the network as trained;
        UserError for a compressed form it has none of."""
        for variant in self.variants:
            if variant.compressed == compressed:
                return variant
        raise UserError(f"--compressed: {self.label} has no compressed model (see `rcnn compress`)")

    def variant_of(self, results: Mapping[str, Any]) -> Variant:
        """The variant an evaluation's ``results`` are of: their ``"variant"`` (or, as written before it,
        ``"compressed"``); UserError for one the method has no longer."""
        if "variant" not in results:
            return self.variant(bool(results.get("compressed")))
        for variant in self.variants:
            if variant.key == results["variant"]:
                return variant
        raise UserError(f"{self.label} has no variant {results['variant']!r}")

    def compress_options(self, given: Mapping[str, Any]) -> Any:
        """The options of its compressed form with the ``given`` command-line values, the paper's
        otherwise; UserError for a method that has none."""
        if self.compress_options_type is None:
            raise UserError(f"{self.label} has no compressed model")
        return options_from(self.compress_options_type, given, f"{self.label} compression", self.option_hints)

    def compress(self, run: RunLayout, options: Any) -> Any:
        """Write the compressed form of ``run``'s trained network (methods with ``compress_options_type``)."""
        raise UserError(f"{self.label} has no compressed model")

    def steps(self, tables: Mapping[str, Any], shared: SharedSteps) -> list[Step]:
        """The steps of ``rcnn run`` that make what its detector reads, in order, from its config
        ``tables`` (name -> options; an optional table only when given): fine-tuning, and compression
        when asked for. The pipeline adds each variant's evaluation (``tested_after``)."""
        found = [self.finetune_step(tables["finetune"], shared, self.trains_on(shared))]
        if "compress" in tables:
            options = tables["compress"]
            found.append(
                Step(
                    StepKey("compress", self.name),
                    self.files(shared.run).compressed,
                    asdict(options),
                    lambda ctx: self.compress(ctx.run, options),
                    after=(StepKey("finetune", self.name),),
                )
            )
        return found

    def trains_on(self, shared: SharedSteps) -> tuple[StepKey, ...]:
        """The steps whose artifacts its fine-tuning reads, besides the run's backbone: the training
        split's proposals (none for a method whose network proposes)."""
        return (shared.proposals(shared.train),)

    def tested_after(self, variant: Variant, split: str) -> tuple[StepKey, ...]:
        """The steps whose artifacts the test of ``variant`` on ``split`` reads: what ``detect_split``
        reads."""
        return (
            StepKey("compress" if variant.compressed else "finetune", self.name),
            SharedSteps.proposals(split),
        )

    def finetune_step(self, options: FinetuneT, shared: SharedSteps, after: tuple[StepKey, ...]) -> Step:
        """The fine-tuning step, after the steps ``after`` and the run's backbone where it starts from it."""
        files = self.files(shared.run).finetune
        parts = [files.part(name) for name in options.training_parts]
        train = shared.train
        return Step(
            StepKey("finetune", self.name),
            files.model,
            {"method": self.name, **asdict(options)},
            lambda ctx: self.finetune(ctx.dataset(train), ctx.run, options, progress=ctx.progress),
            after=(*after, *shared.backbone_for(options)),
            partial=(files.checkpoint, *(part.checkpoint for part in parts)),
            stale=(files.checkpoint, files.log, *(part.checkpoint.parent for part in parts)),
            everywhere=self.finetunes_distributed,
        )

    def finetune_options(self, given: Mapping[str, Any]) -> FinetuneT:
        """The fine-tuning options with the ``given`` command-line values, the paper's otherwise."""
        stage = f"{self.label} fine-tuning"
        return options_from(self.finetune_options_type, given, stage, self.option_hints)  # type: ignore[return-value]

    @abstractmethod
    def finetune(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: FinetuneT,
        *,
        resume: bool = True,
        progress: Progress = SILENT,
    ) -> TrainingSummary:
        """Fine-tune the method's network on ``dataset``; write ``RUN/<name>/finetune/model.pt``."""

    @abstractmethod
    def detector(
        self,
        run: RunLayout,
        options: DetectOptions,
        device: torch.device,
        *,
        variant: Variant = PLAIN,
        precision: str = "fp32",
    ) -> ImageDetector:
        """The trained detector of ``run`` with test settings ``options``, for images with proposals of
        their own; its network computes in ``precision`` (``stages.networks.precision``)."""

    def detector_inputs(self, run: RunLayout, *, variant: Variant = PLAIN) -> list[Path]:
        """The artifacts that ``detector`` reads: what its detections of any image depend on; the
        network of ``variant``, as trained or compressed."""
        files = self.files(run)
        return [files.compressed if variant.compressed else files.finetune.model]

    @abstractmethod
    def test_inputs(self, run: RunLayout, split: str, *, variant: Variant = PLAIN) -> list[Path]:
        """The artifacts that ``detect_split`` reads for ``split``: what its detections depend on."""

    @abstractmethod
    def detect_split(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: DetectOptions,
        *,
        variant: Variant = PLAIN,
        device: torch.device,
        precision: str = "fp32",
    ) -> Iterator[ImageResult]:
        """The detections of every image of ``dataset`` (its proposals from ``run``), with and without box
        regression, image by image in split order as the iterator is read; what is loaded once (a
        network) is best loaded by the call, so that the first image's time does not hold it. A network
        run here computes in ``precision``."""

    @abstractmethod
    def benchmark(self, settings: BenchSettings) -> Benchmark:
        """Its test pass of every variant and a fine-tuning mini-batch, built with random weights of
        ``settings.backbone`` (``rcnn bench methods``, ``features`` and ``scaling`` time them)."""

    def training_seconds(self, run: RunLayout, variant: Variant = PLAIN) -> float | None:
        """Seconds of the method's own training stages in ``run`` (not the shared proposals and
        pre-training), None while any is missing: its one training run, and the compression for the
        compressed model."""
        files = self.files(run)
        finetune = read_manifest(files.finetune.model)
        compress = read_manifest(files.compressed) if variant.compressed else None
        if finetune is None or (variant.compressed and compress is None):
            return None
        return finetune["seconds"] + (compress["seconds"] if compress else 0.0)

    def test_seconds(self, run: RunLayout, split: str, results: Mapping[str, Any]) -> float | None:
        """Seconds an image at test time (proposals excluded), from an evaluation's ``results``."""
        return results.get("seconds_per_image")

    def test_seconds_with_proposals(
        self, run: RunLayout, split: str, results: Mapping[str, Any]
    ) -> float | None:
        """Seconds an image at test time with the proposals' own: ``test_seconds`` plus the seconds an
        image the run's proposals of ``split`` took to make (their ``propose`` stage, its worker processes
        in parallel, as the run made them); None when either is unknown."""
        seconds = self.test_seconds(run, split, results)
        made = read_manifest(run.proposals(split))
        if seconds is None or made is None:
            return None
        rate = made["results"].get("images_per_second") or 0.0
        return seconds + 1.0 / rate if rate > 0 else None


class CachedFeatureMethod(Method[FinetuneT], Generic[FinetuneT, ExtractT]):
    """R-CNN and SPP-net: region features cached by ``extract-features``, linear SVMs (``train-svm``) and
    box regressors (``train-bbox``) fitted on them; on a split, detection reads the cache. ``ExtractT``
    is its feature-extraction options."""

    region_feature: ClassVar[str]
    """The feature the box regressors read: the last pooled conv features before fc6."""
    extract_options_type: ClassVar[type]
    """Its feature-extraction options (``ExtractT``)."""
    test_options = DetectOptions()
    display_threshold = 0.0  # the SVM margin

    @property
    def tables(self) -> tuple[ConfigTable, ...]:
        return (
            ConfigTable("finetune", self.finetune_options_type),
            ConfigTable("features", self.extract_options_type),
            ConfigTable("svm", SvmOptions),
            ConfigTable("bbox", BboxOptions),
        )

    def steps(self, tables: Mapping[str, Any], shared: SharedSteps) -> list[Step]:
        """Fine-tuning, then each split's features, then the SVMs and the box regressors on the training
        split's."""
        after = (shared.proposals(shared.train),)
        return [
            self.finetune_step(tables["finetune"], shared, after),
            *self.cache_steps(tables, shared),
        ]

    def cache_steps(
        self, tables: Mapping[str, Any], shared: SharedSteps, *, completes: bool = False
    ) -> list[Step]:
        """Each split's features after fine-tuning (``completes``: adding to a training cache made before
        it), and the SVMs and box regressors on the training split's."""
        finetuned = StepKey("finetune", self.name)
        train, test = shared.train, shared.test
        found = [self.features_step(tables["features"], shared, train, (finetuned,), replaces=not completes)]
        if test != train:
            found.append(
                self.features_step(tables["features"], shared, test, (finetuned, shared.proposals(test)))
            )
        files = self.files(shared.run)
        svm: SvmOptions = tables["svm"]
        bbox: BboxOptions = tables["bbox"]
        cached = (StepKey("extract-features", self.name, train),)
        return [
            *found,
            Step(
                StepKey("train-svm", self.name),
                files.svm,
                {"method": self.name, "split": train, **asdict(svm)},
                lambda ctx: train_svms(files, train, svm, ctx.progress),
                after=cached,
            ),
            Step(
                StepKey("train-bbox", self.name),
                files.bbox,
                {"method": self.name, "split": train, **asdict(bbox)},
                lambda ctx: train_bbox(files, self.region_feature, train, bbox, ctx.progress),
                after=cached,
            ),
        ]

    def features_step(
        self,
        options: ExtractT,
        shared: SharedSteps,
        split: str,
        after: tuple[StepKey, ...],
        *,
        before_finetuning: bool = False,
        replaces: bool = True,
    ) -> Step:
        """The step that caches ``split``'s features (``before_finetuning``: the first of two passes)."""
        target = self.files(shared.run).features(split)
        return Step(
            StepKey("extract-features", self.name, split, "before fine-tuning" if before_finetuning else ""),
            target,
            {"method": self.name, **asdict(options)},  # type: ignore[call-overload]
            lambda ctx: self.extract_features(
                ctx.dataset(split), ctx.run, options, ctx.progress, before_finetuning=before_finetuning
            ),
            after=after,
            partial=(target.with_name(f".{target.name}.partial"), parts_of(target)),
            replaces=replaces,
            everywhere=True,
        )

    def tested_after(self, variant: Variant, split: str) -> tuple[StepKey, ...]:
        """The split's features, the SVMs and the box regressors."""
        return (
            StepKey("extract-features", self.name, split),
            StepKey("train-svm", self.name),
            StepKey("train-bbox", self.name),
        )

    def extract_options(self, given: Mapping[str, Any]) -> ExtractT:
        """The feature-extraction options with the ``given`` command-line values, the defaults otherwise."""
        stage = f"{self.label} feature extraction"
        return options_from(self.extract_options_type, given, stage, self.option_hints)

    @abstractmethod
    def extract_features(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: ExtractT,
        progress: Progress = SILENT,
        *,
        before_finetuning: bool = False,
    ) -> ExtractSummary:
        """Cache the features of every region of the split: ``RUN/<name>/features/<split>.h5``, from the
        fine-tuned network; with ``before_finetuning``, the first pass of a method whose fine-tuning
        reads cached features (SPP-net's pyramids), a UserError for the others."""

    def extraction_network(self, run: RunLayout, *, before_finetuning: bool = False) -> Path:
        """The network file ``extract-features`` reads in ``run``: the fine-tuned one."""
        return self.files(run).finetune.model

    @abstractmethod
    def region_features(
        self, run: RunLayout, classes: tuple[str, ...], device: torch.device, precision: str = "fp32"
    ) -> RegionFeatures:
        """The trained network's features of any image's regions, as the cache holds them."""

    def detector(
        self,
        run: RunLayout,
        options: DetectOptions,
        device: torch.device,
        *,
        variant: Variant = PLAIN,
        precision: str = "fp32",
    ) -> ImageDetector:
        files = self.files(run)
        svm = load_svms(files)
        bbox = load_bbox(files, svm.classes)
        extractor = self.region_features(run, svm.classes, device, precision)

        def find(image: np.ndarray, boxes: np.ndarray | None) -> tuple[ImageDetections, int]:
            if boxes is None:
                raise ValueError(f"{self.label} detects on proposals it is given")
            features = {k: v.numpy() for k, v in extractor(image, boxes).items()}
            plain, moved = detect_from_scores(
                boxes,
                svm.scores(features[svm.feature]),
                image.shape[:2],
                options,
                _regressor(bbox, features[bbox.feature] if bbox else None),
            )
            return (moved if moved is not None else plain), len(boxes)

        return ImageDetector(svm.classes, find)

    def detector_inputs(self, run: RunLayout, *, variant: Variant = PLAIN) -> list[Path]:
        files = self.files(run)
        return [files.finetune.model, files.svm, *([files.bbox] if files.bbox.exists() else [])]

    def test_inputs(self, run: RunLayout, split: str, *, variant: Variant = PLAIN) -> list[Path]:
        files = self.files(run)
        return [files.features(split), files.svm, *([files.bbox] if files.bbox.exists() else [])]

    def detect_split(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: DetectOptions,
        *,
        variant: Variant = PLAIN,
        device: torch.device,
        precision: str = "fp32",
    ) -> Iterator[ImageResult]:
        """The SVMs and regressors on the cached features (made at ``extract-features``'s precision:
        ``precision`` has nothing to run here)."""
        files = self.files(run)
        svm = load_svms(files, dataset.classes)
        bbox = load_bbox(files, dataset.classes)
        if bbox is None:
            log.warning("no box regressors in %s; evaluating without box regression", files.root)
        sizes = {r.image_id: (r.height, r.width) for r in dataset.images}
        source = files.features(dataset.split)
        with FeatureCache.of(files, dataset.split, dataset.root) as cache:
            missing = sorted(set(sizes) - set(cache.image_ids))
            if missing:
                raise UserError(
                    f"{source}: no features for {len(missing)} images (first: {missing[0]}); remake it "
                    f"with `{run.command_for(source, dataset.root)}`"
                )
            columns = ["boxes", "gt_labels", svm.feature, *([bbox.feature] if bbox else [])]
            for image in cache.images(list(dict.fromkeys(columns))):
                if image.image_id not in sizes:
                    continue
                proposals = image.proposals
                boxes = image.columns["boxes"][proposals]
                scores = svm.scores(image.columns[svm.feature][proposals])
                pooled = image.columns[bbox.feature][proposals] if bbox else None
                plain, moved = detect_from_scores(
                    boxes, scores, sizes[image.image_id], options, _regressor(bbox, pooled)
                )
                yield ImageResult(image.image_id, plain, moved)

    def training_seconds(self, run: RunLayout, variant: Variant = PLAIN) -> float | None:
        """Fine-tuning, the training split's features (SPP-net's include the pyramid pass fine-tuning
        read), the SVMs and the box regressors."""
        files = self.files(run)
        finetune = read_manifest(files.finetune.model)
        if finetune is None:
            return None
        svm = read_manifest(files.svm)
        parts = [svm, read_manifest(files.bbox)]
        if svm is not None:
            parts.append(read_manifest(files.features(svm["options"]["split"])))
        return finetune["seconds"] + sum(part["seconds"] for part in parts if part is not None)

    def test_seconds(self, run: RunLayout, split: str, results: Mapping[str, Any]) -> float | None:
        """The evaluation's seconds an image plus the split's feature extraction, an image."""
        seconds = results.get("seconds_per_image")
        features = read_manifest(self.files(run).features(split))
        if seconds is None or features is None or not features["results"].get("images"):
            return None
        return seconds + features["seconds"] / features["results"]["images"]


def _regressor(bbox: BoxRegressors | None, features: np.ndarray | None):
    """``(rows, labels) -> deltas`` of the regions' ``features``, or None without regressors."""
    if bbox is None or features is None:
        return None
    return lambda rows, labels: bbox.deltas(features[rows], labels)
