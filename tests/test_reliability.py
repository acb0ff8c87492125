"""Reproducible runs, exact resume, atomic writes, untrusted files, bad input."""
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import evaluate
import train_full
import train_s4GAN
from methods.s4gan import S4GANStep
from tests.helpers import ROOT, assert_identical, crash_at, expect_error, run_main, tiny_eval_flags, tiny_train_flags
from utils import checkpoint as checkpoint_module
from utils.checkpoint import atomic_torch_save
from utils.errors import UserError


def s4gan_flags(voc_root, ckpt, *extra):
    return tiny_train_flags(voc_root, ckpt, "--labeled-ratio", "0.5", "--random-scale", "--random-mirror",
                            "--log-every", "1", *extra)


def final_files(ckpt, steps):
    latest = torch.load(ckpt / "latest.pth", weights_only=True)
    return {"model": torch.load(ckpt / f"VOC_{steps}.pth", weights_only=True),
            "D": torch.load(ckpt / f"VOC_{steps}_D.pth", weights_only=True),
            "optimizers": latest["optimizers"], "scaler": latest["scaler"], "streams": latest["streams"],
            "iteration": latest["iteration"], "extras": latest["extras"]}  # the self-training monitor


@pytest.fixture(scope="module")
def reference_run(voc_root, module_tmp):
    """An uninterrupted 8-step s4GAN run."""
    ckpt = module_tmp("reference")
    code, _, _ = run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, "--num-steps", "8", "--save-pred-every", "3"))
    assert code == 0
    return final_files(ckpt, 8)


def test_same_seed_is_bit_identical_whatever_the_number_of_workers(voc_root, tmp_path, reference_run):
    ckpt = tmp_path / "w2"
    code, _, _ = run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, "--num-steps", "8", "--save-pred-every", "3",
                                                        "--num-workers", "2"))
    assert code == 0
    assert_identical(final_files(ckpt, 8), reference_run)
    other = tmp_path / "seed"
    code, _, _ = run_main(train_s4GAN.main, s4gan_flags(voc_root, other, "--num-steps", "1", "--random-seed", "7"))
    first = torch.load(other / "VOC_1.pth", weights_only=True)
    code, _, _ = run_main(train_s4GAN.main, s4gan_flags(voc_root, tmp_path / "seed2", "--num-steps", "1"))
    assert not torch.equal(first["layer5.conv2d_list.0.weight"],
                           torch.load(tmp_path / "seed2" / "VOC_1.pth", weights_only=True)["layer5.conv2d_list.0.weight"])


def test_signal_part_way_then_resume_is_bit_identical(voc_root, tmp_path, reference_run):
    ckpt = tmp_path / "interrupted"
    argv = [sys.executable, "train_s4GAN.py", *s4gan_flags(voc_root, ckpt, "--num-steps", "8", "--save-pred-every", "3",
                                                           "--num-workers", "1")]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in proc.stdout:
        if line.startswith("iter      4/"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume auto" in err
    saved = torch.load(ckpt / "latest.pth", weights_only=True)["iteration"]
    assert 5 <= saved < 8 and not (ckpt / "VOC_8.pth").exists()
    # resume with a harmless change (workers); finish; compare every tensor
    code, _, _ = run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, "--num-steps", "8", "--save-pred-every", "3",
                                                        "--resume", "auto"))
    assert code == 0
    assert_identical(final_files(ckpt, 8), reference_run)
    iters = [int(line.split('"iter": ')[1].split(",")[0]) for line in open(ckpt / "metrics.jsonl")]
    assert iters == list(range(8))  # no iteration logged twice


def test_crash_then_resume_from_the_periodic_state(voc_root, tmp_path, reference_run):
    with crash_at(S4GANStep, 5):
        run_main(train_s4GAN.main, s4gan_flags(voc_root, tmp_path, "--num-steps", "8", "--save-pred-every", "3"))
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["iteration"] == 4
    code, _, _ = run_main(train_s4GAN.main, s4gan_flags(voc_root, tmp_path, "--num-steps", "8", "--save-pred-every", "3",
                                                        "--resume", "auto"))
    assert code == 0
    assert_identical(final_files(tmp_path, 8), reference_run)


def test_resume_refuses_flags_that_change_the_run(voc_root, tmp_path, capsys):
    flags = s4gan_flags(voc_root, tmp_path, "--num-steps", "3", "--save-pred-every", "1")
    assert run_main(train_s4GAN.main, flags[:], capsys)[0] == 0
    line = expect_error(train_s4GAN.main, s4gan_flags(voc_root, tmp_path, "--num-steps", "3", "--save-pred-every", "1",
                                                      "--resume", "auto", "--batch-size", "3", "--labeled-ratio", "0.25"),
                        capsys, "--batch-size 2 -> 3", "--labeled-ratio 0.5 -> 0.25")
    assert "--num-workers" not in line
    code, out, _ = run_main(train_s4GAN.main, s4gan_flags(voc_root, tmp_path, "--num-steps", "3", "--save-pred-every", "1",
                                                          "--resume", "auto", "--num-workers", "1", "--log-every", "5"), capsys)
    assert code == 0 and "resuming from" in out


def test_resume_auto_without_state_starts_fresh_and_snapshots_are_not_states(voc_root, tmp_path, capsys):
    code, out, _ = run_main(train_full.main, tiny_train_flags(voc_root, tmp_path, "--num-steps", "1", "--resume", "auto"), capsys)
    assert code == 0 and "resuming" not in out
    expect_error(train_full.main, tiny_train_flags(voc_root, tmp_path, "--num-steps", "1", "--resume",
                                                   str(tmp_path / "VOC_1.pth")), capsys, "not a training state")
    expect_error(train_full.main, tiny_train_flags(voc_root, tmp_path, "--resume", str(tmp_path / "nope.pth")),
                 capsys, "nope.pth", "does not exist")


def test_nan_loss_stops_naming_iteration_and_term_and_keeps_good_checkpoints(voc_root, tmp_path, capsys):
    line = expect_error(train_s4GAN.main, s4gan_flags(voc_root, tmp_path, "--num-steps", "50", "--save-pred-every", "1",
                                                      "--learning-rate", "1e12"), capsys, "iteration")
    assert "is nan" in line or "is inf" in line or "not finite" in line
    for name in os.listdir(tmp_path):
        if name.endswith(".pth"):
            state = torch.load(tmp_path / name, weights_only=True)
            tensors = state["model"] if "model" in state else state
            assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()), name


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    atomic_torch_save({"x": torch.ones(3)}, str(path))

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.os, "replace", failing_replace)
    with pytest.raises(UserError, match="No space left"):
        atomic_torch_save({"x": torch.zeros(3)}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))
    assert os.listdir(tmp_path) == ["latest.pth"]  # no temporary file left behind


def test_unwritable_or_full_checkpoint_dir(voc_root, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    expect_error(train_full.main, tiny_train_flags(voc_root, tmp_path / "file" / "sub"), capsys, "--checkpoint-dir",
                 "cannot be created")

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(checkpoint_module.tempfile, "mkstemp", read_only)
    expect_error(train_full.main, tiny_train_flags(voc_root, tmp_path / "ro"), capsys, "Read-only", "ro")


def test_corrupt_label_png_and_empty_list(fresh_voc, tmp_path, capsys):
    for k in range(6):
        path = os.path.join(fresh_voc, "SegmentationClassAug", f"2007_train_aug_{k:03d}.png")
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    expect_error(train_full.main, tiny_train_flags(fresh_voc, tmp_path / "c"), capsys, "cannot read label",
                 "SegmentationClassAug")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    argv = tiny_train_flags(fresh_voc, tmp_path / "c")
    argv[argv.index("--data-list") + 1] = str(empty)
    expect_error(train_full.main, argv, capsys, "empty.txt", "is empty")


def test_split_file_that_does_not_fit_the_dataset(voc_root, tmp_path, capsys):
    with open(tmp_path / "short.pkl", "wb") as f:
        pickle.dump(np.arange(5), f)
    with open(tmp_path / "dup.pkl", "wb") as f:
        pickle.dump(np.array([0, 0, 1, 2, 3, 4]), f)
    for name in ("short.pkl", "dup.pkl"):
        expect_error(train_s4GAN.main, tiny_train_flags(voc_root, tmp_path / "c", "--labeled-ratio", "0.5",
                                                        "--split-id", str(tmp_path / name)), capsys,
                     name, "not a permutation of the 6")


def test_checkpoints_for_another_number_of_classes(voc_root, tmp_path, capsys):
    from model import build_discriminator, build_segmenter
    torch.save(build_discriminator(5).state_dict(), tmp_path / "d5.pth")
    expect_error(train_s4GAN.main, tiny_train_flags(voc_root, tmp_path / "c", "--restore-from-D", str(tmp_path / "d5.pth")),
                 capsys, "--restore-from-D", "does not fit")
    torch.save(build_segmenter("resnet18", 5).state_dict(), tmp_path / "s5.pth")
    expect_error(evaluate.main, tiny_eval_flags(voc_root, tmp_path / "s5.pth", tmp_path / "r"), capsys, "does not fit",
                 "--num-classes")


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_split_pickle_is_refused_without_running_it(voc_root, tmp_path, capsys):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_RunsACommand(marker), f)
    expect_error(train_s4GAN.main, tiny_train_flags(voc_root, tmp_path / "c", "--labeled-ratio", "0.5",
                                                    "--split-id", str(tmp_path / "evil.pkl")), capsys, "evil.pkl", "refused")
    assert not marker.exists()


def test_malicious_checkpoint_is_refused_without_running_it(voc_root, tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _RunsACommand(marker)}, tmp_path / "evil.pth")
    argv = tiny_train_flags(voc_root, tmp_path / "c")
    argv[argv.index("none")] = str(tmp_path / "evil.pth")
    expect_error(train_full.main, argv, capsys, "evil.pth", "refused")
    expect_error(evaluate.main, tiny_eval_flags(voc_root, tmp_path / "evil.pth", tmp_path / "r"), capsys, "refused")
    assert not marker.exists()
