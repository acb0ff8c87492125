"""Mixed precision, channels-last, SyncBN guard, batched evaluation grouping and the loader workers (CPU)."""
import os

import cv2
import numpy as np
import pytest
import torch

import evaluate
import train_s4GAN
from engine.setup import prepare_module
from model import build_segmenter
from tests.helpers import iou_output, run_main, tiny_eval_flags, tiny_train_flags
from tests.voc_fixture import write_label
from utils.distributed import Env
from utils.errors import UserError


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_and_channels_last_train_resume_and_evaluate_on_cpu(voc_root, tmp_path, capsys, amp):
    flags = tiny_train_flags(voc_root, tmp_path, "--labeled-ratio", "0.5", "--num-steps", "3", "--save-pred-every", "1",
                             "--amp", amp, "--channels-last")
    code, _, err = run_main(train_s4GAN.main, flags, capsys)
    assert code == 0, err
    state = torch.load(tmp_path / "VOC_3.pth", weights_only=True)
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())  # weights stay fp32
    latest = torch.load(tmp_path / "latest.pth", weights_only=True)
    assert bool(latest["scaler"]) == (amp == "fp16")  # the fp16 gradient scaler is part of the state
    code, out, err = run_main(evaluate.main, tiny_eval_flags(voc_root, tmp_path / "VOC_3.pth", tmp_path / "r",
                                                             "--amp", amp, "--channels-last"), capsys)
    assert code == 0 and "meanIOU" in out, err


def test_sync_bn_needs_cuda_under_torchrun():
    env = Env(torch.device("cpu"), rank=0, world_size=2)
    with pytest.raises(UserError, match="--sync-bn needs CUDA"):
        prepare_module(build_segmenter("resnet18", 3), env, sync_bn=True)


def test_single_process_prepare_module_keeps_the_module():
    model = build_segmenter("resnet18", 3)
    wrapped, bare = prepare_module(model, Env(torch.device("cpu")), channels_last=True)
    assert wrapped is bare is model
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.unused_parameter_names() == ["layer5.conv2d_list.2.weight", "layer5.conv2d_list.2.bias",
                                              "layer5.conv2d_list.3.weight", "layer5.conv2d_list.3.bias"]


def test_batched_evaluation_groups_images_of_other_sizes(fresh_voc, tmp_path, capsys):
    """An image larger than the 505 padding is kept whole; batches never pad it further, so batched
    and one-at-a-time evaluation agree."""
    rng = np.random.default_rng(0)
    name = "2007_val_big"
    cv2.imwrite(os.path.join(fresh_voc, "JPEGImages", name + ".jpg"), rng.integers(0, 255, (520, 300, 3), dtype=np.uint8))
    write_label(os.path.join(fresh_voc, "SegmentationClassAug", name + ".png"), rng.integers(0, 21, (520, 300)))
    with open(os.path.join(fresh_voc, "lists", "val.txt"), "a") as f:
        f.write(name + "\n")
    torch.manual_seed(0)
    torch.save(build_segmenter("resnet18", 21).state_dict(), tmp_path / "m.pth")
    outputs = []
    for batch in ("1", "4"):
        code, out, err = run_main(evaluate.main, tiny_eval_flags(fresh_voc, tmp_path / "m.pth", tmp_path / batch,
                                                                 "--batch-size", batch, "--save-output-images"), capsys)
        assert code == 0, err
        outputs.append(iou_output(out))
    assert outputs[0] == outputs[1]
    assert cv2.imread(str(tmp_path / "4" / (name + ".png"))).shape[:2] == (520, 300)


@pytest.mark.parametrize("model_name,backbone,options,left", [("deeplabv2", "resnet18", {}, 0),
                                                               ("deeplabv3p_wrn38", "wrn38", {"wrn_width_mult": 0.0625}, 17)])
def test_fold_batch_norms_gives_the_same_function(model_name, backbone, options, left):
    """BN layers with their own statistics folded into the convolutions before them: the outputs agree
    to float rounding, the BNs that follow a convolution are gone (WRN-38's pre-activation BNs stay),
    and the model given is left as it was."""
    from model.inference import fold_batch_norms
    torch.manual_seed(0)
    model = build_segmenter(backbone, 5, model_name, **options).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batch_norms(model)
    x = torch.randn(2, 3, 65, 65)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == left
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > left
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_evaluate_fold_bn_gives_the_same_numbers(voc_root, tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(build_segmenter("resnet18", 21).state_dict(), tmp_path / "m.pth")
    outputs = []
    for extra in ([], ["--fold-bn", "--channels-last"]):
        code, out, err = run_main(evaluate.main, tiny_eval_flags(voc_root, tmp_path / "m.pth", tmp_path / "r", *extra),
                                  capsys)
        assert code == 0, err
        outputs.append(iou_output(out))
    assert outputs[0] == outputs[1]


def test_worker_default_follows_the_cores_we_may_use(monkeypatch):
    from engine.options import default_num_workers
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_num_workers() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert default_num_workers() == 4


@pytest.mark.parametrize("device,cores,workers", [("cuda", 16, 15), ("cuda", 64, 16), ("cuda", 1, 1),
                                                  ("cpu", 2, 0), ("cpu", 16, 2)])
def test_evaluation_workers_follow_the_cores_and_the_device(monkeypatch, device, cores, workers):
    from engine import options
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert options.eval_num_workers(torch.device(device)) == workers


def test_evaluate_takes_the_workers_given_or_its_default(voc_root, tmp_path, monkeypatch):
    from engine import options
    seen = []
    monkeypatch.setattr(evaluate, "DataLoader", lambda *a, **k: seen.append(k["num_workers"]) or (_ for _ in ()))
    monkeypatch.setattr(options, "eval_num_workers", lambda device: 3)
    torch.save(build_segmenter("resnet18", 21).state_dict(), tmp_path / "m.pth")
    flags = tiny_eval_flags(voc_root, tmp_path / "m.pth", tmp_path / "r")
    k = flags.index("--num-workers")
    without = flags[:k] + flags[k + 2:]
    for extra, expected in (([], 3), (["--num-workers", "1"], 1)):
        evaluate.main(without + extra)
        assert seen[-1] == expected
