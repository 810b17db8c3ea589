import logging

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.datasets.convert import convert
from stages.datasets.demo import DEMO_CLASSES
from stages.datasets.formats import check_dataset, load_dataset
from stages.datasets.voc import VOC_CLASSES
from tests.helpers import BILLION_LAUGHS, EXTERNAL_ENTITY, make_voc, voc_object, voc_xml, write_image


def test_reads_the_tiny_demo(tiny_demo):
    dataset = load_dataset(tiny_demo, "trainval")
    assert dataset.classes == tuple(sorted(DEMO_CLASSES))
    assert len(dataset) == 5 and dataset.annotated
    for record in dataset.images:
        assert record.boxes.dtype == np.float32 and record.boxes.shape[1] == 4
        assert (record.boxes[:, 2] <= record.width).all() and (record.boxes[:, 0] >= 0).all()
        assert record.labels.min() >= 1 and record.labels.max() <= len(dataset.classes)


def test_voc_year_folder_has_the_twenty_classes(tmp_path):
    root = make_voc(tmp_path / "VOC2007", {"000001": voc_xml([voc_object("dog", (1, 1, 10, 10))])})
    dataset = load_dataset(root, "train")
    assert dataset.classes == VOC_CLASSES
    assert dataset.images[0].labels.tolist() == [VOC_CLASSES.index("dog") + 1]
    # VOC 1-based inclusive (1, 1, 10, 10) -> toolkit (0, 0, 10, 10)
    assert dataset.images[0].boxes.tolist() == [[0, 0, 10, 10]]


def test_classes_discovered_across_all_annotations_sorted(tmp_path):
    root = make_voc(
        tmp_path / "mine",
        {
            "a": voc_xml([voc_object("zebra", (1, 1, 9, 9))]),
            "b": voc_xml([voc_object("apple", (1, 1, 9, 9))]),
        },
    )
    (root / "ImageSets" / "Main" / "only_a.txt").write_text("a\n")
    assert load_dataset(root, "only_a").classes == ("apple", "zebra")


def test_given_classes_restrict_and_others_are_counted(tmp_path, caplog):
    root = make_voc(
        tmp_path / "mine",
        {
            "a": voc_xml([voc_object("cat", (1, 1, 9, 9)), voc_object("dog", (2, 2, 9, 9))]),
        },
    )
    with caplog.at_level(logging.WARNING, logger="rcnn"):
        dataset = load_dataset(root, "train", classes=("dog",))
    assert dataset.images[0].labels.tolist() == [1]
    assert "ignored objects of classes outside the class list: cat x1" in caplog.text


def test_messy_boxes_are_clipped_or_dropped_with_counts(tmp_path, caplog):
    root = make_voc(
        tmp_path / "mine",
        {
            "a": voc_xml(
                [
                    voc_object("cat", (-5, 1, 100, 30)),  # reaches outside the 80 x 60 image: clipped
                    voc_object("cat", (30, 30, 20, 40)),  # inverted: dropped
                    voc_object("cat", (90, 70, 95, 80)),  # wholly outside: empty once clipped, dropped
                    voc_object("cat", (5, 5, 5, 5)),  # a single pixel: kept
                ]
            )
        },
    )
    with caplog.at_level(logging.WARNING, logger="rcnn"):
        record = load_dataset(root, "train").images[0]
    assert record.boxes.tolist() == [[0, 0, 80, 30], [4, 4, 5, 5]]
    assert "clipped 1 boxes" in caplog.text and "dropped 2 empty or inverted boxes" in caplog.text
    assert str(root / "Annotations" / "a.xml") in caplog.text


def test_labelling_tool_quirks(tmp_path):
    """Float coordinates, no <difficult>, no <size> (read from the image), a .png named in <filename>."""
    root = make_voc(
        tmp_path / "mine",
        {
            "a": voc_xml(
                [voc_object("cat", (10.5, 5.0, 40.2, 30.0), difficult=None)], width=None, filename="a.png"
            )
        },
    )
    (root / "JPEGImages" / "a.jpg").rename(root / "JPEGImages" / "a.png")
    record = load_dataset(root, "train").images[0]
    assert (record.height, record.width) == (60, 80)
    assert record.path.name == "a.png"
    assert np.allclose(record.boxes, [[9.5, 4.0, 40.2, 30.0]]) and not record.difficult[0]


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "/etc/passwd", "sub/x", "..", "C:evil"])
def test_ids_may_not_escape_the_root(tmp_path, bad_id):
    root = make_voc(tmp_path / "mine", {"a": voc_xml([])})
    (root / "ImageSets" / "Main" / "train.txt").write_text(f"a\n{bad_id}\n")
    with pytest.raises(UserError, match=r"train.txt line 2: .*escapes the dataset root"):
        load_dataset(root, "train")


def test_filename_element_may_not_escape_the_root(tmp_path):
    root = make_voc(tmp_path / "mine", {"a": voc_xml([voc_object("cat", (1, 1, 5, 5))], filename="../x.jpg")})
    with pytest.raises(UserError, match="escapes the dataset root"):
        load_dataset(root, "train")


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY, "<annotation><object>", "\x00garbage"])
def test_unsafe_or_broken_xml_is_an_error_naming_the_file(tmp_path, xml):
    root = make_voc(tmp_path / "mine", {"a": voc_xml([voc_object("cat", (1, 1, 5, 5))]), "b": xml})
    with pytest.raises(UserError, match=r"Annotations/b.xml: unreadable annotation"):
        load_dataset(root, "train", classes=("cat",))
    dataset = load_dataset(root, "train", classes=("cat",), skip_bad=True)
    assert [r.image_id for r in dataset.images] == ["a"]
    assert list(dataset.skipped) == ["b"] and "b.xml" in dataset.skipped["b"]


def test_missing_split_lists_the_available_ones(tmp_path):
    root = make_voc(tmp_path / "mine", {"a": voc_xml([])}, split="trainval")
    with pytest.raises(UserError, match=r"train.txt: split file not found \(available: trainval\)"):
        load_dataset(root, "train")


def test_object_without_bndbox_and_missing_image(tmp_path):
    root = make_voc(tmp_path / "mine", {"a": voc_xml(["<object><name>cat</name></object>"])})
    with pytest.raises(UserError, match=r"a.xml: object 1 \(cat\) has no <bndbox>"):
        load_dataset(root, "train")
    root = make_voc(tmp_path / "other", {"a": voc_xml([voc_object("cat", (1, 1, 5, 5))])})
    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(UserError, match=r"a.jpg: image not found"):
        load_dataset(root, "train")


def test_unannotated_split_reads_sizes_from_images(tmp_path):
    root = make_voc(tmp_path / "mine", {"a": None, "b": None})
    dataset = load_dataset(root, "train")
    assert not dataset.annotated and dataset.classes == ()
    assert [(r.height, r.width) for r in dataset.images] == [(60, 80), (60, 80)]


def test_partly_annotated_split_is_an_error(tmp_path):
    root = make_voc(tmp_path / "mine", {"a": voc_xml([]), "b": None})
    with pytest.raises(UserError, match=r"b.xml: annotation missing \(1 of 2 images"):
        load_dataset(root, "train")


def test_check_reports_counts_and_problems(tmp_path):
    root = make_voc(
        tmp_path / "mine",
        {
            "a": voc_xml([voc_object("cat", (1, 1, 9, 9)), voc_object("dog", (1, 1, 5, 5), "1")]),
            "b": voc_xml([voc_object("cat", (1, 1, 9, 9))], width=100, height=60),
            "c": voc_xml([voc_object("cat", (1, 1, 9, 9))]),
        },
    )
    (root / "JPEGImages" / "c.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    report = check_dataset(root, ["train"]).splits[0]  # counts of the images that can be used: not c's
    assert report.objects == {"cat": 2, "dog": 1} and report.difficult == {"cat": 0, "dog": 1}
    assert any("b.jpg: image is 80x60, annotation says 100x60" in p for p in report.problems)
    assert any("c.jpg: not an image" in p for p in report.problems)
    write_image(root / "JPEGImages" / "c.jpg")


def test_truncated_is_read_kept_with_its_box_through_the_repairs_and_written_back(tmp_path):
    """<truncated> 1 or 0, none: not truncated; the flags of a dropped box and of an unknown class's
    object leave with them; a VOC copy writes them, a COCO copy has none (None), and VOC written from it
    no tag."""
    root = make_voc(
        tmp_path / "mine",
        {
            "a": voc_xml(
                [
                    voc_object("cat", (30, 30, 20, 40), truncated="0"),  # inverted: dropped
                    voc_object("cat", (-5, 1, 100, 30), truncated="1"),  # clipped, kept
                    voc_object("dog", (1, 1, 9, 9), truncated="0"),  # outside the class list
                    voc_object("cat", (2, 2, 8, 8)),  # no <truncated>
                    voc_object("cat", (10, 10, 20, 20), truncated="1"),
                    voc_object("cat", (5, 5, 5, 5), truncated="0"),
                ]
            )
        },
    )
    dataset = load_dataset(root, "train", classes=("cat",))
    record = dataset.images[0]
    assert record.boxes.tolist() == [[0, 0, 80, 30], [1, 1, 8, 8], [9, 9, 20, 20], [4, 4, 5, 5]]
    assert record.truncated is not None and record.truncated.tolist() == [True, False, True, False]
    again = load_dataset(convert(dataset, "voc", tmp_path / "voc").out, "train").images[0]
    assert again.truncated is not None and again.truncated.tolist() == [True, False, True, False]
    coco = load_dataset(convert(dataset, "coco", tmp_path / "coco").out, "train")
    assert coco.images[0].truncated is None
    back = convert(coco, "voc", tmp_path / "back").out
    assert "<truncated>" not in (back / "Annotations" / "a.xml").read_text()
    assert load_dataset(back, "train").images[0].truncated.tolist() == [False] * 4
