"""How good a split's proposals are: the share of its objects they cover, against IoU and the number of
proposals an image (Faster R-CNN, Ren et al. 2015, figure 2: recall at IoU 0.5 to 0.95 with the top 300,
1,000 and 2,000 proposals of selective search, EdgeBoxes and the RPN). Proposals are taken in their
proposer's order (selective search's ranking, the RPN's objectness), so the top N are a prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.core.geometry import box_iou
from stages.datasets.records import Dataset

RECALL_IOUS: tuple[float, ...] = tuple(round(0.5 + 0.05 * step, 2) for step in range(10))
"""The IoU thresholds of the paper's figure (and COCO's average recall): 0.5, 0.55, ..., 0.95."""

PROPOSAL_COUNTS: tuple[int, ...] = (300, 1000, 2000)
"""The proposals an image of the paper's figure: the RPN's test count, and selective search's usual."""

ALL = "all"
"""The key of the recall with every proposal an image."""


def best_overlaps(
    dataset: Dataset, boxes: Mapping[str, np.ndarray], counts: Sequence[int | None]
) -> np.ndarray:
    """(len(counts), M): each of the split's M non-difficult objects' best IoU with the first ``count``
    proposals of its image (None: all of them); images without proposals in ``boxes`` are left out."""
    rows: list[np.ndarray] = []
    for record in dataset.images:
        if record.image_id not in boxes:
            continue
        overlaps = box_iou(record.boxes[~record.difficult], boxes[record.image_id])  # (objects, proposals)
        rows.append(
            np.stack([overlaps[:, :count].max(axis=1, initial=0.0) for count in counts])
            if len(overlaps)
            else np.zeros((len(counts), 0))
        )
    return np.concatenate(rows, axis=1) if rows else np.zeros((len(counts), 0))


@dataclass(frozen=True)
class RecallCurves:
    """Recall of a split's non-difficult objects at each IoU of ``ious``, with the top N proposals an
    image for each N of the paper's counts and with all of them (``recall["300"]``, ..., ``recall["all"]``);
    ``boxes_per_image``: the proposals an image there were; ``objects``: how many objects were counted."""

    ious: tuple[float, ...]
    recall: Mapping[str, tuple[float, ...]]
    boxes_per_image: float
    objects: int

    def at(self, iou: float, count: str = ALL) -> float:
        """Recall at IoU ``iou`` (one of ``ious``) with ``count`` proposals an image."""
        return self.recall[count][self.ious.index(iou)]

    def average(self, count: str = ALL) -> float:
        """Average recall over the IoUs 0.5 to 0.95 (Hosang et al. 2016; COCO's AR): one number that
        rewards proposals that fit the objects tightly, which predicts a detector's mAP best."""
        return float(np.mean(self.recall[count]))

    def to_json(self) -> dict[str, Any]:
        return {
            "ious": list(self.ious),
            "recall": {count: [round(value, 6) for value in values] for count, values in self.recall.items()},
            "boxes_per_image": round(self.boxes_per_image, 1),
            "objects": self.objects,
        }

    @classmethod
    def from_json(cls, content: Mapping[str, Any]) -> RecallCurves:
        return cls(
            tuple(content["ious"]),
            {count: tuple(values) for count, values in content["recall"].items()},
            float(content["boxes_per_image"]),
            int(content["objects"]),
        )


def recall_curves(
    dataset: Dataset, boxes: Mapping[str, np.ndarray], counts: Sequence[int] = PROPOSAL_COUNTS
) -> RecallCurves | None:
    """The recall curves of ``boxes`` (image id -> (N, 4) in their proposer's order) on ``dataset``'s
    objects; None when the split has no non-difficult object (or no annotations)."""
    best = best_overlaps(dataset, boxes, [*counts, None])
    if best.shape[1] == 0:
        return None
    thresholds = np.asarray(RECALL_IOUS)[:, None]
    recall = {
        key: tuple(float(value) for value in (overlaps[None] >= thresholds).mean(axis=1))
        for key, overlaps in zip([*map(str, counts), ALL], best, strict=True)
    }
    per_image = float(np.mean([len(boxes[r.image_id]) for r in dataset.images if r.image_id in boxes]))
    return RecallCurves(RECALL_IOUS, recall, per_image, best.shape[1])
