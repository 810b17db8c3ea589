"""Bad input on the command line, class by class: annotations, images, artifacts damaged between stages,
and a full disk. Each is refused with exit 2 and one line naming the offending file (or, where the
toolkit can go on, repaired or skipped with a warning), and no artifact already in the run is changed."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from stages.datasets.demo import DEMO_CLASSES
from stages.proposals.propose import read_proposals
from stages.runs.layout import RunLayout
from tests.helpers import BILLION_LAUGHS, EXTERNAL_ENTITY, rcnn, run_steps, voc_object, voc_xml

TRAINING = ("--iterations", "2", "--checkpoint-every", "1")
PROPOSE = ("propose", "--split", "trainval", "--workers", "1", "--max-side", "160")


def assert_refused(result, *fragments: str) -> None:
    """Exit 2, no traceback, and one error line, the last, holding every fragment (warnings may come
    before it, progress too)."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert [line.startswith("error:") for line in lines].count(True) == 1, result.output
    assert lines[-1].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path) -> SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_unchanged(folder: Path, before: dict[str, str]) -> None:
    """The files that were in ``folder`` are all there and byte-identical; nothing half-written stays."""
    after = snapshot(folder)
    assert {k: after.get(k) for k in before} == before
    assert not [k for k in after if k.endswith(".tmp")], after


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, run) with proposals, the backbone, R-CNN (fine-tuned for 2 iterations, its SVMs and
    regressors) and Fast R-CNN (fine-tuned for 2 iterations); copy before use."""
    data, base = tiny_run
    run = tmp_path_factory.mktemp("trained") / "run"
    shutil.copytree(base, run)
    run_steps(
        run,
        ("finetune", "--method", "rcnn", "--data", data, *TRAINING),
        ("finetune", "--method", "fast", "--data", data, "--scales", "96", *TRAINING),
        ("extract-features", "--method", "rcnn", "--data", data, "--split", "trainval"),
        ("train-svm", "--method", "rcnn"),
        ("train-bbox", "--method", "rcnn"),
    )
    return data, run


def copies(trained, tmp_path) -> tuple[Path, Path]:
    data, run = trained
    shutil.copytree(data, tmp_path / "data")
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "data", tmp_path / "run"


# Annotations ----------------------------------------------------------------------------------------

BOX = "<bndbox><xmin>{}</xmin><ymin>5</ymin><xmax>40</xmax><ymax>40</ymax></bndbox>"


@pytest.mark.parametrize(
    "xml,problem",
    [
        ("<annotation><object><name>circle</name>", "unreadable annotation"),
        ("<annotation><size><width>80</wid", "unreadable annotation"),
        (BILLION_LAUGHS, "unreadable annotation"),
        (EXTERNAL_ENTITY, "unreadable annotation"),
        (f"<annotation><object><name>circle</name>{BOX.format('five')}</object></annotation>", "non-numeric"),
    ],
    ids=["malformed", "truncated", "entity-expansion", "external-entity", "non-numeric-box"],
)
def test_a_broken_annotation_is_one_line_naming_it(trained, tmp_path, xml, problem):
    data, run = copies(trained, tmp_path)
    victim = sorted((data / "Annotations").glob("*.xml"))[0]
    victim.write_text(xml)
    before = snapshot(run)
    for command in (
        PROPOSE,
        ("finetune", "--method", "fast", "--scales", "96", *TRAINING),
        ("data", "check", "--split", "trainval"),
    ):
        run_option = ("--run", run) if command[0] != "data" else ()
        result = rcnn(*command, "--data", data, *run_option)
        if command[0] == "data":  # the check lists every problem, then exits 2
            assert result.exit_code == 2 and str(victim) in result.output and problem in result.output
        else:
            assert_refused(result, str(victim), problem)
    assert_unchanged(run, before)
    result = rcnn(*PROPOSE, "--data", data, "--run", run, "--skip-bad")
    assert result.exit_code == 0 and "skipped 1 unreadable" in result.output, result.output


@pytest.mark.parametrize(
    "objects,warning",
    [
        ([voc_object("disc", (30, 30, 10, 10))], "dropped 1 empty or inverted boxes"),
        ([voc_object("disc", (5, 5, 500, 40))], "clipped 1 boxes"),
        ([voc_object("dodecahedron", (5, 5, 40, 40))], "dodecahedron"),
    ],
    ids=["degenerate-box", "box-outside-image", "unknown-class"],
)
def test_a_repairable_annotation_is_repaired_with_a_warning(trained, tmp_path, objects, warning):
    data, _ = copies(trained, tmp_path)
    victim = sorted((data / "Annotations").glob("*.xml"))[0]
    height, width = cv2.imread(str(data / "JPEGImages" / f"{victim.stem}.jpg")).shape[:2]
    victim.write_text(voc_xml([voc_object("disc", (2, 2, 30, 30)), *objects], width=width, height=height))
    propose = (*PROPOSE, "--data", data, "--run", tmp_path / "new")
    result = rcnn(*propose, "--classes", ",".join(DEMO_CLASSES))  # an unknown name is counted, not a class
    assert result.exit_code == 0 and warning in result.output, result.output


# Images ---------------------------------------------------------------------------------------------


def break_image(path: Path, kind: str) -> None:
    """Damage the JPEG at ``path`` in the way ``kind`` names."""
    content = path.read_bytes()
    damaged = {
        "truncated": content[:2000],
        "corrupt": content[:200] + bytes(range(256)) * 4,
        "empty": b"",
        "not-an-image": b"<html>an error page saved as .jpg</html>",
    }[kind]
    path.write_bytes(damaged)


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "empty", "not-an-image"])
def test_a_broken_image_is_one_line_naming_it_or_skipped(trained, tmp_path, kind):
    data, run = copies(trained, tmp_path)
    victim = data / "JPEGImages" / f"{(data / 'ImageSets/Main/trainval.txt').read_text().split()[0]}.jpg"
    break_image(victim, kind)
    before = snapshot(run)
    assert_refused(rcnn(*PROPOSE, "--data", data, "--run", run), str(victim))
    assert_refused(rcnn("detect", victim, "--run", run, "--out", tmp_path / "out"), str(victim))
    good = data / "JPEGImages" / f"{(data / 'ImageSets/Main/test.txt').read_text().split()[0]}.jpg"
    result = rcnn("detect", victim, good, "--run", run, "--out", tmp_path / "out", "--skip-bad")
    assert result.exit_code == 0 and "skipped 1 unreadable images" in result.output, result.output
    assert (tmp_path / "out" / f"{good.stem}.json").is_file()
    check = rcnn("data", "check", "--data", data, "--split", "trainval")
    assert check.exit_code == 2 and str(victim) in check.output
    assert_unchanged(run, before)
    fresh = tmp_path / "fresh"
    result = rcnn(*PROPOSE, "--data", data, "--run", fresh, "--skip-bad")
    assert result.exit_code == 0 and "skipped 1 unreadable images" in result.output, result.output
    assert victim.stem not in read_proposals(RunLayout(fresh).proposals("trainval"))
    shutil.copy(run / "backbone.pt", fresh)
    shutil.copy(run / "backbone.manifest.json", fresh)
    result = rcnn("finetune", "--method", "fast", "--data", data, "--run", fresh, "--scales", "96", *TRAINING)
    assert result.exit_code == 0 and "leaving out 1 images that propose skipped" in result.output, (
        result.output
    )


def test_an_image_broken_after_propose_stops_every_stage_that_decodes_it_or_is_skipped(trained, tmp_path):
    """The proposals exist; the image went bad afterwards (a disk error, an interrupted copy). Finished
    artifacts stay as they were (a restarted training stage may have written its checkpoint before it
    met the image). With --skip-bad every stage leaves the image out and says so."""
    data, run = copies(trained, tmp_path)
    victim = data / "JPEGImages" / f"{(data / 'ImageSets/Main/trainval.txt').read_text().split()[0]}.jpg"
    break_image(victim, "truncated")
    before = {k: v for k, v in snapshot(run).items() if not k.endswith(("checkpoint.pt", "log.csv"))}
    on = ("--data", data, "--run", run)
    commands = (
        ("pretrain", "--restart", *TRAINING),
        ("finetune", "--method", "rcnn", "--restart", *TRAINING),
        ("finetune", "--method", "fast", "--scales", "96", "--restart", *TRAINING),
        ("extract-features", "--method", "rcnn", "--split", "trainval"),
        (
            "extract-features",
            "--method",
            "spp",
            "--split",
            "trainval",
            "--scales",
            "96",
            "--before-finetuning",
        ),
        ("evaluate", "--method", "fast", "--split", "trainval"),
    )
    for command in commands:
        assert_refused(rcnn(*command, *on), f"{victim}: truncated or corrupt image")
    assert_unchanged(run, before)
    for command in commands:
        result = rcnn(*command, *on, "--skip-bad")
        assert result.exit_code == 0 and "skipped 1 unreadable images" in result.output, result.output


def write_unusual(path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    if kind == "1x1":
        cv2.imwrite(str(path), pixels[:1, :1])
    elif kind == "gray":
        cv2.imwrite(str(path), pixels[..., 0])
    elif kind == "rgba":
        cv2.imwrite(str(path), np.dstack([pixels, pixels[..., :1]]))
    elif kind == "cmyk":
        Image.fromarray(pixels).convert("CMYK").save(path)
    elif kind == "16-bit":
        cv2.imwrite(str(path), pixels.astype(np.uint16) * 257)
    elif kind == "large":  # 8,000 x 6,000: a 48-megapixel photo
        cv2.imwrite(str(path), cv2.resize(pixels, (8000, 6000), interpolation=cv2.INTER_NEAREST))


@pytest.mark.parametrize(
    "kind,suffix",
    [("1x1", "png"), ("gray", "png"), ("rgba", "png"), ("cmyk", "jpg"), ("16-bit", "png"), ("large", "jpg")],
)
def test_unusual_images_are_detected(trained, tmp_path, kind, suffix):
    _, run = trained
    image = tmp_path / f"{kind}.{suffix}"
    write_unusual(image, kind)
    for method in ("fast", "rcnn"):
        out = tmp_path / method
        result = rcnn(
            "detect", image, "--run", run, "--method", method, "--out", out, "--score-thresh", "-100"
        )
        assert result.exit_code == 0, result.output
        assert (out / f"{kind}.json").is_file() and cv2.imread(str(out / f"{kind}.png")) is not None
        if kind == "1x1":
            assert "no proposals" in result.output


def test_detect_takes_a_folder_and_writes_one_json_for_all(trained, tmp_path):
    data, run = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    for image in sorted((data / "JPEGImages").glob("*.jpg"))[:3]:
        shutil.copy(image, folder)
    everything = tmp_path / "all.json"
    result = rcnn(
        "detect",
        folder,
        "--run",
        run,
        "--out",
        tmp_path / "out",
        "--save-json",
        everything,
        "--score-thresh",
        "0",
    )
    assert result.exit_code == 0, result.output
    found = json.loads(everything.read_text())
    each = [json.loads((tmp_path / "out" / f"{p.stem}.json").read_text()) for p in sorted(folder.iterdir())]
    assert found and found == [d for image in each for d in image]  # the same, in the folder's order


def test_a_broken_image_in_a_folder_says_how_to_go_on_and_subfolders_are_searched(trained, tmp_path):
    data, run = trained
    folder = tmp_path / "photos"
    (folder / "deeper").mkdir(parents=True)
    first, *others = sorted((data / "JPEGImages").glob("*.jpg"))[:3]
    shutil.copy(first, folder)
    for image in others:
        shutil.copy(image, folder / "deeper")
    victim = folder / "deeper" / "broken.jpg"
    shutil.copy(first, victim)
    break_image(victim, "truncated")
    out = ("--run", run, "--out", tmp_path / "out")
    result = rcnn("detect", folder, *out)
    assert result.exit_code == 0 and len(list((tmp_path / "out").glob("*.json"))) == 1, result.output
    result = rcnn("detect", folder, "--recursive", *out)
    assert_refused(result, str(victim), "--skip-bad skips unreadable images")
    result = rcnn("detect", folder, "-r", "--skip-bad", *out)
    assert result.exit_code == 0 and "skipped 1 unreadable images" in result.output, result.output
    assert len(list((tmp_path / "out").glob("*.json"))) == 3


def test_a_damaged_manifest_that_only_a_hint_reads_stops_nothing(trained, tmp_path):
    """Hints name the dataset the run's proposals were made from, read from their manifests; a damaged
    one matters to the stages that read those proposals, not to one that only names them in a hint
    (compress, which reads the network alone)."""
    _, run = copies(trained, tmp_path)
    (run / "proposals" / "test.manifest.json").write_text("{ damaged")
    result = rcnn("compress", "--run", run)
    assert result.exit_code == 0, result.output


def test_detect_refuses_before_any_work_what_it_could_not_write(trained, tmp_path):
    """Outputs that are folders, and two images whose outputs would share a name: refused before a model
    is loaded, naming both files."""
    data, _ = trained
    image = sorted((data / "JPEGImages").glob("*.jpg"))[0]
    twin = tmp_path / "elsewhere" / image.name
    twin.parent.mkdir()
    shutil.copy(image, twin)
    out = ("--run", tmp_path / "no-run", "--out", tmp_path / "out")
    assert_refused(rcnn("detect", image, *out, "--grid", tmp_path), f"{tmp_path}: is a folder", "grid.png")
    assert_refused(rcnn("detect", image, *out, "--save-json", tmp_path), f"{tmp_path}: is a folder")
    assert_refused(rcnn("detect", image, twin, *out), str(image), str(twin), "share the file name stem")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "method,missing", [("fast", "fast/finetune/model.pt"), ("rcnn", "rcnn/features/test.h5")]
)
def test_evaluate_before_its_inputs_names_the_command_that_makes_them(tiny_run, tmp_path, method, missing):
    data, run = tiny_run
    result = rcnn("evaluate", "--data", data, "--split", "test", "--run", run, "--method", method)
    assert_refused(result, missing, "not found; make it with `rcnn ", f"--data {data}")


def test_data_check_words_its_findings_as_they_are(trained, tmp_path):
    """One problem is "1 problem", with no option it does not have; the layout in any case; a VOC
    annotation whose <filename> names another image is a problem."""
    data, _ = copies(trained, tmp_path)
    ids = (data / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    annotation = data / "Annotations" / f"{ids[0]}.xml"
    annotation.write_text(annotation.read_text().replace(f"<filename>{ids[0]}", f"<filename>{ids[1]}"))
    result = rcnn("data", "check", "--data", data, "--format", "VOC")
    assert result.exit_code == 2 and "1 problem:" in result.output and "--skip-bad" not in result.output
    assert f"name in <filename> another image than their id's (first: {annotation})" in result.output
    result = rcnn("data", "check", "--data", data, "--format", "xml")
    assert result.exit_code == 2 and "'xml' is not one of 'voc', 'coco', 'yolo'" in result.output
    assert "Value error" not in result.output


def test_a_folder_given_for_a_file_is_named_as_a_folder(tiny_demo, tmp_path):
    result = rcnn("propose", "--data", tiny_demo, "--split", "test", "--run", tmp_path, "--import", tmp_path)
    assert_refused(result, f"{tmp_path}: is a folder; give the .mat file")


@pytest.mark.slow
def test_the_detect_memory_bench_runs_detect_on_each_size(trained, tmp_path):
    data, run = trained
    image = next((data / "JPEGImages").glob("*.jpg"))
    result = rcnn("bench", "detect-memory", "--run", run, "--image", image, "--long-sides", "900")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if " x " in line and "│" in line]
    assert len(rows) == 2 and "900" in rows[1]  # the image as it is, then enlarged to 900 px


# Artifacts damaged between stages ---------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 16)


def foreign(path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"weights": print}))


def other_tensors(path: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(3)}, path)


FINETUNE_FAST = ("finetune", "--method", "fast", "--scales", "96")
FINETUNE_RCNN = ("finetune", "--method", "rcnn")
EVALUATE_FAST = ("evaluate", "--method", "fast", "--split", "test")


@pytest.mark.parametrize(
    "artifact,damage,command,problem",
    [
        ("proposals/trainval.h5", truncate, FINETUNE_FAST, "proposals"),
        ("proposals/trainval.h5", garble, FINETUNE_RCNN, "proposals"),
        ("backbone.pt", truncate, FINETUNE_RCNN, "truncated or damaged"),
        ("backbone.pt", foreign, FINETUNE_FAST, "could run code"),
        (
            "backbone.pt",
            garble,
            ("extract-features", "--method", "spp", "--split", "test", "--before-finetuning"),
            "not a PyTorch",
        ),
        ("fast/finetune/model.pt", truncate, EVALUATE_FAST, "truncated"),
        ("fast/finetune/model.pt", other_tensors, EVALUATE_FAST, "not a model file written by rcnn"),
        (
            "rcnn/finetune/model.pt",
            foreign,
            ("extract-features", "--method", "rcnn", "--split", "test"),
            "code",
        ),
        ("fast/finetune/checkpoint.pt", truncate, FINETUNE_FAST, "--restart"),
        ("fast/finetune/checkpoint.pt", other_tensors, FINETUNE_FAST, "not a checkpoint"),
    ],
)
def test_a_damaged_artifact_is_one_line_naming_it(trained, tmp_path, artifact, damage, command, problem):
    data, run = copies(trained, tmp_path)
    damage(run / artifact)
    before = snapshot(run)
    extra = TRAINING if command[0] in ("finetune", "pretrain") and "--iterations" not in command else ()
    result = rcnn(*command, *extra, "--data", data, "--run", run)
    assert_refused(result, str(run / artifact), problem)
    assert_unchanged(run, before)


@pytest.mark.parametrize("damage", [truncate, garble])
def test_a_damaged_feature_cache_is_one_line_naming_it(trained, tmp_path, damage):
    _, run = copies(trained, tmp_path)
    cache = RunLayout(run).method("rcnn").features("trainval")
    damage(cache)
    before = snapshot(run)
    assert_refused(rcnn("train-svm", "--method", "rcnn", "--run", run), str(cache))
    assert_unchanged(run, before)


# A full disk ----------------------------------------------------------------------------------------


def test_a_full_disk_is_a_user_error_and_the_rerun_resumes(tiny_demo, tmp_path, monkeypatch):
    """Simulated: the third proposals shard write fails with ENOSPC (see the next test for a real small
    file system where the machine allows mounting one)."""
    writes = {"count": 0}
    savez = np.savez

    def full_after_two(file, *args, **kwargs):
        writes["count"] += 1
        if writes["count"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return savez(file, *args, **kwargs)

    propose = (*PROPOSE, "--data", tiny_demo)
    monkeypatch.setattr("stages.runs.processes.PART_IMAGES", 1)
    monkeypatch.setattr(np, "savez", full_after_two)
    run = tmp_path / "run"
    result = rcnn(*propose, "--run", run)
    assert_refused(result, str(run / "proposals"), "no space left on the device; finished work is kept")
    monkeypatch.setattr(np, "savez", savez)
    result = rcnn(*propose, "--run", run)
    assert result.exit_code == 0 and "2 of 5 images already done" in result.output, result.output
    straight = tmp_path / "straight"
    assert rcnn(*propose, "--run", straight).exit_code == 0
    resumed, reference = (read_proposals(RunLayout(r).proposals("trainval")) for r in (run, straight))
    assert resumed.keys() == reference.keys()
    for image_id, boxes in reference.items():
        np.testing.assert_array_equal(resumed[image_id], boxes)


def test_a_full_disk_on_a_real_file_system(tiny_run, tmp_path):
    """A tmpfs filled up to 2 MiB takes the proposals but not pre-training's checkpoint (7.6 MB); once
    space is freed, pre-training runs. Needs permission to mount (root in a container that allows it);
    skipped elsewhere."""
    data, base = tiny_run
    small = tmp_path / "small"
    small.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    try:
        run = small / "run"
        shutil.copytree(base / "proposals", run / "proposals")
        before = snapshot(run)
        filler = small / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(small).free - 2 * 2**20))
        result = rcnn(
            "pretrain", "--data", data, "--run", run, "--iterations", "3", "--checkpoint-every", "1"
        )
        assert_refused(result, str(run / "pretrain"), "no space left on the device")
        assert_unchanged(run, before)
        filler.unlink()
        result = rcnn(
            "pretrain", "--data", data, "--run", run, "--iterations", "3", "--checkpoint-every", "1"
        )
        assert result.exit_code == 0, result.output
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_an_image_too_small_for_any_proposal_goes_through_every_stage(trained, tmp_path):
    """A 3 x 3 image in both splits: no proposals, a warning, and no stage fails on it."""
    data, run = copies(trained, tmp_path)
    cv2.imwrite(str(data / "JPEGImages" / "speck.jpg"), np.full((3, 3, 3), 128, np.uint8))
    (data / "Annotations" / "speck.xml").write_text(voc_xml([], width=3, height=3))
    for split in ("trainval", "test"):
        listed = data / "ImageSets" / "Main" / f"{split}.txt"
        listed.write_text(listed.read_text() + "speck\n")
    shutil.rmtree(run / "proposals")
    on = ("--data", data)
    result = rcnn(*PROPOSE, *on, "--run", run)
    assert result.exit_code == 0 and "1 images have no proposals" in result.output, result.output
    run_steps(
        run,
        ("propose", *on, "--split", "test", "--workers", "1", "--max-side", "160"),
        ("finetune", "--method", "rcnn", *on, "--restart", *TRAINING),
        ("extract-features", "--method", "rcnn", *on, "--split", "trainval"),
        ("extract-features", "--method", "rcnn", *on, "--split", "test"),
        (
            "extract-features",
            "--method",
            "spp",
            *on,
            "--split",
            "trainval",
            "--scales",
            "96",
            "--before-finetuning",
        ),
        ("finetune", "--method", "spp", *on, "--restart", *TRAINING),
        ("extract-features", "--method", "spp", *on, "--split", "trainval", "--scales", "96"),
        ("extract-features", "--method", "spp", *on, "--split", "test", "--scales", "96"),
        ("finetune", "--method", "fast", *on, "--scales", "96", "--restart", *TRAINING),
        ("train-svm", "--method", "rcnn"),
        ("train-bbox", "--method", "rcnn"),
        ("train-svm", "--method", "spp"),
        ("train-bbox", "--method", "spp"),
        ("evaluate", "--method", "rcnn", *on, "--split", "test"),
        ("evaluate", "--method", "spp", *on, "--split", "test"),
        ("evaluate", "--method", "fast", *on, "--split", "test"),
    )
