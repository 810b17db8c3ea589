import json
from dataclasses import asdict

import h5py
import numpy as np
import pytest
import scipy.io

from stages.core.errors import UserError
from stages.datasets.formats import load_dataset
from stages.proposals import propose as proposals
from stages.proposals import selective_search
from stages.proposals.options import ProposalOptions
from stages.proposals.propose import import_mat, propose, read_proposals
from stages.runs import processes
from stages.runs.layout import RunLayout, manifest_path, write_manifest
from tests.helpers import make_voc, voc_object, voc_xml

FAST = ProposalOptions(workers=1, max_side=200)


@pytest.fixture(scope="module")
def searched(tiny_demo, tmp_path_factory):
    """The tiny test split searched once (1 worker); (dataset, run folder, summary)."""
    dataset = load_dataset(tiny_demo, "test")
    run = tmp_path_factory.mktemp("run")
    return dataset, run, propose(dataset, RunLayout(run), FAST)


def test_file_schema_and_manifest(searched):
    dataset, run, summary = searched
    path = RunLayout(run).proposals("test")
    with h5py.File(path) as h5:
        assert h5.attrs["format"] == "rcnn.proposals" and h5.attrs["schema_version"] == 1
        assert h5.attrs["split"] == "test" and h5.attrs["max_side"] == 200
        ids = h5["image_ids"].asstr()[:].tolist()
        offsets, boxes, sizes = h5["offsets"][:], h5["boxes"][:], h5["image_sizes"][:]
    assert ids == [r.image_id for r in dataset.images]
    assert boxes.dtype == np.float32 and offsets[0] == 0 and offsets[-1] == len(boxes)
    assert sizes.tolist() == [[r.height, r.width] for r in dataset.images]
    for i, record in enumerate(dataset.images):
        rows = boxes[offsets[i] : offsets[i + 1]]
        assert 0 < len(rows) <= 2000 and len(np.unique(rows, axis=0)) == len(rows)
        assert (rows[:, 2] - rows[:, 0] >= 10).all() and (rows[:, 3] - rows[:, 1] >= 10).all()
        assert (rows[:, :2] >= 0).all() and (rows[:, 2] <= record.width).all()
        assert (rows[:, 3] <= record.height).all()
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["stage"] == "propose" and manifest["options"]["mode"] == "fast"
    assert manifest["results"]["recall"] == summary.recall and 0 < summary.recall["0.5"] <= 1
    assert not RunLayout(run).proposal_parts("test").exists()


def test_boxes_map_back_from_the_shrunk_image(tiny_demo):
    record = load_dataset(tiny_demo, "test").images[0]
    rects, scale, size = selective_search.search(record.path, "fast", 100)
    assert scale == pytest.approx(100 / max(record.height, record.width))
    boxes = proposals.to_boxes(rects, scale, size)
    assert boxes[:, 2].max() > 0.8 * record.width and (boxes[:, 2] <= record.width).all()


def test_single_strategy_finds_fewer_boxes_than_fast_mode(tiny_demo):
    """One hierarchical grouping against fast mode's twelve."""
    record = load_dataset(tiny_demo, "test").images[0]
    counts = {}
    for mode in ("single", "fast"):
        selective_search.seed_ranking(record.image_id, 0)
        counts[mode] = len(selective_search.search(record.path, mode, 200)[0])
    assert 0 < counts["single"] < counts["fast"]


def test_worker_pool_gives_the_same_boxes(searched, tmp_path):
    dataset, run, _ = searched
    propose(dataset, RunLayout(tmp_path), ProposalOptions(workers=2, max_side=200))
    ours, theirs = (
        read_proposals(RunLayout(tmp_path).proposals("test")),
        read_proposals(RunLayout(run).proposals("test")),
    )
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)


def _interrupt_after(monkeypatch, calls: list, n: int):
    real = selective_search.worker

    def worker(job):
        if len(calls) == n:
            raise KeyboardInterrupt
        calls.append(job[0])
        return real(job)

    monkeypatch.setattr(selective_search, "worker", worker)
    monkeypatch.setattr(processes, "PART_IMAGES", 1)


def test_rerun_after_interruption_searches_only_the_missing_images(searched, tmp_path, monkeypatch):
    dataset, run, _ = searched
    calls: list[str] = []
    _interrupt_after(monkeypatch, calls, 2)
    with pytest.raises(KeyboardInterrupt):
        propose(dataset, RunLayout(tmp_path), FAST)
    assert not RunLayout(tmp_path).proposals("test").exists()
    calls.clear()
    monkeypatch.undo()
    _interrupt_after(monkeypatch, calls, 99)
    summary = propose(dataset, RunLayout(tmp_path), FAST)
    assert calls == [dataset.images[2].image_id] and summary.computed == 1 and summary.images == 3
    ours, full = (
        read_proposals(RunLayout(tmp_path).proposals("test")),
        read_proposals(RunLayout(run).proposals("test")),
    )
    assert all(np.array_equal(ours[k], full[k]) for k in full)


def test_killed_rerun_leaves_the_previous_file_intact(searched, tmp_path, monkeypatch):
    dataset, _, _ = searched
    propose(dataset, RunLayout(tmp_path), FAST)
    before = RunLayout(tmp_path).proposals("test").read_bytes()
    _interrupt_after(monkeypatch, [], 1)
    with pytest.raises(KeyboardInterrupt):
        propose(dataset, RunLayout(tmp_path), ProposalOptions(workers=1, max_side=200, max_boxes=50))
    assert RunLayout(tmp_path).proposals("test").read_bytes() == before
    assert not list((tmp_path / "proposals").glob("*.tmp"))


def test_unreadable_image_is_an_error_or_skipped(tmp_path):
    root = make_voc(tmp_path / "d", {k: voc_xml([voc_object("cat", (1, 1, 40, 40))]) for k in "abc"})
    (root / "JPEGImages" / "b.jpg").write_bytes(b"not an image")
    dataset = load_dataset(root, "train")
    with pytest.raises(UserError, match=r"b.jpg: not an image"):
        propose(dataset, RunLayout(tmp_path / "run"), FAST)
    summary = propose(dataset, RunLayout(tmp_path / "run"), FAST, skip_bad=True)
    assert summary.images == 2 and "b.jpg" in summary.skipped[0]
    assert set(read_proposals(summary.path)) == {"a", "c"}


def _release_rows(boxes: np.ndarray) -> np.ndarray:
    """Toolkit boxes -> the Fast R-CNN release's (y1, x1, y2, x2) 1-based rows."""
    return np.stack([boxes[:, 1] + 1, boxes[:, 0] + 1, boxes[:, 3], boxes[:, 2]], 1).astype(np.float64)


def test_import_matlab_v5(searched, tmp_path):
    dataset, run, _ = searched
    searched_boxes = read_proposals(RunLayout(run).proposals("test"))
    cells = np.empty((1, len(dataset)), dtype=object)
    for i, record in enumerate(dataset.images):
        cells[0, i] = _release_rows(searched_boxes[record.image_id])
    scipy.io.savemat(tmp_path / "boxes.mat", {"boxes": cells})
    summary = import_mat(dataset, RunLayout(tmp_path / "run"), tmp_path / "boxes.mat")
    imported = read_proposals(summary.path)
    assert all(np.allclose(imported[k], searched_boxes[k]) for k in searched_boxes)
    assert summary.recall == pytest.approx(searched[2].recall)


def test_import_matlab_v73_with_image_names(searched, tmp_path):
    dataset, run, _ = searched
    searched_boxes = read_proposals(RunLayout(run).proposals("test"))
    order = [r.image_id for r in dataset.images][::-1]
    with h5py.File(tmp_path / "boxes73.mat", "w") as h5:  # MATLAB v7.3: HDF5, column-major cells
        refs = h5.create_group("#refs#")
        box_refs, name_refs = [], []
        for i, image_id in enumerate(order):
            box_refs.append(refs.create_dataset(f"b{i}", data=_release_rows(searched_boxes[image_id]).T).ref)
            name_refs.append(
                refs.create_dataset(f"n{i}", data=np.array([[ord(c)] for c in image_id], np.uint16)).ref
            )
        h5.create_dataset("boxes", data=np.array([box_refs]).T, dtype=h5py.ref_dtype)
        h5.create_dataset("images", data=np.array([name_refs]).T, dtype=h5py.ref_dtype)
    imported = read_proposals(import_mat(dataset, RunLayout(tmp_path / "run"), tmp_path / "boxes73.mat").path)
    assert all(np.allclose(imported[k], searched_boxes[k]) for k in searched_boxes)


def test_bad_mat_files(searched, tmp_path):
    dataset, _, _ = searched
    scipy.io.savemat(tmp_path / "wrong.mat", {"rois": np.zeros((2, 4))})
    with pytest.raises(UserError, match=r"wrong.mat: no variable 'boxes' \(found: rois\)"):
        import_mat(dataset, RunLayout(tmp_path), tmp_path / "wrong.mat")
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0] = cells[0, 1] = np.ones((1, 4))
    scipy.io.savemat(tmp_path / "short.mat", {"boxes": cells})
    with pytest.raises(UserError, match=r"short.mat: 2 box matrices but split 'test' has 3 images"):
        import_mat(dataset, RunLayout(tmp_path), tmp_path / "short.mat")
    (tmp_path / "junk.mat").write_bytes(b"MATLAB junk")
    with pytest.raises(UserError, match=r"junk.mat: unreadable .mat file"):
        import_mat(dataset, RunLayout(tmp_path), tmp_path / "junk.mat")
    assert not RunLayout(tmp_path).proposals("test").exists()


def test_options_are_checked():
    with pytest.raises(UserError, match="--mode 'slow'"):
        ProposalOptions(mode="slow")
    with pytest.raises(UserError, match="--max-boxes must be at least 1"):
        ProposalOptions(max_boxes=0)


def test_detect_proposes_as_the_run_did(tmp_path):
    """``searched_with``: the settings every searched split of the run agrees on, else the defaults."""
    run = RunLayout(tmp_path)
    assert proposals.searched_with(run) == ProposalOptions()

    def searched(split: str, **options) -> None:
        path = run.proposals(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        settings = {**asdict(ProposalOptions(**options)), "source": "selective_search"}
        write_manifest(path, stage="propose", options=settings, inputs=[], seconds=0.0)

    searched("trainval", mode="single", max_boxes=500, workers=2)
    searched("test", mode="single", max_boxes=500)
    assert proposals.searched_with(run) == ProposalOptions(mode="single", max_boxes=500)
    searched("val", mode="fast")
    assert proposals.searched_with(run) == ProposalOptions()
