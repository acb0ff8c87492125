"""--eval-mode original | whole | center-crop | sliding (engine/eval_modes.py), on hand-worked cases."""
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import evaluate
from data import get_dataset
from data.config import DataConfig
from engine.eval_modes import EvalMode, _starts, region_logits
from engine.evaluator import eval_collate, evaluate as evaluate_loader
from model import build_segmenter
from tests.helpers import expect_error, run_main, tiny_eval_flags

MODES = [EvalMode("original"), EvalMode("whole"), EvalMode("center-crop", (32, 40)),
         EvalMode("sliding", (32, 40), (16, 24))]


class Pointwise(nn.Module):
    """Logits at the input's resolution, each pixel's from that pixel alone (a 1x1 convolution)."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        return self.conv(x)


class Constant(nn.Module):
    """Logits that favour class k everywhere, at 1/8 of the input (like DeepLabv2)."""

    def __init__(self, num_classes, k):
        super().__init__()
        self.num_classes, self.k = num_classes, k

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.num_classes, -(-x.shape[2] // 8), -(-x.shape[3] // 8))
        out[:, self.k] = 1.0
        return out


def test_window_origins_by_hand():
    assert _starts(100, 40, 30) == [0, 30, 60]
    assert _starts(100, 40, 25) == [0, 25, 50, 60]  # the last window flush with the edge
    assert _starts(30, 40, 20) == [0]  # shorter than a window: one (padded) window


def test_a_window_covering_the_padded_image_equals_whole():
    torch.manual_seed(0)
    model = build_segmenter("resnet18", 4).eval()
    region = torch.randn(3, 50, 70)
    with torch.no_grad():
        whole, _ = region_logits(model, region, EvalMode("whole"))
        sliding, _ = region_logits(model, region, EvalMode("sliding", (64, 96), (32, 32)))  # whole pads to 64x96
    assert whole.shape == (4, 50, 70) and torch.equal(whole, sliding)


def test_a_pointwise_model_gives_the_same_logits_in_every_mode():
    """Each pixel's logits depend on that pixel only: padding, cropping and averaging overlapping
    windows change nothing where a mode predicts (center-crop: inside its window, zero outside)."""
    torch.manual_seed(0)
    model = Pointwise(3).eval()
    region = torch.randn(3, 45, 70)
    with torch.no_grad():
        reference = model(region[None])[0]
        for mode in MODES[1:]:
            logits, mask = region_logits(model, region, mode)
            if mask is None:
                assert torch.allclose(logits, reference, atol=1e-6), mode
            else:  # the central 32x40 of 45x70: rows 6-37, columns 15-54
                assert mask.sum() == 32 * 40 and mask[6:38, 15:55].all()
                assert torch.allclose(logits[:, mask], reference[:, mask], atol=1e-6)
                assert (logits[:, ~mask] == 0).all()


@pytest.fixture(scope="module")
def val_loader(voc_root):
    data = DataConfig("pascal_voc", voc_root, 21, 255, os.path.join(voc_root, "lists", "val.txt"))
    return DataLoader(get_dataset("pascal_voc").build_val(data), batch_size=2, collate_fn=eval_collate)


def test_a_constant_model_gives_the_same_map_in_every_mode(val_loader):
    """Every pixel predicted as class 3 whatever the mode: the confusion is the labels' histogram in
    column 3, over every labeled pixel, or, with center-crop, over those of the central windows."""
    labels = [(val_loader.dataset[i][1], val_loader.dataset[i][2]) for i in range(len(val_loader.dataset))]
    everywhere = sum(((lab[:h, :w] < 21)).sum() for lab, (h, w) in labels)
    in_windows = 0
    for lab, (h, w) in labels:
        ch, cw = min(32, h), min(40, w)
        top, left = (h - ch) // 2, (w - cw) // 2
        in_windows += (lab[top:top + ch, left:left + cw] < 21).sum()
    for mode in MODES:
        confusion = evaluate_loader(Constant(21, 3), val_loader, 21, torch.device("cpu"), mode=mode)
        assert confusion[:, [c for c in range(21) if c != 3]].sum() == 0, mode
        assert confusion[:, 3].sum() == (in_windows if mode.mode == "center-crop" else everywhere), mode


def test_evaluate_py_in_every_mode(voc_root, tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(build_segmenter("resnet18", 21).state_dict(), tmp_path / "VOC_1.pth")
    base = tiny_eval_flags(voc_root, tmp_path / "VOC_1.pth", tmp_path / "r")
    results = {}
    for extra in ([], ["--eval-mode", "whole"], ["--eval-mode", "center-crop", "--eval-window", "32,40"],
                  ["--eval-mode", "sliding", "--eval-window", "32,40"]):
        code, out, err = run_main(evaluate.main, base + extra, capsys)
        assert code == 0 and "meanIOU" in out, err
        results[" ".join(extra)] = out.split("meanIOU")[1].split()[0]
    assert len(results) == 4
    expect_error(evaluate.main, base + ["--eval-mode", "sliding"], capsys, "--eval-mode sliding needs --eval-window")
    expect_error(evaluate.main, base + ["--eval-stride", "16,16"], capsys, "--eval-stride is for --eval-mode sliding")


def test_the_validation_during_training_takes_the_mode(voc_root, tmp_path, capsys):
    import json
    import train_s4GAN_wrn38
    argv = ["--data-dir", voc_root, "--data-list", os.path.join(voc_root, "lists", "train_aug.txt"),
            "--val-list", os.path.join(voc_root, "lists", "val.txt"), "--wrn-width-mult", "0.0625",
            "--restore-from", "none", "--input-size", "64,64", "--batch-size", "2", "--batch-size-unlab", "2",
            "--num-workers", "0", "--labeled-ratio", "0.5", "--split-id", "none", "--num-steps", "1",
            "--val-every", "1", "--val-images", "0", "--checkpoint-dir", str(tmp_path / "ck"),
            "--out", str(tmp_path / "out")]
    scores = {}
    for mode in (["--eval-mode", "original"], ["--eval-mode", "sliding", "--eval-window", "48,48"]):
        code, _, err = run_main(train_s4GAN_wrn38.main, argv + mode + ["--checkpoint-dir", str(tmp_path / mode[1])],
                                capsys)
        assert code == 0, err
        records = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
        scores[mode[1]] = [r["val_miou"] for r in records if "val_miou" in r][-1]
    # the same weights (same seed), other logits: the sliding windows see the images in other pieces
    assert scores["original"] != scores["sliding"]
    expect_error(train_s4GAN_wrn38.main, argv + ["--eval-mode", "center-crop"], capsys, "needs --eval-window")
