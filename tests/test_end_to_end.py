"""Train two steps with each trainer, then evaluate the checkpoint (R18, small crops, CPU)."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import train_full
import train_s4GAN
from tests.helpers import iou_output, run_main, run_subprocess, tiny_eval_flags, tiny_train_flags


@pytest.fixture(scope="module")
def s4gan_run(voc_root, module_tmp):
    ckpt = module_tmp("s4gan")
    argv = tiny_train_flags(voc_root, ckpt, "--num-steps", "3", "--save-pred-every", "1", "--labeled-ratio", "0.5",
                            "--log-every", "1")
    code, _, _ = run_main(train_s4GAN.main, argv)
    return ckpt, code


def test_s4gan_run_writes_the_original_files(s4gan_run):
    ckpt, code = s4gan_run
    assert code == 0
    files = set(os.listdir(ckpt))
    assert {"VOC_1.pth", "VOC_1_D.pth", "VOC_3.pth", "VOC_3_D.pth", "train_voc_split.pkl", "latest.pth",
            "args.json", "metrics.jsonl"} <= files
    state = torch.load(ckpt / "VOC_3.pth", weights_only=True)
    assert "layer5.conv2d_list.0.weight" in state and not any(k.startswith("module.") for k in state)
    with open(ckpt / "train_voc_split.pkl", "rb") as f:
        perm = pickle.load(f)
    assert perm.dtype == np.int64 and sorted(perm.tolist()) == list(range(6))
    records = [json.loads(line) for line in open(ckpt / "metrics.jsonl")]
    assert [r["iter"] for r in records] == [0, 1, 2]
    assert {"loss_ce", "loss_fm", "loss_st", "loss_S", "loss_D", "above_st", "lr"} <= set(records[0])


def test_s4gan_prints_losses_and_selection_count(voc_root, tmp_path, capsys):
    argv = tiny_train_flags(voc_root, tmp_path, "--num-steps", "2", "--log-every", "1")
    code, out, _ = run_main(train_s4GAN.main, argv, capsys)
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("iter")]
    assert len(lines) == 2 and all(k in lines[1] for k in ("loss_ce", "loss_fm", "loss_D", "above_st"))


def test_train_full_then_evaluate_with_images(voc_root, tmp_path, capsys):
    argv = tiny_train_flags(voc_root, tmp_path / "ck", "--num-steps", "2", "--labeled-ratio", "0.5",
                            "--split-id", "none")
    code, _, err = run_main(train_full.main, argv, capsys)
    assert code == 0, err
    assert os.path.isfile(tmp_path / "ck" / "VOC_2.pth") and not os.path.exists(tmp_path / "ck" / "VOC_2_D.pth")
    code, out, err = run_main(evaluate.main, tiny_eval_flags(voc_root, tmp_path / "ck" / "VOC_2.pth",
                                                             tmp_path / "res", "--save-output-images"), capsys)
    assert code == 0, err
    assert "class  0 background" in out and "meanIOU: " in out
    result = (tmp_path / "res" / "result.txt").read_text().splitlines()
    assert len(result) == 22 and result[-1].startswith("meanIOU: ")
    miou = float(result[-1].split()[1])
    assert 0.0 <= miou <= 1.0
    png = Image.open(tmp_path / "res" / "2007_val_000.png")
    assert png.mode == "P" and png.size == (60, 70)  # cropped back to the image, palette PNG


def test_evaluate_reads_original_checkpoints_with_module_prefix(voc_root, tmp_path, capsys, s4gan_run):
    ckpt = s4gan_run[0]
    state = torch.load(ckpt / "VOC_3.pth", weights_only=True)
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "orig.pth")
    outputs = []
    for path in (ckpt / "VOC_3.pth", tmp_path / "orig.pth"):
        code, out, err = run_main(evaluate.main, tiny_eval_flags(voc_root, path, tmp_path / "r"), capsys)
        assert code == 0, err
        outputs.append(iou_output(out))
    assert outputs[0] == outputs[1]


def test_evaluate_batched_equals_one_at_a_time(voc_root, tmp_path, capsys, s4gan_run):
    path = s4gan_run[0] / "VOC_3.pth"
    results = []
    for batch in ("1", "3"):
        code, out, err = run_main(evaluate.main, tiny_eval_flags(voc_root, path, tmp_path / batch, "--batch-size", batch), capsys)
        assert code == 0, err
        results.append(iou_output(out))
    assert results[0] == results[1]


def test_readme_style_command_runs_as_a_subprocess(voc_root, tmp_path):
    """The README's VOC command shape, real process: train -> checkpoint -> evaluate."""
    proc = run_subprocess(["train_s4GAN.py", "--dataset", "pascal_voc", "--checkpoint-dir", str(tmp_path),
                           "--labeled-ratio", "0.5", "--ignore-label", "255", "--num-classes", "21",
                           *tiny_train_flags(voc_root, tmp_path, "--num-steps", "1")])
    assert proc.returncode == 0, proc.stderr
    proc = run_subprocess(["evaluate.py", "--dataset", "pascal_voc", "--num-classes", "21",
                           *tiny_eval_flags(voc_root, tmp_path / "VOC_1.pth", tmp_path / "res")])
    assert proc.returncode == 0, proc.stderr
    assert "meanIOU:" in proc.stdout
