"""What a detector of the lineage is to the shared stages.

``Method`` is the interface ``detect``, ``evaluate``, ``report`` and the command line ask: its name and
label, how to fine-tune it, its detector for any image, its detections of a split, and what its training
and test cost. ``CachedFeatureMethod`` implements the half R-CNN and SPP-net share: features cached per
region, linear SVMs and box regressors fitted on them, detection from the cache. A method is an object of
one of these types (``stages.methods.METHODS``); no shared stage compares method names.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch

from stages.cache.box_regression import BoxRegressors, load_bbox
from stages.cache.features import ExtractSummary, FeatureCache, RegionFeatures
from stages.cache.svm import load_svms
from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.detections.postprocess import DetectOptions, ImageDetections, detect_from_scores
from stages.runs.layout import MethodLayout, RunLayout, read_manifest
from stages.training.solver import TrainingOptions, TrainingSummary

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
    """A trained detector on any image: ``find(image (H, W, 3) uint8 RGB, proposals (N, 4))`` gives its
    detections, labels 1..C of ``classes``."""

    classes: tuple[str, ...]
    find: Callable[[np.ndarray, np.ndarray], ImageDetections]


@dataclass(frozen=True)
class ImageResult:
    """A method's detections of one image of a split: of the proposals' own boxes (``plain``) and after
    box regression (``regressed``, None without regressors); for a method that times its parts, their
    seconds on this image (``timing``)."""

    image_id: str
    plain: ImageDetections
    regressed: ImageDetections | None
    timing: Mapping[str, float] | None = None


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

    def files(self, run: RunLayout) -> MethodLayout:
        """Where this method keeps its artifacts in ``run``."""
        return run.method(self.name)

    @property
    def compressible(self) -> bool:
        """Whether ``rcnn compress`` makes a truncated-SVD form of its network."""
        return self.compress_options_type is not None

    def compress(self, run: RunLayout, options: Any) -> Any:
        """Write the compressed form of ``run``'s trained network (methods with ``compress_options_type``)."""
        raise UserError(f"{self.label} has no compressed model")

    def check_compressed(self, compressed: bool) -> None:
        """UserError when a compressed model is asked of a method that has none."""
        if compressed and not self.compressible:
            raise UserError(f"--compressed: {self.label} has no compressed model (see `rcnn compress`)")

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
        compressed: bool = False,
        precision: str = "fp32",
    ) -> ImageDetector:
        """The trained detector of ``run`` with test settings ``options``, for images with proposals of
        their own; its network computes in ``precision`` (``stages.networks.precision``)."""

    @abstractmethod
    def detector_inputs(self, run: RunLayout, *, compressed: bool = False) -> list[Path]:
        """The artifacts that ``detector`` reads: what its detections of any image depend on."""

    @abstractmethod
    def test_inputs(self, run: RunLayout, split: str, *, compressed: bool = False) -> list[Path]:
        """The artifacts that ``detect_split`` reads for ``split``: what its detections depend on."""

    @abstractmethod
    def detect_split(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: DetectOptions,
        *,
        compressed: bool = False,
        device: torch.device,
        precision: str = "fp32",
    ) -> Iterator[ImageResult]:
        """The detections of every image of ``dataset`` (its proposals from ``run``), with and without box
        regression, image by image in split order as the iterator is read; what is loaded once (a
        network) is best loaded by the call, so that the first image's time does not hold it. A network
        run here computes in ``precision``."""

    @abstractmethod
    def training_seconds(self, run: RunLayout, compressed: bool = False) -> float | None:
        """Seconds of the method's own training stages in ``run`` (not the shared proposals and
        pre-training), None while any is missing."""

    def test_seconds(self, run: RunLayout, split: str, results: Mapping[str, Any]) -> float | None:
        """Seconds an image at test time (proposals excluded), from an evaluation's ``results``."""
        return results.get("seconds_per_image")


class CachedFeatureMethod(Method[FinetuneT], Generic[FinetuneT, ExtractT]):
    """R-CNN and SPP-net: region features cached by ``extract-features``, linear SVMs (``train-svm``) and
    box regressors (``train-bbox``) fitted on them; on a split, detection reads the cache. ``ExtractT``
    is its feature-extraction options."""

    region_feature: ClassVar[str]
    """The feature the box regressors read: the last pooled conv features before fc6."""
    extract_options_type: ClassVar[type]
    """Its feature-extraction options (``ExtractT``)."""
    finetunes_on_features: ClassVar[bool] = False
    """Whether fine-tuning reads the training split's feature cache (SPP-net's fc layers on cached
    pyramids), so the cache is made before fine-tuning and completed after it."""
    test_options = DetectOptions()
    display_threshold = 0.0  # the SVM margin

    def extract_options(self, given: Mapping[str, Any]) -> ExtractT:
        """The feature-extraction options with the ``given`` command-line values, the defaults otherwise."""
        stage = f"{self.label} feature extraction"
        return options_from(self.extract_options_type, given, stage, self.option_hints)

    @abstractmethod
    def extract_features(
        self, dataset: Dataset, run: RunLayout, options: ExtractT, progress: Progress = SILENT
    ) -> ExtractSummary:
        """Cache the features of every region of the split: ``RUN/<name>/features/<split>.h5``."""

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
        compressed: bool = False,
        precision: str = "fp32",
    ) -> ImageDetector:
        self.check_compressed(compressed)
        files = self.files(run)
        svm = load_svms(files)
        bbox = load_bbox(files, svm.classes)
        extractor = self.region_features(run, svm.classes, device, precision)

        def find(image: np.ndarray, boxes: np.ndarray) -> ImageDetections:
            features = {k: v.numpy() for k, v in extractor(image, boxes).items()}
            plain, moved = detect_from_scores(
                boxes,
                svm.scores(features[svm.feature]),
                image.shape[:2],
                options,
                _regressor(bbox, features[bbox.feature] if bbox else None),
            )
            return moved if moved is not None else plain

        return ImageDetector(svm.classes, find)

    def detector_inputs(self, run: RunLayout, *, compressed: bool = False) -> list[Path]:
        files = self.files(run)
        return [files.finetune.model, files.svm, *([files.bbox] if files.bbox.exists() else [])]

    def test_inputs(self, run: RunLayout, split: str, *, compressed: bool = False) -> list[Path]:
        files = self.files(run)
        return [files.features(split), files.svm, *([files.bbox] if files.bbox.exists() else [])]

    def detect_split(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: DetectOptions,
        *,
        compressed: bool = False,
        device: torch.device,
        precision: str = "fp32",
    ) -> Iterator[ImageResult]:
        """The SVMs and regressors on the cached features (made at ``extract-features``'s precision:
        ``precision`` has nothing to run here)."""
        self.check_compressed(compressed)
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

    def training_seconds(self, run: RunLayout, compressed: bool = False) -> float | None:
        """Fine-tuning, the training split's features (SPP-net's include the pyramid pass fine-tuning
        read), the SVMs and the box regressors; None for a compressed model, which these methods lack."""
        files = self.files(run)
        finetune = read_manifest(files.finetune.model)
        if finetune is None or compressed:
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
