"""Bootstrap intervals of AP and mAP over the test images: a reweighted draw scores as the resampled split
itself would (checked against ``evaluate``, VOC's or pycocotools', on a split built with the drawn images
repeated; under COCO's metric, every image once is pycocotools' own figure), and the intervals are seeded,
bracket the split's own figure and leave out what has no positives or was not trained. The paired
difference of two evaluations' mAPs scores both on the same draws, as the two resampled splits would."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.datasets.formats import load_dataset
from stages.datasets.records import Dataset, ImageRecord
from stages.detections.files import Detections
from stages.evaluation.bootstrap import bootstrap_intervals, paired_difference
from stages.evaluation.metrics import Evaluation, average_precision, class_matches, evaluate
from tests import test_coco_metric
from tests.helpers import detections

CLASSES = ("aaa", "bbb", "ccc")
METRICS = ("voc07", "voc10", "coco")
coco = test_coco_metric.coco  # the COCO split of test_coco_metric, as a fixture here too


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
    scores = rng.permutation(len(rows)) / len(rows)  # no ties
    found = detections(
        [(image, name, score, box) for (image, name, box), score in zip(rows, scores, strict=True)]
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


def draw(matches, weights: np.ndarray, metric: str):
    """One class's AP from the matches its evaluation kept, its images counted ``weights`` (N,) times;
    with a stack of weights (B, N), (B,)."""
    if metric == "coco":
        return matches.average_precision(weights)
    return average_precision(*matches.curve(weights), metric)


def drawn_aps(split: Evaluation, weights: np.ndarray) -> np.ndarray:
    """Each class's AP (C,) from the matches ``split`` kept, its images counted ``weights`` (N,) times
    (NaN without positives or matches)."""
    return np.array(
        [
            np.nan
            if c.matches is None or weights @ c.matches.positives == 0
            else draw(c.matches, weights, split.metric)
            for c in split.classes
        ],
        dtype=np.float64,
    )


def trained_mean(split: Evaluation, aps: np.ndarray) -> float:
    """The mean of ``aps`` (C,) over the trained classes with positives, as ``Evaluation.map``."""
    return float(
        np.nanmean([ap for c, ap in zip(split.classes, aps, strict=True) if c.name not in split.untrained])
    )


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", range(4))
def test_a_reweighted_draw_scores_as_the_repeated_split(seed, metric):
    dataset, found = random_split(seed)
    counts = np.random.default_rng(100 + seed).multinomial(len(dataset.images), np.full(12, 1 / 12))
    split, reference = evaluate(dataset, found, metric), evaluate(*repeated(dataset, found, counts), metric)
    aps = drawn_aps(split, counts)
    np.testing.assert_allclose(aps, [c.ap for c in reference.classes], rtol=0, atol=1e-12)
    assert trained_mean(split, aps) == pytest.approx(reference.map, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_under_coco_an_image_counted_twice_scores_as_pycocotools_with_the_image_twice(seed):
    dataset, found = random_split(seed)
    split = evaluate(dataset, found, "coco")
    for image in (0, 5, 11):
        counts = np.ones(len(dataset.images), dtype=np.int64)
        counts[image] = 2
        reference = evaluate(*repeated(dataset, found, counts), "coco")
        aps = drawn_aps(split, counts)
        np.testing.assert_allclose(aps, [c.ap for c in reference.classes], rtol=0, atol=1e-12)
        assert trained_mean(split, aps) == pytest.approx(reference.map, abs=1e-12)


def busy(found: Detections, seed: int) -> Detections:
    """``found`` with its scores rounded to a tenth (ties within and across images, which COCOeval's
    stable sort orders) and 150 more detections of one class on the first image (past the 100 an image
    and class it keeps)."""
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 90, (150, 2))
    return Detections(
        np.concatenate([found.image_ids, np.full(150, "im0", dtype=object)]),
        np.concatenate([found.classes, np.full(150, CLASSES[seed % 3], dtype=object)]),
        np.round(np.concatenate([found.scores, rng.random(150)]), 1),
        np.concatenate([found.boxes, np.hstack([corners, corners + 20]).astype(np.float32)]),
    )


@pytest.mark.parametrize("seed", range(4))
def test_under_coco_every_image_once_is_pycocotools_itself(seed, coco):
    root, rows = coco
    on_coco = load_dataset(root, "val")
    dataset, found = random_split(seed, images=20)
    for split in (
        evaluate(on_coco, test_coco_metric.as_detections(rows, on_coco)),
        evaluate(dataset, found, "coco"),
        evaluate(dataset, busy(found, seed), "coco"),
        evaluate(dataset, busy(found, seed), "coco", untrained=("bbb",)),
    ):
        aps = drawn_aps(split, np.ones(len(split.classes[0].matches.positives)))
        np.testing.assert_allclose(aps, [c.ap for c in split.classes], rtol=0, atol=1e-12)
        assert trained_mean(split, aps) == pytest.approx(split.map, abs=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_a_stack_of_draws_scores_as_each_draw_alone(metric):
    dataset, found = random_split(11, images=30)
    counts = np.random.default_rng(0).multinomial(30, np.full(30, 1 / 30), size=50)
    for result in evaluate(dataset, found, metric).classes:
        scored = counts[counts @ result.matches.positives > 0]
        alone = [draw(result.matches, weights, metric) for weights in scored]
        np.testing.assert_allclose(draw(result.matches, scored, metric), alone, rtol=0, atol=1e-12)


def test_one_draw_of_every_image_once_is_the_split_itself():
    dataset, found = random_split(7)
    for match, result in zip(class_matches(dataset, found), evaluate(dataset, found).classes, strict=True):
        recall, precision = match.curve(np.ones(len(dataset.images)))
        np.testing.assert_array_equal(recall, result.recall)
        np.testing.assert_array_equal(precision, result.precision)


@pytest.mark.parametrize("metric", ["voc07", "coco"])
def test_intervals_are_seeded_and_bracket_the_split_s_figures(metric):
    dataset, found = random_split(3, images=40)
    split = evaluate(dataset, found, metric)
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


@pytest.mark.parametrize("metric", ["voc07", "coco"])
def test_a_class_without_positives_has_no_interval_and_untrained_ones_leave_the_map(metric):
    dataset, found = random_split(5, images=20)
    keep = np.array([name != "ccc" for name in found.classes])
    records = tuple(
        ImageRecord(r.image_id, r.path, r.height, r.width, r.boxes[r.labels != 3], r.labels[r.labels != 3],
                    r.difficult[r.labels != 3])
        for r in dataset.images
    )  # fmt: skip
    without = Dataset(dataset.root, "test", CLASSES, records, annotated=True)
    cut = Detections(found.image_ids[keep], found.classes[keep], found.scores[keep], found.boxes[keep])
    found_intervals = bootstrap_intervals(evaluate(without, cut, metric), samples=100)
    assert found_intervals is not None and found_intervals.ap["ccc"] is None
    assert found_intervals.to_json()["ap_ci95"]["ccc"] is None
    every = bootstrap_intervals(evaluate(dataset, found, metric), samples=100)
    alone = bootstrap_intervals(evaluate(dataset, found, metric, untrained=("aaa", "bbb")), samples=100)
    assert every is not None and alone is not None
    assert alone.map == alone.ap["ccc"] == every.ap["ccc"]  # the mean of one class is that class, as it was
    if metric == "coco":  # pycocotools scores the trained classes only: no AP, no interval
        assert alone.ap["aaa"] is None and alone.ap["bbb"] is None
    else:
        assert alone.ap["aaa"] == every.ap["aaa"] and alone.ap["bbb"] == every.ap["bbb"]


def test_coco_s_metric_without_detections_has_none_and_a_draw_needs_a_sample():
    dataset, found = random_split(0)
    nothing = Detections(np.zeros(0, object), np.zeros(0, object), np.zeros(0), np.zeros((0, 4), np.float32))
    assert bootstrap_intervals(evaluate(dataset, nothing, "coco")) is None  # no matches to draw from
    with pytest.raises(UserError, match="at least one sample"):
        bootstrap_intervals(evaluate(dataset, found), samples=0)


def worse(found: Detections, seed: int) -> Detections:
    """``found`` with its scores shuffled among its detections and about half of them removed."""
    rng = np.random.default_rng(seed)
    keep = rng.random(len(found.scores)) < 0.5
    scores = rng.permutation(found.scores)
    return Detections(found.image_ids[keep], found.classes[keep], scores[keep], found.boxes[keep])


def with_objects(dataset: Dataset, found: Detections) -> Detections:
    """``found`` and, above all of them, a detection on every object of ``dataset``: a far better detector."""
    rows = [
        (r.image_id, CLASSES[label - 1], 2.0 + rank / 1000, box)
        for r in dataset.images
        for rank, (box, label) in enumerate(zip(r.boxes, r.labels, strict=True))
    ]
    extra = detections(rows)
    return Detections(
        np.concatenate([found.image_ids, extra.image_ids]),
        np.concatenate([found.classes, extra.classes]),
        np.concatenate([found.scores, extra.scores]),
        np.concatenate([found.boxes, extra.boxes]),
    )


def objects_on_two_images(dataset: Dataset) -> Dataset:
    """``dataset`` with the objects of all but its first two images removed: draws without either have
    no positives, and no mAP."""
    records = tuple(
        r if i < 2 else replace(r, boxes=r.boxes[:0], labels=r.labels[:0], difficult=r.difficult[:0])
        for i, r in enumerate(dataset.images)
    )
    return Dataset(dataset.root, dataset.split, dataset.classes, records, annotated=True)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("metric", METRICS)
def test_the_paired_difference_is_that_of_the_two_repeated_splits(metric, sparse):
    dataset, found = random_split(4)
    dataset = objects_on_two_images(dataset) if sparse else dataset
    other = worse(found, 4)
    samples, seed = 40, 3
    counts = np.random.default_rng(seed).multinomial(12, np.full(12, 1 / 12), size=samples)
    differences = np.array(
        [
            evaluate(*repeated(dataset, found, draw), metric).map
            - evaluate(*repeated(dataset, other, draw), metric).map
            for draw in counts
        ]
    )
    kept = differences[np.isfinite(differences)]
    assert sparse == (len(kept) < samples) and len(kept) > samples / 2  # draws without an mAP left out
    first, second = evaluate(dataset, found, metric), evaluate(dataset, other, metric)
    paired = paired_difference(first, second, samples=samples, seed=seed)
    assert paired is not None and (paired.samples, paired.seed) == (samples, seed)
    assert paired.difference == first.map - second.map
    np.testing.assert_allclose(paired.ci95, np.percentile(kept, [2.5, 97.5]), rtol=0, atol=1e-12)
    share = min(np.mean(kept <= 1e-12), np.mean(kept >= -1e-12))  # no draw within 1e-12 of 0 but on it
    assert paired.p_value == pytest.approx(min(1.0, 2 * share), abs=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_an_evaluation_against_itself_differs_by_nothing(metric):
    dataset, found = random_split(2, images=30)
    split = evaluate(dataset, found, metric)
    for other in (split, evaluate(dataset, found, metric)):
        paired = paired_difference(split, other, samples=200, seed=5)
        assert paired is not None
        assert (paired.difference, paired.ci95, paired.p_value) == (0.0, (0.0, 0.0), 1.0)
        assert not paired.beyond_noise


@pytest.mark.parametrize("metric", METRICS)
def test_a_far_better_detector_is_beyond_noise_with_the_sign_right(metric):
    dataset, found = random_split(6, images=40)
    better = evaluate(dataset, with_objects(dataset, found), metric)
    poorer = evaluate(dataset, worse(found, 6), metric)
    ahead = paired_difference(better, poorer, samples=300, seed=1)
    behind = paired_difference(poorer, better, samples=300, seed=1)
    assert ahead is not None and behind is not None
    assert ahead.difference == better.map - poorer.map > 0.1
    assert 0 < ahead.ci95[0] < ahead.difference < ahead.ci95[1] and ahead.beyond_noise
    assert behind.difference == -ahead.difference and behind.ci95[1] < 0 and behind.beyond_noise
    assert ahead.p_value == behind.p_value == 0.0
    assert ahead == paired_difference(better, poorer, samples=300, seed=1)  # seeded


def test_the_paired_difference_needs_two_evaluations_of_one_split():
    dataset, found = random_split(0)
    split = evaluate(dataset, found)
    with pytest.raises(UserError, match="12 and 13 images"):
        paired_difference(split, evaluate(*random_split(0, images=13)))
    with pytest.raises(UserError, match="metrics differ"):
        paired_difference(split, evaluate(dataset, found, "voc10"))
    renamed = replace(split, classes=tuple(replace(c, name=c.name.upper()) for c in split.classes))
    with pytest.raises(UserError, match="classes differ"):
        paired_difference(split, renamed)
    with pytest.raises(UserError, match="at least one sample"):
        paired_difference(split, split, samples=0)
    nothing = Detections(np.zeros(0, object), np.zeros(0, object), np.zeros(0), np.zeros((0, 4), np.float32))
    on_coco = evaluate(dataset, found, "coco")
    assert paired_difference(on_coco, evaluate(dataset, nothing, "coco")) is None  # no matches to draw from
    assert paired_difference(evaluate(dataset, nothing, "coco"), on_coco) is None
