"""The method interface: the registry the shared stages ask, and how a method builds its options."""

import pytest

from stages.core.errors import UserError
from stages.methods import METHODS, get_cached_method, get_method
from stages.methods.base import PLAIN, SVD, CachedFeatureMethod, Method, options_from
from stages.methods.fast.options import FastFinetuneOptions
from stages.methods.rcnn.options import FinetuneOptions
from stages.training.options import TrainingOptions

CACHED_TYPES = [name for name, method in METHODS.items() if isinstance(method, CachedFeatureMethod)]


def test_the_lineage_in_order_each_method_whole():
    assert list(METHODS) == ["rcnn", "spp", "fast", "faster"]
    assert METHODS.with_command("extract-features") == CACHED_TYPES == ["rcnn", "spp"]
    for name, method in METHODS.items():
        assert isinstance(method, Method) and method.name == name and method.label
        assert issubclass(method.finetune_options_type, TrainingOptions)
        assert isinstance(method.finetune_options({}), method.finetune_options_type)
    for method in map(get_cached_method, METHODS.with_command("extract-features")):
        assert isinstance(method, CachedFeatureMethod) and method.region_feature in ("pool5", "pyramid")
    assert [[v.key for v in m.variants] for m in METHODS.values()] == [[""], [""], ["", "svd"], ["", "svd"]]


def test_the_options_the_command_line_shows_are_the_methods_own():
    """Each method package's options module (torch-free, read by the command line) names the option
    types its method object uses."""
    for command, attribute in (
        ("finetune", "finetune_options_type"),
        ("extract-features", "extract_options_type"),
        ("compress", "compress_options_type"),
    ):
        declared = METHODS.command_options(command)
        assert declared == {
            name: getattr(method, attribute)
            for name, method in METHODS.items()
            if getattr(method, attribute, None) is not None
        }


def test_unknown_methods_name_the_choices():
    with pytest.raises(UserError, match="--method 'yolo': choose one of rcnn, spp, fast, faster"):
        get_method("yolo")
    with pytest.raises(UserError, match="--method 'fast': has no feature cache; choose one of rcnn, spp"):
        get_cached_method("fast")


def test_options_take_what_was_given_and_keep_the_papers_defaults():
    options = options_from(FinetuneOptions, {"iterations": 7}, "R-CNN fine-tuning")
    assert options.iterations == 7 and options.learning_rate == FinetuneOptions.learning_rate == 0.001
    with pytest.raises(UserError, match="--test-scale: not an option of R-CNN fine-tuning"):
        options_from(FinetuneOptions, {"test_scale": 600}, "R-CNN fine-tuning")
    with pytest.raises(UserError, match="--backbone: SPP-net fine-tunes on cached pyramids"):
        get_method("spp").finetune_options({"backbone": "tiny"})


def test_fast_rcnn_scales_set_its_sampling():
    fast = get_method("fast")
    assert fast.finetune_options({}) == FastFinetuneOptions()
    single = fast.finetune_options({"scales": (480,)})
    assert single.sampling.scales == (480,) and single.sampling.max_size == 1000
    several = fast.finetune_options({"scales": (480, 576, 688, 864, 1200)})
    assert several.sampling.max_size == 2000 and several.resolved_test_scale == 600


def test_faster_rcnn_anchor_options_set_its_rpn():
    faster = get_method("faster")
    options = faster.finetune_options({"anchor_sizes": (16, 32), "anchor_ratios": (1.0,), "scales": (480,)})
    assert options.rpn.anchor_sizes == (16, 32) and options.rpn.anchors_per_cell == 2
    assert options.rpn.test_post_nms == 300 and options.resolved_test_scale == 480
    with pytest.raises(UserError, match="--anchor-ratios"):
        faster.finetune_options({"anchor_ratios": (0.0,)})


def test_compressed_is_asked_only_of_a_method_that_has_it():
    assert get_method("fast").variant(compressed=True) == SVD
    assert get_method("rcnn").variant(compressed=False) == PLAIN
    with pytest.raises(UserError, match="--compressed: R-CNN has no compressed model"):
        get_method("rcnn").variant(compressed=True)
