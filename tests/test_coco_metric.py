"""COCO's metric: the toolkit's numbers equal pycocotools' COCOeval run directly on the dataset's own JSON
and the same detections; the default metric follows the dataset's layout."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from stages.datasets.formats import load_dataset
from stages.detections.files import Detections, write_detections
from stages.evaluation.metrics import evaluate
from tests.helpers import rcnn, write_image

CATEGORIES = [{"id": 3, "name": "car"}, {"id": 18, "name": "dog"}, {"id": 90, "name": "toothbrush"}]


@pytest.fixture
def coco(tmp_path):
    """A COCO split of 6 images (sparse ids 101..106, 3 sparse categories, a crowd region, objects of
    every size class) and 300 noisy detections around its objects: (root, detections as JSON rows)."""
    rng = np.random.default_rng(0)
    images, annotations, rows = [], [], []
    for k in range(6):
        image_id, width, height = 101 + k, 640, 480
        images.append({"id": image_id, "file_name": f"im{k}.jpg", "width": width, "height": height})
        write_image(tmp_path / "val" / f"im{k}.jpg", height, width, seed=k)
        for n in range(4):
            w, h = rng.uniform(8, 30 if n == 0 else 300, 2)  # one small object an image
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            category = CATEGORIES[rng.integers(3)]["id"]
            crowd = int(len(annotations) == 5)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                 "bbox": [x, y, w, h], "area": w * h * 0.8, "iscrowd": crowd}
            )  # fmt: skip
    for a in annotations * 10 + annotations[:6] * 2:
        x, y, w, h = np.asarray(a["bbox"]) + rng.normal(0, 6, 4)
        category = a["category_id"] if rng.random() < 0.8 else CATEGORIES[rng.integers(3)]["id"]
        rows.append({"image_id": a["image_id"], "category_id": category, "bbox": [x, y, max(w, 1), max(h, 1)],
                     "score": float(rng.random())})  # fmt: skip
    (tmp_path / "annotations").mkdir()
    content = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(content))
    return tmp_path, rows


def as_detections(rows, dataset) -> Detections:
    stem = {r.source_id: r.image_id for r in dataset.images}
    name = dict(zip(dataset.category_ids, dataset.classes, strict=True))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rows)], np.float32)
    return Detections(
        np.array([stem[r["image_id"]] for r in rows]),
        np.array([name[r["category_id"]] for r in rows]),
        np.array([r["score"] for r in rows], np.float64),
        boxes,
    )


def test_the_coco_metric_is_pycocotools_on_the_dataset_itself(coco):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root, rows = coco
    dataset = load_dataset(root, "val")
    ours = evaluate(dataset, as_detections(rows, dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(root / "annotations" / "instances_val.json"))
        reference = COCOeval(truth, truth.loadRes(rows), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert ours.metric == "coco"  # the default for a COCO dataset
    # float32 boxes round-trip the JSON's float64 ones to about 1e-5 px: the same matches, the same numbers
    expected = np.where(reference.stats < 0, np.nan, reference.stats)  # -1, "undefined", is NaN here
    np.testing.assert_allclose(list(ours.summary.values()), expected, atol=1e-6)
    assert ours.map == pytest.approx(reference.stats[0], abs=1e-6)
    per_class = [c.ap for c in ours.classes]
    assert np.mean(per_class) == pytest.approx(ours.map, abs=1e-9)


def test_each_class_keeps_its_ap_in_any_class_order_and_untrained_ones_leave_the_map(coco):
    """COCOeval orders its per-class results by category id: a class list in another order (--classes)
    must not hand one class's AP to another. An untrained class is scored apart: the mAP is COCOeval's
    over the others."""
    root, rows = coco
    dataset = load_dataset(root, "val")
    reordered = load_dataset(root, "val", classes=("toothbrush", "car", "dog"))
    ours = {c.name: c.ap for c in evaluate(dataset, as_detections(rows, dataset)).classes}
    again = {c.name: c.ap for c in evaluate(reordered, as_detections(rows, reordered)).classes}
    assert again == ours and len(set(ours.values())) == 3
    apart = evaluate(reordered, as_detections(rows, reordered), untrained=["dog"])
    only = evaluate(
        load_dataset(root, "val", classes=("toothbrush", "car")),
        as_detections(
            [r for r in rows if r["category_id"] != 18],
            load_dataset(root, "val", classes=("toothbrush", "car")),
        ),
    )
    assert apart.untrained == ("dog",) and apart.map == pytest.approx(only.map, abs=1e-9)
    assert {c.name: c.ap for c in apart.classes if c.name != "dog"} == pytest.approx(
        {c.name: c.ap for c in only.classes}
    )


def test_the_coco_metric_on_a_voc_dataset_and_from_the_command_line(coco, tiny_demo, tmp_path):
    root, rows = coco
    dataset = load_dataset(root, "val")
    path = tmp_path / "dets.json"
    write_detections(path, as_detections(rows, dataset))
    out = tmp_path / "results.json"
    result = rcnn("evaluate", "--data", root, "--split", "val", "--detections", path, "--out", out)
    assert result.exit_code == 0 and "COCO metric (pycocotools)" in result.output, result.output
    saved = json.loads(out.read_text())
    assert saved["metric"] == "coco" and set(saved["coco"]) >= {"ap", "ap50", "ap75", "ar100", "ap_small"}
    assert saved["map"] == saved["coco"]["ap"]
    voc = load_dataset(tiny_demo, "test")
    truth = Detections(
        np.array([r.image_id for r in voc.images for _ in r.labels]),
        np.array([voc.classes[label - 1] for r in voc.images for label in r.labels]),
        np.ones(sum(len(r.labels) for r in voc.images)),
        np.concatenate([r.boxes for r in voc.images]),
    )
    perfect = evaluate(voc, truth, "coco")
    assert perfect.map == pytest.approx(1.0) and evaluate(voc, truth).metric == "voc07"
