"""Run configs: every shipped config is made of options that exist, and a resolved config reads back
as the same config; mistakes are one-line errors naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.config.run_config import load_config, resolved_toml
from stages.core.errors import UserError
from stages.networks.options import CompressOptions
from stages.pipeline.run import plan

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


def test_configs_are_shipped():
    assert {p.name for p in CONFIGS} >= {
        "demo.toml",
        "voc07_rcnn_alexnet.toml",
        "voc07_spp_zf5.toml",
        "voc07_fast_vgg16.toml",
        "voc07_faster_vgg16.toml",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_key_of_a_shipped_config_is_an_option(path, tmp_path):
    config = load_config(path)  # raises on any key that is no option, or a value of the wrong type
    again = tmp_path / "config.toml"
    again.write_text(resolved_toml(config), encoding="utf-8")
    assert load_config(again) == config


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name.startswith("voc07")], ids=lambda p: p.name)
def test_paper_configs_carry_the_papers_figures(path):
    config = load_config(path)
    for settings in config.methods.values():
        paper = settings.papers.get("")
        assert paper is not None and paper.map is not None and paper.source


def test_the_faster_config_runs_no_selective_search(tiny_demo, tmp_path):
    """Its one method reads no proposals: the plan has no propose step, and `[detect]` runs the RPN."""
    path = CONFIGS[0].with_name("voc07_faster_vgg16.toml")
    config = load_config(path, [f"data.root={tiny_demo}", f"run.folder={tmp_path / 'run'}"])
    names = [item.step.name for item in plan(config)]
    assert names[:2] == ["faster finetune", "faster evaluate test"], names
    assert not any(name.startswith("propose") for name in names), names


def test_demo_config_holds_the_demo_settings():
    config = load_config(CONFIGS[0].with_name("demo.toml"))
    assert config.propose.mode == "single"
    assert config.pretrain is not None and config.pretrain.iterations == 600
    fast = config.methods["fast"]
    finetune = fast.tables["finetune"]
    assert finetune.sampling.max_size == 1666 and finetune.test_scale == 1000
    assert fast.tables["compress"] == CompressOptions(128, 32)
    assert [variant.label for variant in fast.variants] == ["", " + SVD"]
    features = config.methods["spp"].tables["features"]
    assert features.scales == (640, 1280) and features.compression == "none"
    assert list(config.methods["spp"].tables) == ["finetune", "features", "svm", "bbox"]
    rpn = config.methods["faster"].tables["finetune"].rpn
    assert rpn.anchor_sizes == (32, 64, 128, 256) and (rpn.train_pre_nms, rpn.test_pre_nms) == (2000, 1000)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[fast.finetune]\nitrations = 3\n",
            "[fast.finetune] itrations: not an option; did you mean iterations?",
        ),
        ("[propose]\nmax_boxes = 'many'\n", "propose.max_boxes: expected an integer, got 'many'"),
        ("[propose]\nmode = 'slow'\n", "[propose] --mode 'slow': choose single, fast, quality"),
        ("[spp.features]\nscales = 640\n", "spp.features.scales: expected a list, got 640"),
        ("[run]\nmethods = ['yolo']\n", "methods ['yolo']: choose among rcnn, spp, fast"),
        ("[fast.svm]\nC = 1.0\n", "[fast] svm: not an option"),
        ("[detect]\nmethod = 'spp'\n[run]\nmethods = ['fast']\n", "[detect] method 'spp' is not one of"),
        ("[data\nroot = 1\n", "not valid TOML"),
    ],
)
def test_mistakes_are_one_line_errors_naming_file_and_key(tmp_path, text, message):
    path = _config(tmp_path, text)
    with pytest.raises(UserError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_settings_override_the_file_and_the_run_device_fills_every_stage(tmp_path):
    path = _config(tmp_path, "[run]\ndevice = 'cpu'\n[fast.finetune]\niterations = 7\ndevice = 'auto'\n")
    config = load_config(
        path,
        ["fast.finetune.sampling.scales=[480, 576]", "data.train=train", "rcnn.finetune.learning_rate=1"],
        data_root="elsewhere",
    )
    fast = config.methods["fast"].tables["finetune"]
    assert fast.iterations == 7 and fast.device == "auto"  # its own table wins over [run]
    assert fast.sampling.scales == (480, 576)
    assert config.methods["rcnn"].tables["finetune"].learning_rate == 1.0
    assert config.methods["rcnn"].tables["finetune"].device == "cpu"
    assert config.methods["spp"].tables["features"].device == "cpu"
    assert (config.data.root, config.data.train) == ("elsewhere", "train")
    with pytest.raises(UserError, match=r"give table\.key=value"):
        load_config(path, ["iterations"])
