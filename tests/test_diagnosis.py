"""Error diagnosis (Hoiem et al. 2012; COCO's ``analyze``): each false positive type on a hand-made scene,
the typing and counts against a slow literal reference on random splits, the PR breakdown's levels
against ``evaluate`` on the detections with those errors removed, COCO's size rule, AP by truncation, and
the choice of similar classes."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.datasets.records import Dataset, ImageRecord
from stages.datasets.voc import VOC_CLASSES
from stages.detections.files import Detections
from stages.evaluation.diagnosis import (
    MULTIPLES,
    SIZES,
    TRUNCATION,
    SimilarClasses,
    diagnose,
    similar_classes,
)
from stages.evaluation.diagnosis_plot import plot_diagnosis
from stages.evaluation.metrics import evaluate
from tests.helpers import detections

SCENE_CLASSES = ("cat", "dog", "car")
PETS = SimilarClasses((("cat", "dog"),), "config")


def split(classes: tuple[str, ...], images: dict[str, list[tuple]], size: int = 400) -> Dataset:
    """images: image id -> objects (class, [x1, y1, x2, y2], difficult) in toolkit pixels."""
    records = []
    for image_id, objects in images.items():
        boxes = np.array([box for _, box, _ in objects], np.float32).reshape(-1, 4)
        labels = np.array([classes.index(name) + 1 for name, _, _ in objects], np.int64)
        difficult = np.array([hard for _, _, hard in objects], bool)
        records.append(ImageRecord(image_id, Path(f"{image_id}.jpg"), size, size, boxes, labels, difficult))
    return Dataset(Path("split"), "test", classes, tuple(records), annotated=True)


@pytest.fixture
def scene() -> tuple[Dataset, Detections]:
    """Image a: a cat, a dog, a car and a difficult cat; image b: five cats nobody finds. The cat's
    detections make one of each outcome; the dog's first sits on the cat, the car's on the cat too."""
    dataset = split(
        SCENE_CLASSES,
        {
            "a": [
                ("cat", [0, 0, 40, 40], False),
                ("dog", [100, 0, 140, 40], False),
                ("car", [0, 100, 40, 140], False),
                ("cat", [100, 100, 140, 140], True),
            ],
            "b": [("cat", [40 * k, 0, 40 * k + 20, 20], False) for k in range(5)],
        },
    )
    found = detections(
        [
            ("a", "cat", 0.9, [0, 0, 40, 40]),  # hit
            ("a", "cat", 0.85, [0, 0, 40, 40]),  # duplicate: loc
            ("a", "cat", 0.8, [0, 0, 40, 16]),  # IoU 0.4 with the cat: loc
            ("a", "cat", 0.75, [100, 0, 140, 40]),  # on the dog: sim
            ("a", "cat", 0.7, [0, 100, 40, 140]),  # on the car: oth
            ("a", "cat", 0.65, [200, 200, 240, 240]),  # nothing there: bg
            ("a", "cat", 0.6, [100, 100, 140, 140]),  # on the difficult cat: neither
            ("a", "cat", 0.55, [100, 100, 140, 116]),  # IoU 0.4 with the difficult cat: loc
            ("a", "dog", 0.9, [0, 0, 40, 40]),  # on the cat: sim
            ("a", "dog", 0.8, [100, 0, 140, 40]),  # hit
            ("a", "car", 0.9, [0, 0, 40, 40]),  # on the cat: oth
        ]
    )
    return dataset, found


def test_each_false_positive_type_on_a_hand_made_scene(scene):
    found = diagnose(*scene, "voc07", PETS)
    cat, dog, car = found.classes
    assert cat.objects == 6 and cat.outcomes.tolist() == [-1, 0, 0, 1, 2, 3, 0]  # the difficult one left out
    assert cat.false_positives() == {"loc": 2, "sim": 1, "oth": 1, "bg": 1}  # the first six
    assert cat.false_positives(None) == {"loc": 3, "sim": 1, "oth": 1, "bg": 1}
    assert dog.false_positives() == {"loc": 0, "sim": 1, "oth": 0, "bg": 0}
    assert car.false_positives() == {"loc": 0, "sim": 0, "oth": 1, "bg": 0}
    assert found.false_positives == {"loc": 2, "sim": 2, "oth": 2, "bg": 1}
    growth = {point.multiple: point for point in found.growth}
    assert set(growth) == {*MULTIPLES, None}
    # the cat's first round(m x 6) detections: 1 (a hit), 2 (and a duplicate), 3, then 6
    assert growth[0.125].counts == {"loc": 0, "sim": 0, "oth": 0, "bg": 0}  # the dog's and car's: 0 of 1
    assert growth[0.25].counts == {"loc": 1, "sim": 0, "oth": 0, "bg": 0}
    assert growth[0.5].counts == {"loc": 2, "sim": 1, "oth": 1, "bg": 0}
    assert growth[None].total == 8 and growth[None].fractions["bg"] == 1 / 8


def test_a_similar_class_is_tried_before_any_other():
    """A dog's box on a car (IoU 1) that touches a cat (IoU 0.14): sim where cats and dogs are similar."""
    dataset = split(SCENE_CLASSES, {"a": [("cat", [0, 0, 40, 40], False), ("car", [30, 0, 70, 40], False)]})
    found = detections([("a", "dog", 0.9, [30, 0, 70, 40])])
    dog = diagnose(dataset, found, "voc07", PETS).classes[1]
    assert dog.false_positives(None) == {"loc": 0, "sim": 1, "oth": 0, "bg": 0}
    alone = diagnose(dataset, found, "voc07", SimilarClasses((), "none")).classes[1]
    assert alone.false_positives(None) == {"loc": 0, "sim": 0, "oth": 1, "bg": 0}


def test_untrained_classes_are_left_out_of_the_sums_and_means(scene):
    every = diagnose(*scene, "voc10", PETS)
    found = diagnose(*scene, "voc10", PETS, untrained=("cat", "elephant"))
    assert found.untrained == ("cat",)
    assert found.false_positives == {"loc": 0, "sim": 1, "oth": 1, "bg": 0}
    assert found.growth[-1].total == every.growth[-1].total - 6
    dog, car = every.classes[1:]
    assert found.breakdown["c50"] == pytest.approx((dog.breakdown["c50"] + car.breakdown["c50"]) / 2)
    assert found.breakdown["c50"] != pytest.approx(every.breakdown["c50"])
    assert found.to_json()["untrained_classes"] == ["cat"]
    # the mean PR curves at COCO's 101 recalls: the cat reaches recall 1/6 at precision 1 (the first 17
    # points), the dog recall 1 at precision 1/2, the car nothing
    np.testing.assert_allclose(every.curves["c50"], np.r_[np.full(17, 1.5 / 3), np.full(84, 0.5 / 3)])
    np.testing.assert_allclose(found.curves["c50"], 0.25)
    np.testing.assert_array_equal(found.curves["fn"], 1.0)


GROUPS = (("cat", "dog", "cow"), ("car", "bus", "cow"))  # the cow in both: a class may be in two groups
CLASSES = ("cat", "dog", "cow", "car", "bus", "tree")


def random_split(seed: int, images: int = 10) -> tuple[Dataset, Detections]:
    """Objects of every size, some difficult; detections near them under their class or another, and on
    the background; scores without ties."""
    rng = np.random.default_rng(seed)
    records, rows = [], []
    for index in range(images):
        count = int(rng.integers(0, 7))
        corners = rng.uniform(0, 200, (count, 2))
        boxes = np.hstack([corners, corners + rng.uniform(8, 130, (count, 2))]).astype(np.float32)
        labels = rng.integers(1, len(CLASSES) + 1, count)
        image_id = f"im{index}"
        records.append(
            ImageRecord(image_id, Path(f"{image_id}.jpg"), 400, 400, boxes, labels, rng.random(count) < 0.15)
        )
        for box, label in zip(boxes, labels, strict=True):
            for _ in range(int(rng.integers(0, 4))):  # hits, duplicates, poor boxes and confusions
                moved = (box + rng.normal(0, 0.3, 4) * np.tile(box[2:] - box[:2], 2)).reshape(2, 2)
                name = CLASSES[label - 1] if rng.random() < 0.6 else CLASSES[int(rng.integers(len(CLASSES)))]
                rows.append((image_id, name, np.r_[moved.min(axis=0), moved.max(axis=0) + 1]))
        for _ in range(int(rng.integers(0, 3))):  # on the background, mostly
            corner = rng.uniform(0, 350, 2)
            name = CLASSES[int(rng.integers(len(CLASSES)))]
            rows.append((image_id, name, np.r_[corner, corner + rng.uniform(5, 60, 2)]))
    dataset = Dataset(Path("split"), "test", CLASSES, tuple(records), annotated=True)
    scores = rng.permutation(len(rows)) / len(rows)  # no ties
    found = detections(
        [(image, name, score, box) for (image, name, box), score in zip(rows, scores, strict=True)]
    )
    return dataset, found


def with_difficult(dataset: Dataset, also) -> Dataset:
    """``dataset`` with the objects ``also(record)`` (K,) marks difficult too."""
    return replace(dataset, images=tuple(replace(r, difficult=r.difficult | also(r)) for r in dataset.images))


def iou(a, b) -> float:
    width, height = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_outcomes(dataset, found, name, groups, iou_threshold=0.5):
    """A slow, literal reading of the module's definitions: the class's detections best score first, as
    (index in ``found``, "hit", "ignored" or the false positive's type)."""
    label = dataset.classes.index(name) + 1
    similar = {dataset.classes.index(o) + 1 for g in groups if name in g for o in g} - {label}
    records = {r.image_id: r for r in dataset.images}
    mine = [i for i in range(len(found)) if found.classes[i] == name]
    taken, outcomes = set(), []
    for i in sorted(mine, key=lambda i: -found.scores[i]):
        record = records[found.image_ids[i]]
        box = [float(v) for v in found.boxes[i]]
        best, best_iou, touched = None, 0.0, set()
        for k in range(len(record.labels)):
            overlap = iou(box, [float(v) for v in record.boxes[k]])
            if record.labels[k] == label and (best is None or overlap > best_iou):
                best, best_iou = k, overlap
            if overlap >= 0.1:
                touched.add(
                    "loc" if record.labels[k] == label else "sim" if record.labels[k] in similar else "oth"
                )
        if best is not None and best_iou >= iou_threshold and record.difficult[best]:
            outcomes.append((i, "ignored"))
        elif best is not None and best_iou >= iou_threshold and (record.image_id, best) not in taken:
            taken.add((record.image_id, best))
            outcomes.append((i, "hit"))
        else:
            outcomes.append((i, next((kind for kind in ("loc", "sim", "oth") if kind in touched), "bg")))
    return outcomes


def reference_counts(outcomes, objects, multiple):
    counted = [kind for _, kind in outcomes if kind != "ignored"]
    top = counted if multiple is None else counted[: int(np.floor(multiple * objects + 0.5))]
    return {kind: top.count(kind) for kind in ("loc", "sim", "oth", "bg")}


@pytest.mark.parametrize("seed", range(4))
def test_typing_and_counts_match_the_reference(seed):
    dataset, found = random_split(seed)
    diagnosis = diagnose(dataset, found, "voc07", SimilarClasses(GROUPS, "config"))
    kinds = {kind for c in diagnosis.classes for kind in c.outcomes.tolist()}
    assert kinds == {-1, 0, 1, 2, 3}, "a random split with every outcome"
    totals = {multiple: dict.fromkeys(("loc", "sim", "oth", "bg"), 0) for multiple in (*MULTIPLES, None)}
    for result in diagnosis.classes:
        outcomes = reference_outcomes(dataset, found, result.name, GROUPS)
        objects = sum(
            int((~r.difficult[r.labels == CLASSES.index(result.name) + 1]).sum()) for r in dataset.images
        )
        assert result.objects == objects
        for multiple in (*MULTIPLES, None):
            expected = reference_counts(outcomes, objects, multiple)
            assert result.false_positives(multiple) == expected, (result.name, multiple)
            for kind, count in expected.items():
                totals[multiple][kind] += count
    assert {point.multiple: point.counts for point in diagnosis.growth} == totals
    assert diagnosis.false_positives == totals[1.0]


@pytest.mark.parametrize("metric", ["voc07", "voc10"])
@pytest.mark.parametrize("seed", range(3))
def test_the_breakdown_is_evaluate_s_ap_with_each_kind_of_error_removed(seed, metric):
    """C75, C50 and Loc are ``evaluate``'s AP at IoU 0.75, 0.5 and 0.1 (C50 to the digit); Sim, Oth and BG
    are Loc's on the detections less its false positives of those types; none is lower than the last."""
    dataset, found = random_split(seed)
    diagnosis = diagnose(dataset, found, metric, SimilarClasses(GROUPS, "config"))
    by_name = {c.name: c for c in diagnosis.classes}
    for level, threshold in (("c75", 0.75), ("c50", 0.5), ("loc", 0.1)):
        for result in evaluate(dataset, found, metric, threshold).classes:
            ap = by_name[result.name].breakdown[level]
            assert ap == result.ap or (np.isnan(ap) and np.isnan(result.ap)), (level, result.name)
    for level, removed in (("sim", {"sim"}), ("oth", {"sim", "oth"}), ("bg", {"loc", "sim", "oth", "bg"})):
        for name in CLASSES:
            outcomes = reference_outcomes(dataset, found, name, GROUPS, iou_threshold=0.1)
            dropped = [i for i, kind in outcomes if kind in removed]
            kept = np.setdiff1d(np.arange(len(found)), dropped)
            less = Detections(
                found.image_ids[kept], found.classes[kept], found.scores[kept], found.boxes[kept]
            )
            expected = evaluate(dataset, less, metric, 0.1).classes[CLASSES.index(name)].ap
            assert by_name[name].breakdown[level] == pytest.approx(expected, abs=1e-12, nan_ok=True), (
                level,
                name,
            )
    for result in diagnosis.classes:
        aps = [result.breakdown[level] for level in ("loc", "sim", "oth", "bg", "fn")]
        if result.objects:
            assert aps == sorted(aps), result.name  # removing false positives never lowers AP
        else:
            assert np.isnan(aps).all()


def size_of(box) -> str:
    area = (float(box[2]) - float(box[0])) * (float(box[3]) - float(box[1]))
    return "small" if area < 32**2 else "large" if area > 96**2 else "medium"


def test_ap_by_size_follows_coco_s_rule():
    """Per size, objects of the others are ignored, and a false positive counts only in its own box's size:
    the large false positive does not count against the small objects, nor the small one against the
    large."""
    dataset = split(
        ("box",),
        {
            "a": [
                ("box", [0, 0, 20, 20], False),  # small
                ("box", [100, 0, 150, 50], False),  # medium
                ("box", [0, 100, 120, 220], False),  # large
                ("box", [200, 200, 232, 232], False),  # 32 x 32: medium
            ]
        },
    )
    found = detections(
        [
            ("a", "box", 0.97, [300, 0, 320, 20]),  # small, on nothing
            ("a", "box", 0.96, [250, 250, 370, 370]),  # large, on nothing
            ("a", "box", 0.9, [0, 0, 20, 20]),
            ("a", "box", 0.8, [0, 100, 120, 220]),
        ]
    )
    diagnosis = diagnose(dataset, found, "voc07", SimilarClasses((), "none"))
    assert diagnosis.objects_by_size == {"small": 1, "medium": 2, "large": 1}
    # small: [miss, hit] -> precision 0.5 at recall 1; medium: nothing counted; large: as small
    assert diagnosis.ap_by_size == {"small": 0.5, "medium": 0.0, "large": 0.5}
    assert diagnosis.to_json()["ap_by_size"]["small"] == {"ap": 0.5, "objects": 1}
    assert diagnosis.difficult_counted is None and "difficult_counted" not in diagnosis.to_json()


@pytest.mark.parametrize("seed", range(3))
def test_ap_by_size_and_with_difficult_counted_are_evaluate_s_on_the_split_so_marked(seed):
    """A size's AP is ``evaluate``'s with the other sizes' objects marked difficult and the other sizes'
    false positives removed; the AP with difficult objects counted is ``evaluate``'s with none marked."""
    dataset, found = random_split(seed)
    diagnosis = diagnose(dataset, found, "voc07", SimilarClasses(GROUPS, "config"))
    by_name = {c.name: c for c in diagnosis.classes}
    for size in SIZES:
        marked = with_difficult(
            dataset, lambda r, size=size: np.array([size_of(b) != size for b in r.boxes], bool)
        )
        dropped = [
            i
            for name in CLASSES
            for i, kind in reference_outcomes(marked, found, name, GROUPS)
            if kind not in ("hit", "ignored") and size_of(found.boxes[i]) != size
        ]
        kept = np.setdiff1d(np.arange(len(found)), dropped)
        less = Detections(found.image_ids[kept], found.classes[kept], found.scores[kept], found.boxes[kept])
        for result in evaluate(marked, less, "voc07").classes:
            assert by_name[result.name].by_size[size] == pytest.approx(result.ap, abs=1e-12, nan_ok=True)
    counted = replace(
        dataset, images=tuple(replace(r, difficult=np.zeros_like(r.difficult)) for r in dataset.images)
    )
    assert diagnosis.difficult_objects > 0
    for result in evaluate(counted, found, "voc07").classes:
        assert by_name[result.name].difficult_counted == pytest.approx(result.ap, abs=1e-12, nan_ok=True)


def marked_truncated(dataset: Dataset, truncated: dict[str, list[bool]]) -> Dataset:
    """``dataset`` with its images' objects marked truncated (image id -> (K,) flags)."""
    return replace(
        dataset,
        images=tuple(replace(r, truncated=np.array(truncated[r.image_id], bool)) for r in dataset.images),
    )


def test_ap_by_truncation_on_a_hand_made_split():
    """Per kind, objects of the other kind are ignored and every false positive counts: the false
    positive ranked first halves the truncated AP too; the difficult truncated object is no positive."""
    dataset = split(
        ("box",),
        {
            "a": [
                ("box", [0, 0, 40, 40], False),  # truncated
                ("box", [100, 0, 140, 40], False),
                ("box", [0, 100, 40, 140], False),  # missed
                ("box", [200, 200, 240, 240], True),  # truncated, difficult, missed
            ]
        },
    )
    dataset = marked_truncated(dataset, {"a": [True, False, False, True]})
    found = detections(
        [
            ("a", "box", 0.95, [300, 300, 340, 340]),  # on nothing
            ("a", "box", 0.9, [0, 0, 40, 40]),
            ("a", "box", 0.8, [100, 0, 140, 40]),
        ]
    )
    diagnosis = diagnose(dataset, found, "voc10", SimilarClasses((), "none"))
    # truncated: [miss, hit] of 1 -> 1/2; not truncated: [miss, (ignored), hit] of 2 -> 1/2 x 1/2
    assert diagnosis.ap_by_truncation == {"truncated": 0.5, "not_truncated": 0.25}
    assert diagnosis.objects_by_truncation == {"truncated": 1, "not_truncated": 2}
    assert diagnosis.breakdown["c50"] == pytest.approx(4 / 9)  # all: [miss, hit, hit] of 3
    assert diagnosis.to_json()["ap_by_truncation"] == {
        "truncated": {"ap": 0.5, "objects": 1},
        "not_truncated": {"ap": 0.25, "objects": 2},
    }
    unmarked = (
        replace(dataset, images=tuple(replace(r, truncated=None) for r in dataset.images)),
        marked_truncated(dataset, {"a": [False] * 4}),  # marked, but none is
    )
    for other in unmarked:
        plain = diagnose(other, found, "voc10", SimilarClasses((), "none"))
        assert plain.ap_by_truncation is None and plain.objects_by_truncation is None
        assert plain.classes[0].by_truncation is None and "ap_by_truncation" not in plain.to_json()


@pytest.mark.parametrize("seed", range(3))
def test_ap_by_truncation_is_evaluate_s_on_the_split_so_marked(seed):
    """A kind's AP is ``evaluate``'s with the other kind's objects marked difficult, every detection
    kept; its objects, the non-difficult ones of the kind."""
    dataset, found = random_split(seed)
    rng = np.random.default_rng(100 + seed)
    dataset = marked_truncated(dataset, {r.image_id: rng.random(len(r.labels)) < 0.4 for r in dataset.images})
    diagnosis = diagnose(dataset, found, "voc07", SimilarClasses(GROUPS, "config"))
    by_name = {c.name: c for c in diagnosis.classes}
    for kind in TRUNCATION:
        marked = with_difficult(dataset, lambda r, kind=kind: r.truncated != (kind == "truncated"))
        assert diagnosis.objects_by_truncation[kind] == sum(int((~r.difficult).sum()) for r in marked.images)
        aps = []
        for result in evaluate(marked, found, "voc07").classes:
            assert by_name[result.name].by_truncation[kind] == pytest.approx(
                result.ap, abs=1e-12, nan_ok=True
            )
            aps.append(result.ap)
        assert diagnosis.ap_by_truncation[kind] == pytest.approx(np.nanmean(aps), abs=1e-12)


def test_similar_classes_come_from_the_config_hoiem_or_the_supercategories():
    voc = split(VOC_CLASSES, {})
    hoiem = similar_classes(voc)
    assert hoiem.source == "hoiem"
    assert hoiem.of("dog") == {"bird", "cat", "cow", "horse", "person", "sheep"}  # Hoiem's: the person too
    assert hoiem.of("aeroplane") == {"bicycle", "bird", "boat", "bus", "car", "motorbike", "train"}
    assert hoiem.of("tvmonitor") == frozenset()
    coco = replace(
        split(("cat", "dog", "car", "kite"), {}), supercategories=("animal", "animal", "vehicle", "")
    )
    grouped = similar_classes(coco)
    assert grouped == SimilarClasses((("cat", "dog"), ("car",)), "supercategories")
    assert similar_classes(split(("a", "b"), {})) == SimilarClasses((), "none")
    assert similar_classes(voc, [["cat", "dog"]]) == SimilarClasses((("cat", "dog"),), "config")
    assert similar_classes(voc, []).source == "config"  # none, on purpose
    with pytest.raises(UserError, match="does not have: kitten, puppy"):
        similar_classes(voc, [["cat", "kitten"], ["puppy"]])
    with pytest.raises(UserError, match="each group is a list"):
        similar_classes(voc, ["cat"])


def test_json_and_plot(scene, tmp_path):
    dataset, found = scene
    written = json.loads(json.dumps(diagnose(dataset, found, "voc07", PETS).to_json(), allow_nan=False))
    assert set(written) == {
        "metric",
        "similar",
        "false_positives",
        "false_positives_by_class",
        "false_positive_growth",
        "pr_breakdown",
        "ap_by_size",
        "difficult_counted",
    }
    assert written["similar"] == {"source": "config", "groups": [["cat", "dog"]]}
    assert written["false_positives"] == {"loc": 2, "sim": 2, "oth": 2, "bg": 1}
    assert [point["multiple"] for point in written["false_positive_growth"]] == [*MULTIPLES, "all"]
    assert written["false_positive_growth"][0]["fractions"]["loc"] is None  # no false positive yet
    assert written["false_positive_growth"][-1]["fractions"]["bg"] == 0.125
    breakdown = written["pr_breakdown"]
    assert set(breakdown) == {"c75", "c50", "loc", "sim", "oth", "bg", "fn", "by_class"}
    assert breakdown["fn"] == 1.0 and breakdown["by_class"]["cat"]["c50"] == round(
        evaluate(*scene).classes[0].ap, 6
    )
    assert written["difficult_counted"]["objects"] == 9
    assert written["ap_by_size"]["large"] == {"ap": None, "objects": 0}  # no large object: no AP
    plot_diagnosis(diagnose(dataset, found, "voc07", PETS), tmp_path / "diagnosis.png")
    assert (tmp_path / "diagnosis.png").read_bytes()[:4] == b"\x89PNG"
    truncated = marked_truncated(dataset, {"a": [True, False, False, False], "b": [False] * 5})
    plot_diagnosis(diagnose(truncated, found, "voc07", PETS), tmp_path / "truncated.png")
    assert (tmp_path / "truncated.png").read_bytes()[:4] == b"\x89PNG"


def test_a_coco_metric_or_a_class_outside_the_dataset_is_refused(scene):
    dataset, found = scene
    with pytest.raises(UserError, match="choose voc07, voc10"):
        diagnose(dataset, found, "coco", PETS)
    with pytest.raises(UserError, match="classes the dataset does not have: horse"):
        diagnose(dataset, detections([("a", "horse", 1.0, [0, 0, 5, 5])]), "voc07", PETS)
