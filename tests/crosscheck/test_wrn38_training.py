"""train_s4GAN_wrn38.py against the original's loop: three iterations of s4GAN with DeepLabv3+ on
WRN-38 on Cityscapes, compared as in test_steps.py (tests/crosscheck/training.py), and its validation."""
import json
import os

import numpy as np
import pytest
import torch

import train_s4GAN_wrn38
from engine.validation import Validator
from methods.s4gan import S4GANStep
from tests.crosscheck.common import fmt, linked_workdir, make_city_data, result_txt_differences, write_wrn38_imagenet
from tests.crosscheck.conftest import with_our_flags
from tests.crosscheck.recording import OurRun
from tests.crosscheck.training import ITERATIONS, compare_loaders, compare_training, run_theirs

pytestmark = pytest.mark.original

CITY_ARGV = ["--dataset", "cityscapes", "--num-classes", "19", "--ignore-label", "250", "--labeled-ratio", "0.5", "--batch-size", "2", "--batch-size-unlab", "2",
             "--input-size", "256,512", "--num-steps", str(ITERATIONS), "--learning-rate", "1e-3",
             "--learning-rate-D", "1e-5", "--num-workers", "0", "--log-every", "1", "--save-pred-every", "1000"]


def test_s4gan_cityscapes_wrn38(original, module_tmp, report):
    """train_s4GAN_wrn38.py on Cityscapes (DeepLabv3+ on WRN-38, 256x512, batch 2): S's SGD against
    the for-loop SGD of PyTorch 1.9-1.11 over the original's repeated lists (--sgd-mode legacy), D's
    Adam; and its validation after iteration 0 (--val-protocol original), which the original runs
    on its own validation loader (the first image of each batch of --batch-size) through its own
    metric: the images, each prediction, the per-class IoU and result.txt."""
    folder = module_tmp("city_wrn38")
    city = make_city_data(str(folder / "city"), val={"munster": 2, "frankfurt": 1})  # batches of 2: images 0, 2
    argv = ["--data-dir", city, "--split-id", os.path.join(city, "split.pkl")] + CITY_ARGV
    ours = OurRun(folder / "records", S4GANStep, torch.optim.SGD, torch.optim.Adam, choose_thresholds=True,
                  state_at=ITERATIONS - 1)
    confusions, real_validator = [], Validator.__call__
    Validator.__call__ = lambda self, model: confusions.append(real_validator(self, model)) or confusions[-1]
    try:
        with ours.recording():
            train_s4GAN_wrn38.main(with_our_flags("train_s4GAN_wrn38", argv + [  # theirs: our initial trunk
                "--restore-from", "none", "--checkpoint-dir", str(folder / "ours"), "--out", str(folder / "ours_out")]))
    finally:
        Validator.__call__ = real_validator
    trunk = {k[len("backbone."):]: v for k, v in ours.initial["S"].items() if k.startswith("backbone.")}
    workdir = linked_workdir(str(folder / "work"), {"data/city_dataset": city})
    write_wrn38_imagenet(os.path.join(workdir, "pretrained_models", "wider_resnet38.pth.tar"), trunk)
    theirs = run_theirs(original, "train_s4GAN_wrn38", ours, argv, folder, {"S": "sgd1x", "D": "adam"},
                        float_labels=False, workdir=workdir, real_loaders=(3,), extra=["--out", str(folder / "theirs_out")],
                        sorted_walk=True)
    label = "s4GAN, Cityscapes, DeepLabv3+ WRN-38 256x512"
    args = train_s4GAN_wrn38.parse_args(argv)
    compare_training(ours, theirs, label, report, lambda_st=args.lambda_st, lambda_fm=args.lambda_fm)
    compare_loaders(ours, theirs, label, report, {0: 0, 1: 1, 2: 2})
    compare_wrn38_validation(confusions, theirs, folder, report)


def compare_wrn38_validation(confusions, theirs, folder, report):
    with open(folder / "ours_out" / "metrics.jsonl") as f:
        ours_val = [r for r in map(json.loads, f) if "val_miou" in r]
    their_after = [v["after"] for v in theirs["validations"]]
    schedule_ok = [r["iter"] for r in ours_val] == their_after
    report("WRN-38 validation", "the iterations after which it validates (--val-protocol original)",
           f"ours {[r['iter'] for r in ours_val]}, the original {their_after}", schedule_ok)
    assert schedule_ok and their_after == [0]
    with open(folder / "ours_out" / "result.txt") as f:
        table_differences = result_txt_differences(f.read(), theirs["validations"][0]["result_txt"], same_names=False)
    validation = theirs["validations"][0]
    pairs = validation["pairs"]
    confusion_diff = int(np.abs(confusions[0].numpy() - validation["confusion"]).sum())
    miou_diff = abs(ours_val[0]["val_miou"] - validation["miou"])
    ok = not table_differences and confusion_diff == 0 and miou_diff <= 1e-12
    report("WRN-38 validation", f"{len(pairs)} validation images (the first of each batch), {sum(p[1].size for p in pairs)} "
           f"pixels ({len(np.unique(np.concatenate([p[1] for p in pairs])))} classes predicted): the confusion "
           f"matrix, result.txt (per-class IoU as the original rounds it, mIoU; the original's metric names VOC's "
           f"classes for every dataset) and the mIoU logged ({validation['miou']:.4f})",
           f"{confusion_diff} pixels counted elsewhere; result.txt "
           f"{'; '.join(table_differences) if table_differences else 'identical'}; mIoU {fmt(miou_diff)}", ok)
    assert ok


