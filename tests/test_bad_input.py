"""Bad input: one line `error: ...` naming the culprit, exit status 2, no traceback."""
import os

import numpy as np
import torch

import evaluate
import train_full
import train_s4GAN
from tests.helpers import expect_error, run_subprocess, tiny_eval_flags, tiny_train_flags
from tests.voc_fixture import write_label


def _flags(voc_root, tmp_path, *extra):
    return tiny_train_flags(voc_root, tmp_path / "ck", "--num-steps", "1", *extra)


def test_missing_data_dir(tmp_path, capsys, voc_root):
    argv = _flags(voc_root, tmp_path) + ["--data-dir", str(tmp_path / "nowhere")]
    expect_error(train_s4GAN.main, argv, capsys, "--data-dir", "nowhere")


def test_list_naming_a_missing_image(fresh_voc, tmp_path, capsys):
    os.remove(os.path.join(fresh_voc, "JPEGImages", "2007_train_aug_002.jpg"))
    expect_error(train_full.main, _flags(fresh_voc, tmp_path), capsys, "2007_train_aug_002.jpg", "does not exist")


def test_unreadable_image_is_named(fresh_voc, tmp_path, capsys):
    for name in ("2007_train_aug_000", "2007_train_aug_001", "2007_train_aug_002", "2007_train_aug_003",
                 "2007_train_aug_004", "2007_train_aug_005"):
        with open(os.path.join(fresh_voc, "JPEGImages", name + ".jpg"), "wb") as f:
            f.write(b"not a jpeg at all\xff\xd9")
    line = expect_error(train_full.main, _flags(fresh_voc, tmp_path), capsys, "cannot decode image")
    assert "JPEGImages" in line


def test_unreadable_image_in_a_worker_process_is_still_one_line(fresh_voc, tmp_path, capsys):
    for k in range(6):
        path = os.path.join(fresh_voc, "JPEGImages", f"2007_train_aug_{k:03d}.jpg")
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])  # truncated
    expect_error(train_full.main, _flags(fresh_voc, tmp_path, "--num-workers", "1"), capsys, "truncated")


def test_label_value_out_of_range(fresh_voc, tmp_path, capsys):
    for k in range(6):
        path = os.path.join(fresh_voc, "SegmentationClassAug", f"2007_train_aug_{k:03d}.png")
        label = np.array(__import__("PIL.Image").Image.open(path))
        label[0, 0] = 40
        write_label(path, label)
    expect_error(train_full.main, _flags(fresh_voc, tmp_path), capsys, "values [40]", "--num-classes")


def test_restore_from_missing_default_file_says_what_to_download(voc_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a for a in _flags(voc_root, tmp_path) if a not in ("--restore-from", "none")]
    argv[argv.index("resnet18")] = "resnet101"
    expect_error(train_s4GAN.main, argv, capsys, "resnet101-5d3b4d8f.pth",
                 "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth", "--restore-from none")


def test_restore_from_incompatible_file(voc_root, tmp_path, capsys):
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "bad.pth")
    argv = _flags(voc_root, tmp_path)
    argv[argv.index("none")] = str(tmp_path / "bad.pth")
    expect_error(train_full.main, argv, capsys, "bad.pth", "no tensor matches")


def test_evaluate_checkpoint_for_another_backbone(voc_root, tmp_path, capsys):
    from model import build_segmenter
    torch.save(build_segmenter("resnet18", 21).state_dict(), tmp_path / "r18.pth")
    argv = tiny_eval_flags(voc_root, tmp_path / "r18.pth", tmp_path / "res")
    argv[argv.index("resnet18")] = "resnet50"
    expect_error(evaluate.main, argv, capsys, "r18.pth", "does not fit", "--backbone")
    argv = tiny_eval_flags(voc_root, tmp_path / "r18.pth", tmp_path / "res", "--num-classes", "5")
    expect_error(evaluate.main, argv, capsys, "does not fit")


def test_evaluate_without_restore_from(voc_root, tmp_path, capsys):
    expect_error(evaluate.main, tiny_eval_flags(voc_root, "", tmp_path), capsys, "--restore-from")


def test_bad_flag_value_is_one_line(voc_root, tmp_path, capsys):
    expect_error(train_s4GAN.main, _flags(voc_root, tmp_path, "--input-size", "abc"), capsys, "--input-size")
    expect_error(train_s4GAN.main, _flags(voc_root, tmp_path, "--labeled-ratio", "1.5"), capsys, "--labeled-ratio")


def test_real_process_exit_status_and_no_traceback(tmp_path):
    proc = run_subprocess(["train_s4GAN.py", "--data-dir", str(tmp_path / "missing"), "--restore-from", "none"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr
