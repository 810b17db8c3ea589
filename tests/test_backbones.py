"""The backbone registry: declared geometry against the built modules, weights loading, feature shapes,
the backbone a training stage starts from."""

import pickle

import pytest
import torch
from torch import nn

from stages.core.errors import UserError
from stages.networks.backbones import BACKBONES, Classifier, build_backbone, resolve_backbone
from stages.networks.models import save_model
from stages.runs.layout import RunLayout


def conv_pool_geometry(module: nn.Module) -> list[tuple[str, int, int, int]]:
    """(kind, kernel, stride, padding) of every conv and max pool, in order, read off the modules."""
    found = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            found.append(("conv", m.kernel_size[0], m.stride[0], m.padding[0]))
        elif isinstance(m, nn.MaxPool2d):
            found.append(("pool", m.kernel_size, m.stride, m.padding))
    return found


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_declared_layers_are_the_built_layers(name):
    spec = BACKBONES[name]
    built = build_backbone(name)
    assert conv_pool_geometry(built.conv) == [(x.kind, x.kernel, x.stride, x.padding) for x in spec.layers]
    convs = [m for m in built.conv.modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1].out_channels == spec.conv5_channels
    for block in (built.fc6, built.fc7):
        assert isinstance(block[spec.fc_linear_index], nn.Linear)
    assert built.fc7[spec.fc_linear_index].out_features == spec.fc_dim
    modules = list(built.conv)
    after_lrn = [modules[i - 2] for i, m in enumerate(modules) if isinstance(m, nn.LocalResponseNorm)]
    conv_names = [layer.name for layer in spec.layers if layer.kind == "conv"]
    assert [conv_names[convs.index(m)] for m in after_lrn] == list(spec.lrn_after)


@pytest.mark.parametrize("name,stride", [("alexnet", 16), ("vgg16", 16), ("zf5", 16), ("tiny", 16)])
def test_total_stride(name, stride):
    assert BACKBONES[name].stride == stride


@pytest.mark.parametrize("name", ["tiny", "alexnet", "zf5"])
def test_features_at_the_warp_size(name):
    spec = BACKBONES[name]
    pool5, fc7 = build_backbone(name).eval()(torch.randn(2, 3, spec.input_size, spec.input_size))
    assert pool5.shape == (2, spec.pool5_dim) and fc7.shape == (2, spec.fc_dim)


def test_torchvision_state_dict_loads_into_our_layout(tmp_path):
    import torchvision

    reference = torchvision.models.alexnet(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "alexnet.pth")
    ours = build_backbone("alexnet", tmp_path / "alexnet.pth").eval()
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected_fc7 = reference.classifier[:6](
            torch.flatten(reference.avgpool(reference.features(images)), 1)
        )
        torch.testing.assert_close(ours(images)[1], expected_fc7)


def test_mismatched_weights_name_the_keys(tmp_path):
    state = build_backbone("tiny").state_dict()
    state.pop("fc7.1.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    expected = (
        "bad.pt: does not match the tiny backbone: missing keys fc7.1.weight; unexpected keys extra.weight"
    )
    with pytest.raises(UserError, match=expected):
        build_backbone("tiny", tmp_path / "bad.pt")


def test_weights_are_loaded_without_unpickling_code(tmp_path):
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(print, protocol=2))
    with pytest.raises(UserError, match=r"evil\.pt: holds Python objects besides tensors; refused"):
        build_backbone("tiny", tmp_path / "evil.pt")


def test_imagenet_download_failure_is_a_user_error(monkeypatch):
    import torchvision

    def offline(weights=None):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models, "alexnet", offline)
    with pytest.raises(UserError, match="could not get torchvision's alexnet weights"):
        build_backbone("alexnet", "imagenet")
    with pytest.raises(UserError, match="no ImageNet weights for tiny"):
        build_backbone("tiny", "imagenet")


def test_pool5_is_what_the_spec_declares():
    assert isinstance(build_backbone("tiny").pool5, nn.MaxPool2d)
    assert isinstance(build_backbone("zf5").pool5, nn.AdaptiveMaxPool2d)


def test_the_starting_backbone_names_its_file_and_backbone(tmp_path):
    run = RunLayout(tmp_path / "run")
    with pytest.raises(UserError, match=r"backbone\.pt: not found; make it with `rcnn pretrain"):
        resolve_backbone(run, None, None)
    torch.save(build_backbone("tiny").state_dict(), tmp_path / "plain.pt")
    with pytest.raises(UserError, match="a plain state dict; say which backbone it is with --backbone"):
        resolve_backbone(run, None, str(tmp_path / "plain.pt"))
    backbone, path = resolve_backbone(run, "tiny", str(tmp_path / "plain.pt"))
    assert backbone.spec.name == "tiny" and path == tmp_path / "plain.pt"
    save_model(
        run.pretrain.model,
        Classifier(build_backbone("tiny"), 2),
        kind="pretrain",
        backbone="tiny",
        classes=["a", "b"],
    )
    with pytest.raises(UserError, match="weights of a tiny backbone, but --backbone zf5"):
        resolve_backbone(run, "zf5", None)
    assert resolve_backbone(run, None, None)[1] == run.pretrain.model
