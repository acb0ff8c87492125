import pytest
import torch
import torch.nn.functional as F
import torchvision

from model import build_discriminator, build_segmenter
from methods.s4gan import discriminator_input, minmax_scale
from model.weights import load_matching


@pytest.fixture(scope="module")
def r101():
    torch.manual_seed(0)
    return build_segmenter("resnet101", 21).eval()


@pytest.mark.parametrize("size,expected", [((321, 321), (41, 41)), ((505, 505), (64, 64)), ((256, 512), (33, 65))])
def test_deeplabv2_output_stride_8(r101, size, expected):
    with torch.no_grad():
        out = r101(torch.randn(1, 3, *size))
    assert out.shape == (1, 21, *expected)


def test_deeplabv2_layout_follows_the_original(r101):
    block = r101.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)  # stride on the 1x1 conv
    assert r101.layer3[5].conv2.dilation == (2, 2) and r101.layer4[1].conv2.dilation == (4, 4)
    assert r101.maxpool.ceil_mode
    frozen = [n for n, p in r101.named_parameters() if not p.requires_grad]
    assert len(frozen) == 208 and all(".bn" in n or "bn1" in n or "downsample.1" in n for n in frozen)
    assert abs(sum(p.numel() for p in r101.parameters()) / 1e6 - 44.05) < 0.01


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_small_backbones_keep_output_stride(backbone):
    model = build_segmenter(backbone, 5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 65, 97)).shape == (1, 5, 9, 13)


def test_bn_stays_in_train_mode_but_affine_is_frozen():
    model = build_segmenter("resnet18", 3).train()
    before = model.bn1.running_mean.clone()
    model(torch.randn(2, 3, 33, 33) * 50)
    assert not torch.equal(before, model.bn1.running_mean)  # batch statistics update the running stats
    assert not model.bn1.weight.requires_grad


def test_classifier_sums_two_or_four_branches():
    torch.manual_seed(0)
    x = torch.randn(1, 512, 9, 9)
    for branches in (2, 4):
        model = build_segmenter("resnet18", 4, aspp_branches=branches)
        convs = model.layer5.conv2d_list
        expected = sum(convs[k](x) for k in range(branches))
        assert torch.allclose(model.layer5(x), expected, atol=1e-6)
    # with 2 branches the d=18 and d=24 convs get no gradient, as in the original
    model = build_segmenter("resnet18", 4, aspp_branches=2)
    model(torch.randn(1, 3, 33, 33)).sum().backward()
    grads = [c.weight.grad for c in model.layer5.conv2d_list]
    assert grads[0] is not None and grads[1] is not None and grads[2] is None and grads[3] is None


def test_parameter_groups_head_at_10x_and_legacy_multiplicity(r101):
    groups = r101.optim_parameters(2.5e-4)
    assert groups[0]["lr"] == 2.5e-4 and groups[1]["lr"] == pytest.approx(2.5e-3)
    assert len(groups[0]["params"]) == 104 and len(groups[1]["params"]) == 8
    assert all(p.requires_grad for p in groups[0]["params"])
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in r101.layer5.parameters()}
    counts = r101.legacy_multiplicities()
    assert sorted(counts).count(3) == 99 and counts.count(4) == 4 and counts.count(1) == 1
    assert sum(counts) == 314


def test_conv_init_is_normal_001():
    torch.manual_seed(0)
    model = build_segmenter("resnet50", 21)
    w = model.layer3[0].conv2.weight
    assert abs(w.std().item() - 0.01) < 0.001 and abs(w.mean().item()) < 0.001


def test_imagenet_state_dict_with_torchvision_names_loads_every_backbone_tensor(r101):
    reference = torchvision.models.resnet101().state_dict()  # random weights, real key names
    model = build_segmenter("resnet101", 21)
    loaded, mismatched = load_matching(model, reference, "fake.pth")
    own = model.state_dict()
    backbone_keys = [k for k in own if not k.startswith("layer5.")]
    assert not mismatched and loaded == len(backbone_keys) == len(own) - 8
    assert all(torch.equal(own[k], reference[k]) for k in backbone_keys)


@pytest.mark.parametrize("size,feature_map", [((321, 321), (20, 20)), ((256, 512), (16, 32)), ((41, 41), (2, 2))])
def test_discriminator_shapes_and_global_pool(size, feature_map):
    torch.manual_seed(0)
    d = build_discriminator(21).eval()
    x = torch.rand(2, 24, *size)
    prob, feats = d(x)
    assert prob.shape == (2, 1) and feats.shape == (2, 512, 1, 1)
    assert ((prob > 0) & (prob < 1)).all()
    # global average pooling equals the original's fixed kernel where the kernel covers the map
    h = x
    for conv in (d.conv1, d.conv2, d.conv3, d.conv4):
        h = F.leaky_relu(conv(h), 0.2)
    assert h.shape[-2:] == feature_map
    fixed = F.avg_pool2d(h, feature_map)
    assert torch.allclose(feats, fixed, atol=1e-6)
    assert torch.allclose(prob, torch.sigmoid(d.fc(fixed.flatten(1))), atol=1e-6)


def test_discriminator_input_minmax_over_whole_batch():
    probs = torch.rand(2, 3, 4, 4)
    images = torch.tensor([-10.0, 30.0]).view(2, 1, 1, 1).expand(2, 3, 4, 4)
    out = discriminator_input(probs, images)
    assert out.shape == (2, 6, 4, 4)
    assert out[0, 3:].eq(0).all() and out[1, 3:].eq(1).all()
    # the original's real branch: own minimum, another batch's range
    ref = torch.tensor([0.0, 80.0])
    assert torch.allclose(minmax_scale(images, ref)[1], torch.full((3, 4, 4), 0.5))
