import json
import logging

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.core.plotting import fallback_font
from stages.datasets.formats import load_dataset
from stages.detections.files import Detections, read_detections, write_detections
from stages.evaluation.metrics import average_precision, evaluate, plot_pr_curves
from tests.helpers import detections, make_voc, rcnn, voc_object, voc_xml


@pytest.fixture
def scene(tmp_path):
    """Two images. a: aaa at (0,0,10,10), a difficult aaa at (40,40,50,50), bbb at (20,0,30,10),
    ccc at (60,0,70,10), ddd at (0,0,2,2); b: bbb at (0,20,10,30). VOC boxes are 1-based inclusive:
    (1,1,10,10) is the toolkit's (0,0,10,10)."""
    root = make_voc(
        tmp_path / "scene",
        {
            "a": voc_xml(
                [
                    voc_object("aaa", (1, 1, 10, 10)),
                    voc_object("aaa", (41, 41, 50, 50), "1"),
                    voc_object("bbb", (21, 1, 30, 10)),
                    voc_object("ccc", (61, 1, 70, 10)),
                    voc_object("ddd", (1, 1, 2, 2)),
                ]
            ),
            "b": voc_xml([voc_object("bbb", (1, 21, 10, 30))]),
        },
    )
    return load_dataset(root, "train", classes=("aaa", "bbb", "ccc", "ddd"))


def test_hand_computed_case(scene):
    results = evaluate(
        scene,
        detections(
            [
                ("a", "aaa", 0.9, [0, 0, 10, 10]),  # hit
                ("a", "aaa", 0.8, [0, 0, 10, 10]),  # duplicate: false positive
                ("a", "aaa", 0.7, [40, 40, 50, 50]),  # on a difficult object: ignored
                ("a", "aaa", 0.6, [70, 50, 80, 60]),  # nowhere: false positive
                ("a", "bbb", 0.9, [20, 0, 30, 10]),  # hit
                ("b", "bbb", 0.8, [50, 50, 60, 60]),  # false positive
                ("b", "bbb", 0.7, [0, 20, 10, 30]),  # hit
            ]
        ),
    )
    ap = {c.name: c.ap for c in results.classes}
    # aaa: hits [1, 0, 0] -> precision [1, .5, .33] at recall 1: AP 1.
    assert ap["aaa"] == pytest.approx(1.0)
    # bbb: recall [.5, .5, 1], precision [1, .5, 2/3]: 11-point (6 x 1 + 5 x 2/3) / 11.
    assert ap["bbb"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert ap["ccc"] == 0.0  # positives, no detections
    assert ap["ddd"] == 0.0
    assert results.map == pytest.approx(np.mean([1.0, (6 + 5 * 2 / 3) / 11, 0.0, 0.0]))
    voc10 = evaluate(
        scene,
        detections(
            [
                ("a", "bbb", 0.9, [20, 0, 30, 10]),
                ("b", "bbb", 0.8, [50, 50, 60, 60]),
                ("b", "bbb", 0.7, [0, 20, 10, 30]),
            ]
        ),
        metric="voc10",
    )
    # area under the envelope: .5 x 1 + .5 x 2/3
    assert {c.name: c.ap for c in voc10.classes}["bbb"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_class_without_positives_is_left_out_of_the_mean(tmp_path):
    root = make_voc(tmp_path / "s", {"a": voc_xml([voc_object("aaa", (1, 1, 10, 10))])})
    dataset = load_dataset(root, "train", classes=("aaa", "zzz"))
    results = evaluate(
        dataset, detections([("a", "aaa", 1.0, [0, 0, 10, 10]), ("a", "zzz", 1.0, [0, 0, 10, 10])])
    )
    ap = {c.name: c.ap for c in results.classes}
    assert ap["aaa"] == 1.0 and np.isnan(ap["zzz"]) and results.map == 1.0
    assert results.to_json()["ap"] == {"aaa": 1.0, "zzz": None}


def test_match_goes_to_the_best_overlap_even_if_taken(tmp_path):
    """The devkit's greedy rule: a detection whose best ground truth is already matched is a false
    positive, even when another ground truth overlaps it enough."""
    root = make_voc(
        tmp_path / "s", {"a": voc_xml([voc_object("aaa", (1, 1, 20, 20)), voc_object("aaa", (5, 1, 24, 20))])}
    )
    dataset = load_dataset(root, "train")
    results = evaluate(
        dataset, detections([("a", "aaa", 0.9, [0, 0, 20, 20]), ("a", "aaa", 0.8, [1, 0, 21, 20])])
    )
    cls = results.classes[0]
    assert cls.recall.tolist() == [0.5, 0.5] and cls.precision.tolist() == [1.0, 0.5]


def test_iou_threshold_is_inclusive(tmp_path):
    root = make_voc(tmp_path / "s", {"a": voc_xml([voc_object("aaa", (1, 1, 10, 10))])})
    dataset = load_dataset(root, "train")
    # (0,0,10,5) against (0,0,10,10): IoU exactly 0.5 -> a hit.
    assert evaluate(dataset, detections([("a", "aaa", 1.0, [0, 0, 10, 5])])).map == 1.0
    assert evaluate(dataset, detections([("a", "aaa", 1.0, [0, 0, 10, 4.9])])).map == 0.0


def reference_voc_eval(dataset, dets: Detections, metric: str):
    """A slow, literal transcription of the devkit's per-class evaluation (VOCevaldet.m)."""
    aps = []
    for label, name in enumerate(dataset.classes, start=1):
        gt = {
            r.image_id: [
                [b, d, False]
                for b, d, lab in zip(r.boxes, r.difficult, r.labels, strict=True)
                if lab == label
            ]
            for r in dataset.images
        }
        npos = sum(1 for objs in gt.values() for o in objs if not o[1])
        mine = [i for i in range(len(dets)) if dets.classes[i] == name]
        mine.sort(key=lambda i: -dets.scores[i])
        tp, fp = [], []
        for i in mine:
            best, best_iou = None, -np.inf
            for obj in gt[dets.image_ids[i]]:
                b, d = obj[0], dets.boxes[i]
                iw = min(b[2], d[2]) - max(b[0], d[0])
                ih = min(b[3], d[3]) - max(b[1], d[1])
                if iw > 0 and ih > 0:
                    union = (b[2] - b[0]) * (b[3] - b[1]) + (d[2] - d[0]) * (d[3] - d[1]) - iw * ih
                    if iw * ih / union > best_iou:
                        best, best_iou = obj, iw * ih / union
            if best is not None and best_iou >= 0.5:
                if best[1]:
                    continue
                if not best[2]:
                    best[2] = True
                    tp.append(1), fp.append(0)
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(1)
        if npos == 0:
            aps.append(np.nan)
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, 1e-12)
        if metric == "voc07":
            ap = sum(
                max([p for r, p in zip(rec, prec, strict=True) if r >= t], default=0) / 11
                for t in np.arange(0, 1.1, 0.1)
            )
        else:
            mrec, mpre = [0, *rec, 1], [0, *prec, 0]
            for k in range(len(mpre) - 2, -1, -1):
                mpre[k] = max(mpre[k], mpre[k + 1])
            ap = sum((mrec[k] - mrec[k - 1]) * mpre[k] for k in range(1, len(mrec)) if mrec[k] != mrec[k - 1])
        aps.append(ap)
    return aps


@pytest.mark.parametrize("metric", ["voc07", "voc10"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_reference_on_random_detections(tiny_demo, metric, seed):
    dataset = load_dataset(tiny_demo, "trainval")
    rng = np.random.default_rng(seed)
    rows = []
    for record in dataset.images:
        for box, label in zip(record.boxes, record.labels, strict=True):  # jittered truths: hits and misses
            for _ in range(3):
                b = (box + rng.normal(0, 0.15 * (box[2] - box[0]), 4)).clip(0)
                name = dataset.classes[rng.choice([label - 1, rng.integers(10)])]
                rows.append(
                    (
                        record.image_id,
                        name,
                        float(rng.random()),
                        [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])],
                    )
                )
    dets = detections(rows)
    ours = [c.ap for c in evaluate(dataset, dets, metric).classes]
    assert np.allclose(ours, reference_voc_eval(dataset, dets, metric), atol=1e-9, equal_nan=True)


def test_average_precision_edge_cases():
    assert average_precision(np.array([]), np.array([])) == 0.0
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0]), "voc10") == 1.0
    with pytest.raises(UserError, match="--metric 'coco'"):
        average_precision(np.array([1.0]), np.array([1.0]), "coco")


def test_unknown_classes_are_an_error_and_foreign_images_a_warning(scene, caplog):
    with pytest.raises(UserError, match="classes the dataset does not have: eee"):
        evaluate(scene, detections([("a", "eee", 1.0, [0, 0, 1, 1])]))
    with caplog.at_level(logging.WARNING, logger="rcnn"):
        evaluate(scene, detections([("zz", "aaa", 1.0, [0, 0, 1, 1])]))
    assert "ignored 1 detections on 1 images outside split 'train'" in caplog.text


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{", "not a JSON file"),
        ('{"a": 1}', "expected a JSON list"),
        ('[{"image_id": "a"}]', "detection 0: needs the keys"),
        (
            '[{"image_id": "a", "class": "aaa", "score": "high", "box": [0, 0, 1, 1]}]',
            "score must be a finite",
        ),
        ('[{"image_id": "a", "class": "aaa", "score": 1, "box": [5, 0, 1, 1]}]', r"box must be \[x1, y1, x2"),
        ('[{"image_id": "a", "class": "aaa", "score": NaN, "box": [0, 0, 1, 1]}]', "score must be a finite"),
    ],
)
def test_bad_detection_files_name_the_file_and_entry(tmp_path, payload, message):
    path = tmp_path / "dets.json"
    path.write_text(payload)
    with pytest.raises(UserError, match=f"{path}: .*{message}"):
        read_detections(path)


def test_detections_round_trip_and_plot(tmp_path, scene):
    dets = detections([("a", "aaa", 0.5, [0, 0, 10, 10]), ("b", "bbb", 0.25, [1, 2, 3, 4])])
    write_detections(tmp_path / "d.json", dets)
    back = read_detections(tmp_path / "d.json")
    assert back.image_ids.tolist() == ["a", "b"] and back.boxes.tolist() == dets.boxes.tolist()
    assert json.loads((tmp_path / "d.json").read_text())[0]["class"] == "aaa"
    plot_pr_curves(evaluate(scene, back), tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"


def test_class_names_in_any_script_are_drawn_or_said_once_never_as_raw_warnings(tmp_path):
    """A name whose characters the default font lacks is drawn with an installed font that has them
    (matplotlib's own fonts have "Ⓐ"); where none has (CJK, without a CJK font installed), one warning
    says so, and matplotlib's per-glyph warnings never reach the terminal."""
    names = ("活的树", "枯树", "Ⓐpple")
    root = make_voc(
        tmp_path / "data",
        {"a": voc_xml([voc_object(name, (5 + 10 * k, 5, 40 + 10 * k, 40)) for k, name in enumerate(names)])},
    )
    detections = tmp_path / "detections.json"
    found = [{"image_id": "a", "class": name, "score": 0.9, "box": [5, 5, 40, 40]} for name in names]
    detections.write_text(json.dumps(found, ensure_ascii=False), encoding="utf-8")
    on = ("--data", root, "--split", "train", "--detections", detections)
    result = rcnn("evaluate", *on, "--out", tmp_path / "results.json")
    assert result.exit_code == 0 and (tmp_path / "results.pr.png").is_file(), result.output
    assert "Glyph" not in result.output and "UserWarning" not in result.output
    said = [line for line in result.output.splitlines() if "no installed font has every character" in line]
    assert fallback_font(frozenset("Ⓐ")) is not None and not any("Ⓐpple" in line for line in said)
    cjk = fallback_font(frozenset("活的树枯"))
    if cjk is not None and cjk[1] == frozenset("活的树枯"):  # a CJK font is installed
        assert not said
    else:
        assert len(said) == 1 and "枯树, 活的树" in said[0]
    again = rcnn("evaluate", *on, "--out", tmp_path / "again.json")
    assert "no installed font" not in again.output  # once a process


def test_evaluate_gives_each_ap_and_the_map_a_95_percent_interval(scene, tmp_path):
    found = detections(
        [
            ("a", "aaa", 0.9, [0, 0, 10, 10]),
            ("a", "bbb", 0.8, [20, 0, 30, 10]),
            ("b", "bbb", 0.7, [0, 0, 5, 5]),
        ]
    )
    write_detections(tmp_path / "d.json", found)
    on = ("--data", scene.root, "--split", "train", "--detections", tmp_path / "d.json")
    result = rcnn("evaluate", *on, "--classes", "aaa,bbb,ccc,ddd", "--out", tmp_path / "r.json")
    assert result.exit_code == 0 and "95% interval" in result.output, result.output
    written = json.loads((tmp_path / "r.json").read_text())
    low, high = written["map_ci95"]
    assert low <= written["map"] <= high and written["bootstrap"]["samples"] == 1000
    assert set(written["ap_ci95"]) == {"aaa", "bbb", "ccc", "ddd"}


def test_evaluate_diagnoses_a_detections_file_with_the_similar_classes_given(scene, tmp_path):
    """`--diagnose` writes the diagnosis beside --out, as the library makes it; --similar groups turn a
    confusion from Oth into Sim; a group naming no class of the dataset is a one-line error."""
    found = detections(
        [
            ("a", "aaa", 0.9, [0, 0, 10, 10]),  # hit
            ("a", "aaa", 0.8, [20, 0, 30, 10]),  # on the bbb: a confusion
            ("a", "bbb", 0.7, [0, 0, 10, 3]),  # on the aaa, not its class
            ("b", "bbb", 0.6, [0, 20, 10, 25]),  # IoU 0.5 exactly: a hit
            ("b", "bbb", 0.5, [0, 24, 10, 30]),  # on the bbb at IoU 0.6, a duplicate: loc
        ]
    )
    write_detections(tmp_path / "d.json", found)
    on = ("--data", scene.root, "--split", "train", "--detections", tmp_path / "d.json")
    on += ("--classes", "aaa,bbb,ccc,ddd", "--out", tmp_path / "r.json", "--diagnose")
    result = rcnn("evaluate", *on, "--similar", "aaa,bbb")
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "r.diagnosis.json").read_text())
    assert written["similar"] == {"source": "config", "groups": [["aaa", "bbb"]]}
    # top-ranked: aaa's first detection (one object not difficult), bbb's first two
    assert written["false_positives_by_class"]["aaa"] == {"loc": 0, "sim": 0, "oth": 0, "bg": 0}
    assert written["false_positives_by_class"]["bbb"] == {"loc": 0, "sim": 1, "oth": 0, "bg": 0}
    every = written["false_positive_growth"][-1]
    assert every["multiple"] == "all" and every["false_positives"] == 3
    assert every["fractions"] == pytest.approx({"loc": 1 / 3, "sim": 2 / 3, "oth": 0, "bg": 0})
    assert (tmp_path / "r.diagnosis.png").stat().st_size > 0
    assert "top-ranked false positives" in result.output and "PR breakdown" in result.output
    apart = rcnn("evaluate", *on)
    assert apart.exit_code == 0, apart.output
    written = json.loads((tmp_path / "r.diagnosis.json").read_text())
    assert written["similar"]["source"] == "none" and written["false_positives"]["oth"] == 1
    assert written["false_positive_growth"][-1]["fractions"]["oth"] == pytest.approx(2 / 3)
    alone = rcnn("evaluate", *on[:-1], "--similar", "aaa,bbb")
    assert alone.exit_code == 2 and "--diagnose" in alone.output
    twice = rcnn("evaluate", *on, "--similar", "aaa,aaa")
    assert twice.exit_code == 2 and "--similar" in twice.output and "distinct" in twice.output
    wrong = rcnn("evaluate", *on, "--similar", "aaa,zebra")
    assert wrong.exit_code == 2 and "zebra" in wrong.output and len(wrong.output.strip().splitlines()) == 1
