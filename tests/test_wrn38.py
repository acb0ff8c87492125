"""DeepLabv3+ on WideResNet-38: shapes, the original's names and sizes, ImageNet loading, no global side effects."""
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from model.deeplabv3p import DeepLabV3PlusWRN38, deeplabv3p_wrn38
from model.wider_resnet import WiderResNet38, load_wrn38_imagenet
from utils.errors import UserError

TINY = 1 / 16  # same structure, 1/16 of the channels


@pytest.fixture(scope="module")
def full():
    torch.manual_seed(0)
    return deeplabv3p_wrn38(19).eval()


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return DeepLabV3PlusWRN38(5, width_mult=TINY)


@pytest.mark.parametrize("size,s2,deep", [((256, 512), (128, 256), (32, 64)), ((321, 321), (161, 161), (41, 41))])
def test_shapes(tiny, size, s2, deep):
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        s2_features, deep_features = tiny.eval().backbone(x)
        logits = tiny(x)
    assert s2_features.shape == (1, 128 * TINY, *s2)
    assert deep_features.shape == (1, 4096 * TINY, *deep)
    assert logits.shape == (1, 5, *s2)  # half the input resolution, not upsampled
    assert tiny.output_stride_of_logits == 2


def test_full_width_channels_and_size(full):
    with torch.no_grad():
        s2, deep = full.backbone(torch.randn(1, 3, 64, 64))
        assert full(torch.randn(1, 3, 64, 64)).shape == (1, 19, 32, 32)
    assert s2.shape == (1, 128, 32, 32) and deep.shape == (1, 4096, 8, 8)
    total = sum(p.numel() for p in full.parameters())
    assert abs(total / 137.1e6 - 1) < 0.01, total


def test_key_names_are_the_originals(full):
    keys = set(full.state_dict())
    expected = [
        "backbone.mod1.conv1.weight",
        "backbone.mod2.block1.bn1.0.weight", "backbone.mod2.block1.bn1.0.running_var",
        "backbone.mod2.block1.convs.conv1.weight", "backbone.mod2.block1.convs.bn2.0.bias",
        "backbone.mod2.block3.convs.conv2.weight", "backbone.mod4.block6.convs.conv2.weight",
        "backbone.mod5.block3.bn1.0.running_mean",
        "backbone.mod6.block1.convs.bn3.0.weight", "backbone.mod6.block1.convs.conv3.weight",
        "backbone.mod7.block1.convs.conv3.weight", "backbone.mod7.block1.convs.bn2.0.weight",
        "aspp.img_conv.0.weight", "aspp.img_conv.1.weight",
        *(f"aspp.features.{k}.{i}.weight" for k in range(4) for i in (0, 1)),
        "bot_fine.weight", "bot_aspp.weight", *(f"final.{i}.weight" for i in (0, 1, 3, 4, 6)),
    ]
    assert not [k for k in expected if k not in keys]
    assert {k for k in keys if "proj_conv" in k} == {f"backbone.mod{n}.block1.proj_conv.weight" for n in range(2, 8)}
    assert {k.split(".convs.")[0] for k in keys if ".conv3." in k} == {"backbone.mod6.block1", "backbone.mod7.block1"}
    assert not [k for k in keys if "bn_out" in k or "classifier" in k]
    assert all(m.bias is None for m in full.modules() if isinstance(m, nn.Conv2d))


def test_layout(full):
    trunk = full.backbone
    assert trunk.mod4.block1.convs.conv1.stride == (2, 2) and trunk.mod4.block1.proj_conv.stride == (2, 2)
    assert trunk.mod5.block2.convs.conv2.dilation == (2, 2) and trunk.mod7.block1.convs.conv2.dilation == (4, 4)
    for mod, p in ((trunk.mod6, 0.3), (trunk.mod7, 0.5)):
        assert type(mod.block1.convs.dropout) is nn.Dropout2d and mod.block1.convs.dropout.p == p
    assert [b[0].dilation for b in full.aspp.features] == [(1, 1), (12, 12), (24, 24), (36, 36)]
    assert full.final[6].weight.shape == (19, 256, 1, 1)


def test_only_final_gets_kaiming_init(full):
    for conv in (full.final[0], full.final[3]):  # He normal: std sqrt(2 / fan_in)
        fan_in = conv.weight[0].numel()
        assert abs(conv.weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.05
    for conv in (full.aspp.features[1][0], full.bot_aspp):  # PyTorch default: U(-1/sqrt(fan_in), ...)
        assert conv.weight.abs().max().item() <= conv.weight[0].numel() ** -0.5


def test_aspp_concatenates_image_pooling_first(tiny):
    with torch.no_grad():
        out = tiny.eval().aspp(torch.randn(2, tiny.backbone.out_channels, 5, 7))
    pooled = out[:, :16]  # 256 channels at full width
    assert torch.allclose(pooled, pooled[:, :, :1, :1].expand_as(pooled))
    assert out.shape[1] == 5 * 16


def test_parameter_groups(tiny):
    groups = tiny.optim_parameters(0.01)
    assert [(g["lr"], g["lr_mult"]) for g in groups] == [(0.01, 1), (0.1, 10)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in tiny.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in tiny.backbone.parameters()}
    assert tiny.unused_parameter_names() == []


def test_original_lists_repeat_tensors(tiny):
    backbone, head = tiny.original_param_lists()
    groups = tiny.optim_parameters(1.0)
    for listed, group, lowest, highest in ((backbone, groups[0], 3, 6), (head, groups[1], 1, 4)):
        counts = Counter(map(id, listed))
        assert set(counts) == {id(p) for p in group["params"]}
        assert min(counts.values()) == lowest and max(counts.values()) == highest
    names = {id(p): n for n, p in tiny.named_parameters()}
    counts = Counter(names[id(p)] for p in backbone + head)
    assert counts["backbone.mod1.conv1.weight"] == 3  # trunk, mod1, conv1
    assert counts["backbone.mod7.block1.convs.bn2.0.weight"] == 6  # trunk, mod7, block1, convs, bn2, BN
    assert counts["aspp.features.2.0.weight"] == 4 and counts["bot_fine.weight"] == 1
    assert (len(backbone), len(head)) == (605, 73)
    assert [len(params) for params in tiny.original_param_lists()] == [605, 73]


def test_factory():
    assert isinstance(deeplabv3p_wrn38(3, width_mult=TINY), DeepLabV3PlusWRN38)
    with pytest.raises(ValueError, match="wrn38"):
        deeplabv3p_wrn38(3, backbone="resnet101")


def write_imagenet_file(path, trunk, drop=None):
    """A file shaped like the original's wider_resnet38.pth.tar, at the trunk's width."""
    state = {f"module.{k}": v for k, v in trunk.state_dict().items() if k != drop}
    width = trunk.out_channels
    state.update({f"module.bn_out.0.{k}": v for k, v in nn.BatchNorm2d(width).state_dict().items()})
    state["module.classifier.fc.weight"] = torch.randn(1000, width)
    state["module.classifier.fc.bias"] = torch.zeros(1000)
    torch.save({"state_dict": state, "epoch": 90}, path)
    return path


def test_imagenet_weights_load_completely(tmp_path):
    torch.manual_seed(1)
    source = WiderResNet38(TINY)
    for bn in source.modules():
        if isinstance(bn, nn.BatchNorm2d):  # not the defaults, so that loading is visible
            bn.running_mean.normal_()
    path = write_imagenet_file(tmp_path / "wider_resnet38.pth.tar", source)
    target = WiderResNet38(TINY)
    count = load_wrn38_imagenet(target, str(path))
    assert count == len(source.state_dict())
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value), name
    assert load_wrn38_imagenet(target, str(tmp_path / "absent.pth.tar")) is None


def test_imagenet_weights_without_num_batches_tracked(tmp_path):
    path = write_imagenet_file(tmp_path / "old.pth.tar", WiderResNet38(TINY))
    state = torch.load(path, weights_only=True)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if "num_batches_tracked" not in k}
    torch.save(state, path)
    assert load_wrn38_imagenet(WiderResNet38(TINY), str(path)) > 0


@pytest.mark.parametrize("kind", ["resnet", "missing", "width"])
def test_wrong_imagenet_file_is_refused(tmp_path, kind):
    path = tmp_path / "wider_resnet38.pth.tar"
    if kind == "resnet":
        torch.save({"state_dict": torchvision.models.resnet18().state_dict()}, path)
        fragments = ["missing", "mod1.conv1.weight", "unexpected", "conv1.weight"]
    elif kind == "missing":
        write_imagenet_file(path, WiderResNet38(TINY), drop="mod3.block2.convs.conv1.weight")
        fragments = ["1 missing (mod3.block2.convs.conv1.weight)"]
    else:
        write_imagenet_file(path, WiderResNet38(TINY * 2))
        fragments = ["of another shape", "mod1.conv1.weight (file (8, 3, 3, 3), model (4, 3, 3, 3))"]
    with pytest.raises(UserError) as error:
        load_wrn38_imagenet(WiderResNet38(TINY), str(path))
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_import_and_build_change_nothing_in_torch_nn():
    # The original assigned nn.Dropout = nn.Dropout2d when building the trunk, for the whole process.
    script = """
import torch.nn as nn
before = {name: getattr(nn, name) for name in dir(nn)}
dropout = nn.Dropout
import model.wider_resnet, model.deeplabv3p
model.deeplabv3p.deeplabv3p_wrn38(3, width_mult=1 / 16)
after = {name: getattr(nn, name) for name in dir(nn)}
assert nn.Dropout is dropout and nn.Dropout is not nn.Dropout2d
changed = sorted(k for k in before.keys() | after.keys() if before.get(k) is not after.get(k))
assert not changed, changed
print("unchanged")
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "unchanged", proc.stderr


def test_train_mode_needs_two_images(tiny):
    # The image-pooling branch has one value per channel and image: BN cannot normalise a batch of
    # one, so the trainer must drop an incomplete last batch of one image (drop_last=True).
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        tiny.train()(torch.randn(1, 3, 65, 65))
    with torch.no_grad():
        assert tiny.eval()(torch.randn(1, 3, 65, 65)).shape == (1, 5, 33, 33)


def test_gradient_reaches_every_parameter(tiny):
    torch.manual_seed(2)
    tiny.train()
    logits = tiny(torch.randn(2, 3, 64, 96))
    target = torch.randint(0, 5, (2, 64, 96))
    F.cross_entropy(F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False), target).backward()
    no_grad = [n for n, p in tiny.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad
