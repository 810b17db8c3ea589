"""COCO and YOLO beside VOC: the demo read the same from all three layouts, their readers' own rules, and
the converters' round trips."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.datasets.convert import convert
from stages.datasets.demo import generate_demo
from stages.datasets.formats import detect_format, load_dataset
from stages.proposals.propose import read_proposals
from stages.runs.layout import RunLayout
from tests.helpers import TINY, rcnn, write_image

YOLO_ROUNDING = 1e-3  # six decimals of a coordinate normalised by a side of at most 500 px


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The tiny demo in each layout: layout -> root."""
    base = tmp_path_factory.mktemp("layouts")
    return {layout: generate_demo(base / layout, TINY, layout=layout) for layout in ("voc", "coco", "yolo")}


def objects(record):
    """(boxes, labels, difficult) of an image, in one order whatever the layout stored them in (YOLO
    keeps difficult objects in a file of their own)."""
    order = np.lexsort((record.labels, *np.round(record.boxes, 1).T[::-1]))
    return record.boxes[order], record.labels[order], record.difficult[order]


def assert_same_split(a, b, tolerance=0.0):
    assert a.classes == b.classes
    assert [r.image_id for r in a.images] == [r.image_id for r in b.images]
    for x, y in zip(a.images, b.images, strict=True):
        assert (x.height, x.width) == (y.height, y.width)
        (x_boxes, x_labels, x_difficult), (y_boxes, y_labels, y_difficult) = objects(x), objects(y)
        np.testing.assert_array_equal(x_labels, y_labels)
        np.testing.assert_allclose(x_boxes, y_boxes, atol=tolerance, rtol=0)
        np.testing.assert_array_equal(x_difficult, y_difficult)


@pytest.mark.parametrize("split", ["trainval", "test"])
def test_the_demo_reads_the_same_in_every_layout(layouts, split):
    voc, coco, yolo = (load_dataset(layouts[k], split) for k in ("voc", "coco", "yolo"))
    assert (voc.format, coco.format, yolo.format) == ("voc", "coco", "yolo")
    assert_same_split(voc, coco)
    assert_same_split(voc, yolo, YOLO_ROUNDING)  # difficult objects in the file beside the labels


def test_a_round_trip_through_every_layout_keeps_every_box(layouts, tmp_path):
    voc = load_dataset(layouts["voc"], "trainval")
    coco = load_dataset(convert(voc, "coco", tmp_path / "coco").out, "trainval")
    yolo = load_dataset(convert(coco, "yolo", tmp_path / "yolo").out, "trainval")
    back = load_dataset(convert(yolo, "voc", tmp_path / "voc").out, "trainval", classes=voc.classes)
    assert_same_split(voc, coco)
    assert_same_split(voc, back, YOLO_ROUNDING)


def test_every_layout_runs_the_command_line(layouts, tmp_path):
    for layout, root in layouts.items():
        result = rcnn("data", "check", "--data", root, "--split", "trainval")
        assert result.exit_code == 0 and f"({layout})" in result.output, result.output
    result = rcnn(
        "data", "convert", "--data", layouts["coco"], "--split", "test", "--to", "yolo", "--out", tmp_path
    )
    assert result.exit_code == 0 and "3 images" in result.output, result.output
    assert detect_format(tmp_path) == "yolo"


def coco_root(tmp_path, annotations, categories, images=None, folder="images"):
    images = images or [{"id": 42, "file_name": "a.jpg", "width": 80, "height": 60}]
    for image in images:
        write_image(tmp_path / folder / image["file_name"])
    (tmp_path / "annotations").mkdir(exist_ok=True)
    content = {"images": images, "annotations": annotations, "categories": categories}
    (tmp_path / "annotations" / "instances_s.json").write_text(json.dumps(content))
    return tmp_path


def test_coco_sparse_category_ids_crowds_and_boxes(tmp_path):
    categories = [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}]
    annotations = [
        {"id": 1, "image_id": 42, "category_id": 90, "bbox": [10, 5, 20.5, 30], "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 3, "bbox": [0, 0, 80, 60], "iscrowd": 1},
    ]
    dataset = load_dataset(coco_root(tmp_path, annotations, categories), "s")
    assert dataset.classes == ("car", "train", "toothbrush") and dataset.category_ids == (3, 7, 90)
    (record,) = dataset.images
    assert record.image_id == "a" and record.source_id == 42
    np.testing.assert_array_equal(record.boxes, [[10, 5, 30.5, 35], [0, 0, 80, 60]])
    assert record.labels.tolist() == [3, 1] and record.difficult.tolist() == [False, True]
    again = load_dataset(convert(dataset, "coco", tmp_path / "copy").out, "s")
    assert again.category_ids == (3, 7, 90) and again.images[0].source_id == 42


def test_coco_supercategories_follow_the_classes_and_survive_a_conversion(tmp_path):
    categories = [
        {"id": 3, "name": "car", "supercategory": "vehicle"},
        {"id": 1, "name": "cat", "supercategory": "animal"},
        {"id": 2, "name": "dog", "supercategory": "animal"},
    ]
    root = coco_root(
        tmp_path / "named", [{"id": 1, "image_id": 42, "category_id": 1, "bbox": [1, 1, 5, 5]}], categories
    )
    dataset = load_dataset(root, "s")
    assert dataset.classes == ("cat", "dog", "car")
    assert dataset.supercategories == ("animal", "animal", "vehicle")
    assert load_dataset(root, "s", classes=("car", "cat")).supercategories == ("vehicle", "animal")
    again = load_dataset(convert(dataset, "coco", tmp_path / "copy").out, "s")
    assert again.supercategories == dataset.supercategories
    for category in categories:
        del category["supercategory"]
    plain = coco_root(tmp_path / "plain", [], categories)
    assert load_dataset(plain, "s").supercategories == ()


@pytest.mark.parametrize(
    "change,problem",
    [
        (lambda c: c.update(images={}), "not a COCO annotation file"),
        (lambda c: c["images"][0].update(file_name="../a.jpg"), "escapes the dataset root"),
        (lambda c: c["images"][0].update(file_name="missing.jpg"), "missing.jpg: image not found"),
        (lambda c: c["annotations"][0].update(bbox="wide"), "has no [x, y, width, height] bbox"),
        (lambda c: c["categories"][0].pop("name"), "a category without a numeric id and a name"),
        (
            lambda c: c["annotations"][0].update(image_id=[42]),
            "annotation 1 lacks an image_id or a category_id",
        ),
    ],
)
def test_coco_problems_name_the_file(tmp_path, change, problem):
    root = coco_root(
        tmp_path,
        [{"id": 1, "image_id": 42, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        [{"id": 1, "name": "x"}],
    )
    path = root / "annotations" / "instances_s.json"
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match=r"instances_s\.json|missing\.jpg") as error:
        load_dataset(root, "s")
    assert problem in str(error.value)
    with pytest.raises(UserError, match=r"splits available: s"):
        load_dataset(root, "nosuch")


def yolo_root(tmp_path, names, labels: dict[str, str | None]):
    (tmp_path / "data.yaml").write_text(f"names: {json.dumps(names)}\n")
    for stem, text in labels.items():
        write_image(tmp_path / "images" / "train" / f"{stem}.jpg")
        if text is not None:
            (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (tmp_path / "labels" / "train" / f"{stem}.txt").write_text(text)
    return tmp_path


def test_yolo_rows_become_boxes_and_a_missing_label_file_no_objects(tmp_path):
    root = yolo_root(
        tmp_path, {0: "cat", 1: "dog"}, {"a": "1 0.5 0.5 0.25 0.5\n\n0 0.1 0.1 0.2 0.2\n", "b": None}
    )
    dataset = load_dataset(root, "train")
    assert dataset.classes == ("cat", "dog") and [r.image_id for r in dataset.images] == ["a", "b"]
    a, b = dataset.images
    np.testing.assert_allclose(a.boxes, [[30, 15, 50, 45], [0, 0, 16, 12]], atol=1e-4)
    assert a.labels.tolist() == [2, 1] and len(b.labels) == 0
    only_dogs = load_dataset(root, "train", classes=("dog",))
    assert only_dogs.images[0].labels.tolist() == [1]


@pytest.mark.parametrize(
    "row,problem",
    [
        ("cat 0.5 0.5 0.1 0.1", "line 1: not 'class cx cy w h'"),
        ("0 0.5 0.5 0.1", "line 1: not 'class cx cy w h'"),
        ("0 0.1 0.1 0.2 0.1 0.3 0.3", "line 1: 7 fields, not 5"),
        ("5 0.5 0.5 0.1 0.1", "line 1: class 5, but data.yaml names 2 classes"),
    ],
)
def test_yolo_problems_name_the_file_and_line(tmp_path, row, problem):
    root = yolo_root(tmp_path, ["cat", "dog"], {"a": row})
    with pytest.raises(UserError, match=r"a\.txt") as error:
        load_dataset(root, "train")
    assert problem in str(error.value)


def test_a_yolo_class_written_as_a_whole_float_is_that_class(tmp_path):
    """Ultralytics reads "1.0" as class 1, as some converters write it; "1.5" is no class."""
    root = yolo_root(tmp_path, ["cat", "dog"], {"a": "1.0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.1 0.1\n"})
    assert load_dataset(root, "train").images[0].labels.tolist() == [2, 1]
    (root / "labels" / "train" / "a.txt").write_text("1.5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UserError, match=r"a\.txt line 1: class 1\.5 is not a whole number"):
        load_dataset(root, "train")


def test_a_yolo_data_file_path_is_where_its_splits_are(tmp_path):
    """``path:`` absolute, or relative to the data.yaml's folder; one that is no folder is said and
    the splits are read from the root (Ultralytics reads it from its own datasets folder)."""
    (tmp_path / "elsewhere").mkdir()
    elsewhere = yolo_root(tmp_path / "elsewhere", ["cat"], {"a": "0 0.5 0.5 0.2 0.2\n", "b": None})
    root = tmp_path / "root"
    write_image(root / "images" / "train" / "c.jpg")
    for entry, images in ((str(elsewhere), ["a", "b"]), ("../elsewhere", ["a", "b"]), ("nowhere", ["c"])):
        (root / "data.yaml").write_text(f"path: {entry}\ntrain: images/train\nnames: [cat]\n")
        assert [r.image_id for r in load_dataset(root, "train").images] == images
    result = rcnn("data", "check", "--data", root, "--split", "train")
    assert result.exit_code == 0 and "path: nowhere is not a folder; reading the splits from" in result.output


def test_an_unknown_layout_says_what_it_looked_for(tmp_path):
    with pytest.raises(UserError, match="not a dataset this toolkit reads"):
        load_dataset(tmp_path, "train")


@pytest.mark.slow
def test_the_chain_gives_the_same_proposals_and_map_in_every_layout(tiny_run, tmp_path):
    """One Fast R-CNN, trained on the VOC layout, evaluated on the test split read from each layout:
    the same image ids and proposals, and the same mAP (YOLO's up to its rounding of the boxes)."""
    data, base = tiny_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    train = ("finetune", "--data", data, "--scales", "96", "--iterations", "20", "--checkpoint-every", "20")
    assert rcnn(*train, "--run", run).exit_code == 0
    maps, proposals = {}, {}
    for layout in ("voc", "coco", "yolo"):
        root = generate_demo(tmp_path / "data" / layout, TINY, layout=layout)
        here = tmp_path / layout
        shutil.copytree(run, here, ignore=shutil.ignore_patterns("proposals"))
        for step in (
            ("propose", "--data", root, "--split", "test", "--workers", "1", "--max-side", "160"),
            ("evaluate", "--data", root, "--split", "test", "--method", "fast", "--metric", "voc07"),
        ):
            result = rcnn(*step, "--run", here)
            assert result.exit_code == 0, result.output
        proposals[layout] = read_proposals(RunLayout(here).proposals("test"))
        maps[layout] = json.loads(RunLayout(here).method("fast").results("test").read_text())["map"]
    for layout in ("coco", "yolo"):
        assert list(proposals[layout]) == list(proposals["voc"])
        for image_id, boxes in proposals["voc"].items():
            np.testing.assert_array_equal(proposals[layout][image_id], boxes)
    assert maps["coco"] == maps["voc"] and maps["yolo"] == pytest.approx(maps["voc"], abs=0.01)


def test_a_yolo_label_file_that_is_not_text_names_the_file(tmp_path):
    root = yolo_root(tmp_path, ["cat"], {"a": ""})
    (root / "labels" / "train" / "a.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match=r"a\.txt: unreadable label file"):
        load_dataset(root, "train")
