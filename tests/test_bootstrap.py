"""Bootstrap intervals of AP and mAP over the test images: a reweighted draw scores as the resampled split
itself would (checked against ``evaluate`` on a split built with the drawn images repeated), and the
intervals are seeded, bracket the split's own figure and leave out what has no positives."""

from pathlib import Path

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.datasets.records import Dataset, ImageRecord
from stages.detections.files import Detections
from stages.evaluation.bootstrap import bootstrap_intervals
from stages.evaluation.metrics import average_precision, class_matches, evaluate

CLASSES = ("aaa", "bbb", "ccc")


def random_split(seed: int, images: int = 12) -> tuple[Dataset, Detections]:
    """A split of ``images`` with 0 to 4 objects each (some difficult), and detections near some of the
    objects and elsewhere, with ties left out (scores drawn at random)."""
    rng = np.random.default_rng(seed)
    records, rows = [], []
    for index in range(images):
        count = int(rng.integers(0, 5))
        corners = rng.uniform(0, 80, (count, 2))
        boxes = np.hstack([corners, corners + rng.uniform(10, 30, (count, 2))]).astype(np.float32)
        labels = rng.integers(1, len(CLASSES) + 1, count)
        difficult = rng.random(count) < 0.15
        image_id = f"im{index}"
        records.append(ImageRecord(image_id, Path(f"{image_id}.jpg"), 120, 120, boxes, labels, difficult))
        for box, label in zip(boxes, labels, strict=True):
            for _ in range(int(rng.integers(0, 3))):  # hits, duplicates and misplaced boxes
                rows.append((image_id, CLASSES[label - 1], box + rng.normal(0, 4, 4)))
        for _ in range(int(rng.integers(0, 3))):  # background
            corner = rng.uniform(0, 90, 2)
            rows.append((image_id, CLASSES[int(rng.integers(0, 3))], np.r_[corner, corner + 15]))
    dataset = Dataset(Path("split"), "test", CLASSES, tuple(records), annotated=True)
    found = Detections(
        np.array([r[0] for r in rows], dtype=object),
        np.array([r[1] for r in rows], dtype=object),
        rng.permutation(len(rows)).astype(np.float64) / len(rows),
        np.array([r[2] for r in rows], dtype=np.float32).reshape(-1, 4),
    )
    return dataset, found


def repeated(dataset: Dataset, found: Detections, counts: np.ndarray) -> tuple[Dataset, Detections]:
    """The slow, obvious resample: every image ``counts`` times under new ids, with its detections."""
    records, ids, rows = [], [], []
    for record, count in zip(dataset.images, counts, strict=True):
        mine = np.flatnonzero(found.image_ids == record.image_id)
        for copy in range(count):
            image_id = f"{record.image_id}#{copy}"
            records.append(
                ImageRecord(image_id, record.path, 120, 120, record.boxes, record.labels, record.difficult)
            )
            ids += [image_id] * len(mine)
            rows += mine.tolist()
    taken = np.array(rows, dtype=np.int64)
    drawn = Detections(
        np.array(ids, dtype=object), found.classes[taken], found.scores[taken], found.boxes[taken]
    )
    return Dataset(dataset.root, dataset.split, dataset.classes, tuple(records), annotated=True), drawn


@pytest.mark.parametrize("metric", ["voc07", "voc10"])
@pytest.mark.parametrize("seed", range(4))
def test_a_reweighted_draw_scores_as_the_repeated_split(seed, metric):
    dataset, found = random_split(seed)
    matches = class_matches(dataset, found)
    counts = np.random.default_rng(100 + seed).multinomial(len(dataset.images), np.full(12, 1 / 12))
    reference = evaluate(*repeated(dataset, found, counts), metric)
    for name, match, expected in zip(CLASSES, matches, reference.classes, strict=True):
        if counts @ match.positives == 0:
            assert np.isnan(expected.ap), name
            continue
        assert average_precision(*match.curve(counts), metric) == pytest.approx(expected.ap, abs=1e-12), name


@pytest.mark.parametrize("metric", ["voc07", "voc10"])
def test_a_stack_of_draws_scores_as_each_draw_alone(metric):
    dataset, found = random_split(11, images=30)
    counts = np.random.default_rng(0).multinomial(30, np.full(30, 1 / 30), size=50)
    for match in class_matches(dataset, found):
        scored = counts[counts @ match.positives > 0]
        stacked = average_precision(*match.curve(scored), metric)
        alone = [average_precision(*match.curve(weights), metric) for weights in scored]
        np.testing.assert_allclose(stacked, alone, rtol=0, atol=1e-12)


def test_one_draw_of_every_image_once_is_the_split_itself():
    dataset, found = random_split(7)
    for match, result in zip(class_matches(dataset, found), evaluate(dataset, found).classes, strict=True):
        recall, precision = match.curve(np.ones(len(dataset.images)))
        np.testing.assert_array_equal(recall, result.recall)
        np.testing.assert_array_equal(precision, result.precision)


def test_intervals_are_seeded_and_bracket_the_split_s_figures():
    dataset, found = random_split(3, images=40)
    split = evaluate(dataset, found)
    first = bootstrap_intervals(split, samples=300, seed=1)
    assert first is not None and first == bootstrap_intervals(split, samples=300, seed=1)
    assert first != bootstrap_intervals(split, samples=300, seed=2)
    assert first.map[0] < split.map < first.map[1]
    for result in split.classes:
        low, high = first.ap[result.name]
        assert low <= result.ap <= high and high - low > 0.01, result.name
    as_json = first.to_json()
    assert as_json["map_ci95"] == [round(first.map[0], 6), round(first.map[1], 6)]
    assert as_json["bootstrap"] == {"samples": 300, "seed": 1, "over": "test images"}


def test_a_class_without_positives_has_no_interval_and_untrained_ones_leave_the_map():
    dataset, found = random_split(5, images=20)
    keep = np.array([name != "ccc" for name in found.classes])
    records = tuple(
        ImageRecord(r.image_id, r.path, r.height, r.width, r.boxes[r.labels != 3], r.labels[r.labels != 3],
                    r.difficult[r.labels != 3])
        for r in dataset.images
    )  # fmt: skip
    without = Dataset(dataset.root, "test", CLASSES, records, annotated=True)
    cut = Detections(found.image_ids[keep], found.classes[keep], found.scores[keep], found.boxes[keep])
    found_intervals = bootstrap_intervals(evaluate(without, cut), samples=100)
    assert found_intervals is not None and found_intervals.ap["ccc"] is None
    assert found_intervals.to_json()["ap_ci95"]["ccc"] is None
    alone = bootstrap_intervals(evaluate(dataset, found, untrained=("aaa", "bbb")), samples=100)
    assert alone is not None and alone.map == alone.ap["ccc"]  # the mean of one class is that class


def test_coco_s_metric_has_none_and_a_draw_needs_a_sample():
    dataset, found = random_split(0)
    assert bootstrap_intervals(evaluate(dataset, found, "coco")) is None  # pycocotools' averages
    with pytest.raises(UserError, match="at least one sample"):
        bootstrap_intervals(evaluate(dataset, found), samples=0)
