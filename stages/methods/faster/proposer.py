"""A trained Faster R-CNN's region proposal network as the proposals of any method (Ren et al., NIPS 2015,
section 4.1, RPN proposals into Fast R-CNN): ``rcnn propose --proposer rpn --model
RUN/faster/finetune/model.pt`` writes a split's proposals file as selective search would, recorded with
source ``rpn``, so that R-CNN, SPP-net and Fast R-CNN train and test on learned proposals.

The network runs at the test scale it was trained for and keeps ``boxes`` proposals an image after its
NMS. It proposes objects of any class: an RPN trained on other classes, or on another backbone (it brings
its own conv layers), still proposes boxes for this split.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from stages.core.errors import UserError
from stages.core.geometry import clip_boxes
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset, ImageRecord
from stages.methods.faster.detector import FasterDetector, ProposalLayer
from stages.methods.faster.network import load_faster
from stages.networks.inputs import read_image
from stages.proposals.propose import LOW_RECALL, ProposalSummary, Proposed, propose_with
from stages.proposals.sources import Proposer
from stages.runs.devices import pick_device
from stages.runs.layout import RunLayout, describe_input
from stages.runs.processes import Processes

TRAINED_BY = "rcnn finetune --method faster"


@dataclass(frozen=True)
class RpnProposer(Proposer):
    """The region proposal network of the Faster R-CNN model file ``model``, keeping ``boxes`` proposals an
    image, on ``device``."""

    model: Path
    boxes: int = 2000
    device: str = "auto"
    source: ClassVar[str] = "rpn"

    def __post_init__(self) -> None:
        if self.boxes < 1:
            raise UserError("--max-boxes must be at least 1")

    def detector(self, device: torch.device) -> FasterDetector:
        """The model's network, its proposal layer keeping ``boxes`` an image."""
        trained = load_faster(Path(self.model), TRAINED_BY)
        meta = trained.meta
        layer = ProposalLayer.of(meta, self.boxes)
        return FasterDetector(trained.module, meta["test_scale"], meta["max_size"], layer, device)

    def propose_split(
        self, dataset: Dataset, run: RunLayout, *, skip_bad: bool = False, progress: Progress = SILENT
    ) -> ProposalSummary:
        def make(records: list[ImageRecord], procs: Processes) -> tuple[str, Iterator[Proposed]]:
            detector = self.detector(procs.device)
            found = _proposed(detector, [(r.image_id, r.path) for r in records])
            return f"region proposal network ({procs.device.type})", found

        def advice(recall: float, per_image: float) -> str:
            return (
                f"the RPN's proposals of split {dataset.split!r} find {recall:.1%} of its objects at IoU 0.5 "
                f"(below {LOW_RECALL:.0%}): train it with anchors of its objects' sizes (--anchor-sizes), at "
                f"a larger scale, or keep more boxes (--max-boxes)"
            )

        return propose_with(
            dataset,
            run,
            make,
            source=self.source,
            settings=self.settings(),
            advice=advice,
            device=self.device,
            skip_bad=skip_bad,
            progress=progress,
        )

    def propose_images(self, images: Sequence[tuple[str, Path]], workers: int) -> Iterator[Proposed]:
        return _proposed(self.detector(pick_device(self.device)), images)

    def settings(self) -> Mapping[str, Any]:
        """The model file (path, size, time: retrained, it proposes anew) and the boxes kept."""
        model = Path(self.model)
        described = describe_input(model) if model.is_file() else {"path": str(model)}
        return {f"model_{k}" if k != "path" else "model": v for k, v in described.items()} | {
            "max_boxes": self.boxes
        }


def _proposed(detector: FasterDetector, images: Sequence[tuple[str, Path]]) -> Iterator[Proposed]:
    for image_id, path in images:
        try:
            image = read_image(Path(path))
        except UserError as exc:
            yield image_id, None, str(exc)
            continue
        boxes, _ = detector.proposals(*detector.conv5(image))
        yield image_id, clip_boxes(boxes.cpu().numpy(), *image.shape[:2]), None
