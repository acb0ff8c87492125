"""--fidelity original reproduces the original's numerics; fixed changes exactly the listed quirks."""
import json

import pytest
import torch
import torch.nn.functional as F

import evaluate
import train_full
import train_s4GAN
from data.transforms import context_train_normalization
from methods.mlmt.fusion import MLMTFusion
from methods.s4gan import S4GANStep
from model import build_discriminator, build_segmenter
from tests.crosscheck.old_optim import SGD041, Adam041
from tests.helpers import expect_error, run_main, tiny_eval_flags, tiny_train_flags
from utils.amp import Precision
from utils.optim import LegacyAdam, LegacySGD, segmenter_optimizer


# ---------------------------------------------------------------- legacy SGD vs PyTorch 0.4's loop
# (the 0.4 rule: tests/crosscheck/old_optim.py SGD041, checked on hand-worked values in test_old_optim.py)

def loss_of(params, x):
    return sum(((p * x[: p.numel()].view_as(p)).sin() * (k + 1)).sum() + (p ** 2).sum() for k, p in enumerate(params))


def test_legacy_sgd_equals_pytorch04_over_many_steps():
    torch.manual_seed(0)
    init = [torch.randn(5), torch.randn(3, 4), torch.randn(2, 2, 3)]
    ours = [t.clone().requires_grad_() for t in init]
    ref = [t.clone().requires_grad_() for t in init]
    # multiplicities 1, 3 and 4, interleaved in list order as the original's walk produced them
    ref_list = [ref[0], ref[1], ref[2], ref[1], ref[2], ref[1], ref[2], ref[2]]
    opt = LegacySGD([{"params": ours, "multiplicity": [1, 3, 4]}], lr=0.01, momentum=0.9, weight_decay=5e-4)
    opt_ref = SGD041([{"params": ref_list}], lr=0.01, momentum=0.9, weight_decay=5e-4)
    for step in range(60):
        x = torch.randn(12, generator=torch.Generator().manual_seed(step))
        lr = 0.01 * (1 - step / 60) ** 0.9
        for group in opt.param_groups + opt_ref.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss_of(ours, x).backward()
        opt.step()
        opt_ref.zero_grad()
        loss_of(ref, x).backward()
        opt_ref.step()
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    assert not torch.equal(ours[1], init[1])


def test_legacy_adam_equals_pytorch04_and_differs_from_todays_where_gradients_are_small():
    """LegacyAdam (D's optimizer under the original profile) against PyTorch 0.4's Adam (old_optim.Adam041,
    checked on hand-worked values): the same bits over 60 steps; today's Adam moves a tensor whose
    gradients are near eps differently in the first steps, and the others alike."""
    torch.manual_seed(0)
    init = [torch.randn(5), torch.randn(3, 4), torch.randn(2, 2, 3)]
    runs = {}
    for rule in (LegacyAdam, Adam041, torch.optim.Adam):
        params = [t.clone().requires_grad_() for t in init]
        opt = rule(params, lr=1e-3, betas=(0.9, 0.99))
        for step in range(60):
            x = torch.randn(12, generator=torch.Generator().manual_seed(step))
            opt.zero_grad()
            (loss_of(params[:2], x) + 1e-8 * loss_of(params[2:], x)).backward()  # the last: gradients ~1e-8
            opt.step()
        runs[rule] = params
    assert all(torch.equal(a, b) for a, b in zip(runs[LegacyAdam], runs[Adam041]))
    today = runs[torch.optim.Adam]
    change = [(a - i).norm() / (b - i).norm() for a, b, i in zip(runs[LegacyAdam], today, init)]
    assert abs(change[0] - 1) < 1e-3 and abs(change[1] - 1) < 1e-3  # gradients >> eps: alike
    assert change[2] < 0.9  # gradients ~eps: 0.4's larger effective eps moves it less


def legacy_runs(device, momentum, decay, steps=20):
    """The same 20 steps by LegacySGD's multi-tensor and per-tensor forms: (params, buffers) of each."""
    torch.manual_seed(0)
    init = [torch.randn(5), torch.randn(3, 4), torch.randn(2, 2, 3), torch.randn(7), torch.randn(2)]
    out = []
    for foreach in (True, False):
        params = [t.clone().to(device).requires_grad_() for t in init]
        opt = LegacySGD([{"params": params, "multiplicity": [1, 3, 4, 3, 2]}], lr=0.01, momentum=momentum,
                        weight_decay=decay, foreach=foreach)
        for step in range(steps):
            x = torch.randn(12, generator=torch.Generator().manual_seed(step)).to(device)
            opt.zero_grad(set_to_none=True)
            loss_of(params[:4], x).backward()  # the last one gets no gradient: left alone, as before
            opt.step()
        out.append(([p.detach().cpu() for p in params],
                    [opt.state[p]["momentum_buffer"].cpu() for p in params[:4]] if momentum else []))
    return out


@pytest.mark.parametrize("momentum, decay", [(0.9, 5e-4), (0.0, 5e-4), (0.9, 0.0)])
def test_legacy_sgd_multi_tensor_form_is_bit_identical_to_per_tensor(momentum, decay):
    (a, buffers_a), (b, buffers_b) = legacy_runs("cpu", momentum, decay)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and all(torch.equal(x, y) for x, y in zip(buffers_a, buffers_b))
    torch.manual_seed(0)
    untouched = [torch.randn(5), torch.randn(3, 4), torch.randn(2, 2, 3), torch.randn(7), torch.randn(2)][4]
    assert torch.equal(a[4], untouched)  # no gradient: left alone


def test_legacy_first_step_applies_each_repeat():
    p = torch.zeros(1, requires_grad=True)
    opt = LegacySGD([{"params": [p], "multiplicity": [3]}], lr=1.0, momentum=0.9)
    p.grad = torch.ones(1)
    opt.step()
    # buffer g, then 0.9 g + g, then 0.9 * 1.9 g + g: three steps of one iteration
    assert p.item() == pytest.approx(-(1 + 1.9 + 2.71))


def test_sgd_modes_differ_only_on_the_duplicated_backbone_tensors():
    torch.manual_seed(0)
    base = build_segmenter("resnet18", 3)
    x = torch.randn(2, 3, 33, 33)
    results = {}
    for mode in ("legacy", "standard"):
        model = build_segmenter("resnet18", 3)
        model.load_state_dict(base.state_dict())
        opt = segmenter_optimizer(model, 0.01, 0.9, 5e-4, mode)
        model(x).square().mean().backward()
        opt.step()
        results[mode] = model.state_dict()
        if mode == "legacy":
            assert isinstance(opt, LegacySGD) and sorted(set(opt.param_groups[0]["multiplicity"])) == [1, 3, 4]
        else:
            assert type(opt) is torch.optim.SGD
    for name, value in results["legacy"].items():
        same = torch.equal(value, results["standard"][name])
        if name.startswith("layer5.") or ("bn" in name or "downsample.1" in name) or name == "conv1.weight":
            assert same, name  # head (no repeats), frozen BN, the stem conv (appears once)
        elif name.endswith("weight"):
            assert not same, name


# ---------------------------------------------------------------- profiles

def parsed(script, *argv):
    if script == "evaluate":
        return vars(evaluate.parse_args(["--restore-from", "x", *argv]))
    return vars((train_s4GAN if script == "train_s4GAN" else train_full).parse_args(list(argv)))


@pytest.mark.parametrize("script,changed", [
    ("train_s4GAN", {"aspp_branches": (2, 4), "sgd_mode": ("legacy", "standard"), "d_real_norm": ("labeled", "own"),
                     "context_train_mean": ("reversed", "rgb"), "adam_mode": ("legacy", "standard")}),
    ("train_full", {"aspp_branches": (2, 4), "sgd_mode": ("legacy", "standard")}),
    ("evaluate", {"aspp_branches": (2, 4), "mlmt_fusion": ("multiply", "mask")}),
])
def test_fixed_profile_changes_exactly_the_quirk_flags(script, changed):
    original, fixed = parsed(script), parsed(script, "--fidelity", "fixed")
    diff = {k: (original[k], fixed[k]) for k in original if original[k] != fixed[k] and k != "fidelity"}
    assert diff == changed
    if script == "train_full":
        assert original["context_train_mean"] == fixed["context_train_mean"] == "rgb"


def test_a_quirk_flag_overrides_the_profile():
    args = parsed("train_s4GAN", "--fidelity", "fixed", "--sgd-mode", "legacy")
    assert args["sgd_mode"] == "legacy" and args["aspp_branches"] == 4
    args = parsed("train_s4GAN", "--aspp-branches", "4")
    assert args["aspp_branches"] == 4 and args["sgd_mode"] == "legacy"


def test_context_train_mean_switch():
    assert context_train_normalization("reversed")[0] == (0.406, 0.456, 0.485)
    assert context_train_normalization("rgb")[0] == (0.485, 0.456, 0.406)
    assert context_train_normalization("rgb")[1] == context_train_normalization("reversed")[1]


def test_mlmt_fusion_multiply_lets_a_zeroed_class_win_mask_does_not(tmp_path):
    (tmp_path / "m.txt").write_text("1.0 0.1 0.9\n")
    logits = torch.tensor([-1.0, -3.0, -2.0]).view(1, 3, 1, 1)  # class 1 is "absent" (0.1 < 0.2)
    index = torch.tensor([0])
    multiplied = MLMTFusion(str(tmp_path / "m.txt"), 1, 3, "multiply")(logits, index)
    masked = MLMTFusion(str(tmp_path / "m.txt"), 1, 3, "mask")(logits, index)
    assert multiplied.argmax(1).item() == 1  # 0 beats -1 and -2: the original's quirk
    assert masked.argmax(1).item() == 0
    assert torch.equal(multiplied[:, [0, 2]], masked[:, [0, 2]])


def test_mlmt_file_with_wrong_row_count_is_refused(tmp_path):
    (tmp_path / "m.txt").write_text("1 0 1\n1 1 1\n")
    with pytest.raises(Exception, match="2 rows"):
        MLMTFusion(str(tmp_path / "m.txt"), 3, 3)


class RecordingD(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.inputs = inner, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.inner(x)


def test_d_real_norm_changes_only_the_real_image_channels():
    torch.manual_seed(0)
    seg = build_segmenter("resnet18", 3)
    inputs = {}
    for mode in ("labeled", "own"):
        model = build_segmenter("resnet18", 3)
        model.load_state_dict(seg.state_dict())
        d = RecordingD(build_discriminator(3))
        torch.manual_seed(1)
        step = S4GANStep(model, d, torch.optim.SGD(model.optim_parameters(0.0), lr=0.0),
                         torch.optim.Adam(d.parameters(), lr=0.0), Precision("off", torch.device("cpu")),
                         num_classes=3, ignore_label=255, input_size=(33, 33), lambda_fm=0.1, lambda_st=1.0,
                         threshold_st=0.6, device=torch.device("cpu"), d_real_norm=mode)
        g = torch.Generator().manual_seed(0)
        lab = (torch.randn(2, 3, 33, 33, generator=g) * 50, torch.randint(0, 3, (2, 33, 33), generator=g))
        unl = (torch.randn(2, 3, 33, 33, generator=g) * 60, lab[1])
        real = (torch.randn(2, 3, 33, 33, generator=g) * 20, torch.randint(0, 3, (2, 33, 33), generator=g))
        step(1, labeled=lab, unlabeled=unl, real=real)
        inputs[mode] = d.inputs  # fake (S phase), real (S phase), fake (D phase), real (D phase)
    a, b = inputs["labeled"], inputs["own"]
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert torch.equal(a[1][:, :3], b[1][:, :3])
    assert not torch.equal(a[1][:, 3:], b[1][:, 3:])
    assert b[1][:, 3:].max().item() == pytest.approx(1.0)  # own range -> [0, 1]
    assert a[1][:, 3:].max().item() < 0.5  # the labeled batch's wider range


# ---------------------------------------------------------------- reference forward from the layer table

def _bn(x, sd, prefix, training):
    if training:
        return F.batch_norm(x, None, None, sd[prefix + ".weight"], sd[prefix + ".bias"], True, 0.0, 1e-5)
    return F.batch_norm(x, sd[prefix + ".running_mean"], sd[prefix + ".running_var"], sd[prefix + ".weight"],
                        sd[prefix + ".bias"], False, 0.0, 1e-5)


def reference_deeplabv2_r101(sd, x, training=False):
    """docs/original.md, "DeepLabv2": stem 7x7/2 + BN + ReLU + maxpool 3/2 (ceil); bottlenecks [3,4,23,3] with the stride
    on the first 1x1 conv, dilation 2 (layer3) and 4 (layer4); classifier = d6 + d12 branches."""
    x = F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1", training))
    x = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
    for layer, (blocks, stride, dilation) in enumerate([(3, 1, 1), (4, 2, 1), (23, 1, 2), (3, 1, 4)], start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            s = stride if b == 0 else 1
            out = F.relu(_bn(F.conv2d(x, sd[p + ".conv1.weight"], stride=s), sd, p + ".bn1", training))
            out = F.relu(_bn(F.conv2d(out, sd[p + ".conv2.weight"], padding=dilation, dilation=dilation), sd,
                             p + ".bn2", training))
            out = _bn(F.conv2d(out, sd[p + ".conv3.weight"]), sd, p + ".bn3", training)
            shortcut = x
            if b == 0:
                shortcut = _bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=s), sd, p + ".downsample.1", training)
            x = F.relu(out + shortcut)
    return sum(F.conv2d(x, sd[f"layer5.conv2d_list.{k}.weight"], sd[f"layer5.conv2d_list.{k}.bias"], padding=d,
                        dilation=d) for k, d in ((0, 6), (1, 12)))


@pytest.mark.parametrize("training", [False, True])
def test_original_profile_logits_equal_an_independent_reference(training):
    torch.manual_seed(0)
    model = build_segmenter("resnet101", 21, aspp_branches=2)
    with torch.no_grad():  # non-trivial BN statistics and affine values
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif name.endswith("running_mean") or (name.endswith(("bias", "weight")) and ("bn" in name or "downsample.1" in name)):
                t.normal_(0.0 if not name.endswith("weight") else 1.0, 0.1)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 57, 61) * 40
    model.train(training)
    with torch.no_grad():
        ours = model(x)
        ref = reference_deeplabv2_r101(sd, x, training)
    assert ours.shape == ref.shape == (2, 21, 8, 8)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


# ---------------------------------------------------------------- checkpoints of the original code

def original_style(state):
    """As the original s4GAN trainer saved them: DataParallel keys, no num_batches_tracked (PyTorch 0.4.0)."""
    return {"module." + k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def test_original_checkpoints_load_in_evaluate_restore_from_and_restore_from_d(voc_root, tmp_path, capsys):
    torch.manual_seed(0)
    seg, d = build_segmenter("resnet18", 21), build_discriminator(21)
    torch.save(original_style(seg.state_dict()), tmp_path / "VOC_30000.pth")
    torch.save(original_style(d.state_dict()), tmp_path / "VOC_30000_D.pth")
    code, out, err = run_main(evaluate.main, tiny_eval_flags(voc_root, tmp_path / "VOC_30000.pth", tmp_path / "r"), capsys)
    assert code == 0 and "meanIOU" in out, err
    argv = tiny_train_flags(voc_root, tmp_path / "ck", "--num-steps", "1", "--restore-from-D",
                            str(tmp_path / "VOC_30000_D.pth"))
    argv[argv.index("none")] = str(tmp_path / "VOC_30000.pth")
    code, out, err = run_main(train_s4GAN.main, argv, capsys)
    assert code == 0, err
    n = len(seg.state_dict())
    n_tracked = sum(k.endswith("num_batches_tracked") for k in seg.state_dict())
    assert f"loaded {n - n_tracked} of {n} tensors" in out
    assert f"--restore-from-D {tmp_path / 'VOC_30000_D.pth'}: loaded" in out


def test_both_profiles_train_and_evaluate(voc_root, tmp_path, capsys):
    for profile in ("original", "fixed"):
        ck = tmp_path / profile
        argv = tiny_train_flags(voc_root, ck, "--num-steps", "2", "--labeled-ratio", "0.5", "--fidelity", profile)
        code, _, err = run_main(train_s4GAN.main, argv, capsys)
        assert code == 0, err
        assert json.load(open(ck / "args.json"))["aspp_branches"] == (2 if profile == "original" else 4)
        code, out, err = run_main(evaluate.main, tiny_eval_flags(voc_root, ck / "VOC_2.pth", ck / "r", "--fidelity", profile), capsys)
        assert code == 0 and "meanIOU" in out, err
    code, _, err = run_main(train_full.main, tiny_train_flags(voc_root, tmp_path / "full", "--num-steps", "1",
                                                              "--fidelity", "fixed"), capsys)
    assert code == 0, err
    # evaluating the fixed (4-branch) run with the original profile would silently be wrong: refused
    expect_error(evaluate.main, tiny_eval_flags(voc_root, tmp_path / "fixed" / "VOC_2.pth", tmp_path / "r"), capsys,
                 "--aspp-branches 2", "--aspp-branches 4")


def test_a_run_begun_before_adam_mode_existed_resumes_with_todays_adam(tmp_path):
    """D's optimizer was today's Adam before --adam-mode; such a run continues with it (a note), while a
    fresh run of train_s4GAN.py uses PyTorch 0.4's under the original profile."""
    from engine.state import read_training_state
    args = train_s4GAN.parse_args(["--checkpoint-dir", str(tmp_path), "--resume", "auto"])
    assert args.adam_mode == "legacy"
    saved = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items() if k != "adam_mode"}
    torch.save({"format": "semisup-seg-training-state-1", "args": saved, "world_size": 1}, tmp_path / "latest.pth")
    notes = []
    read_training_state(args, 1, say=notes.append)
    assert args.adam_mode == "standard" and "before --adam-mode existed" in notes[0]
