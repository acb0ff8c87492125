"""Which flags may change on resume: each flag of engine/state.py HARMLESS_FLAGS is changed on a
resume here, and the run must end bit-identical to the uninterrupted one (CPU). A flag that changes
the computed numbers, --channels-last among them, is refused unless --resume-with-other-flags."""
import os
import shutil

import pytest
import torch

import train_mlmt
import train_s4GAN
import train_s4GAN_wrn38
from engine.state import HARMLESS_FLAGS
from methods.mlmt.objective import MLMTStep
from methods.s4gan import S4GANStep
from tests.helpers import assert_identical, crash_at, expect_error, run_main
from tests.test_mlmt import TRAIN_SIZES, mlmt_flags
from tests.voc_fixture import make_voc
from tests.city_fixture import make_city
from tests.test_reliability import final_files, s4gan_flags
from tests.test_wrn38_trainer import flags as wrn_flags

STEPS = ["--num-steps", "4", "--save-pred-every", "2"]  # latest.pth after iteration 2; the crash at 3


def interrupted(voc_root, ckpt, *extra):
    with crash_at(S4GANStep, 3):
        train_s4GAN.main(s4gan_flags(voc_root, ckpt, *STEPS, *extra))


@pytest.fixture(scope="module")
def reference(voc_root, module_tmp):
    ckpt = module_tmp("flags_reference")
    assert run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS))[0] == 0
    return final_files(ckpt, 4)


def moved_copy(voc_root, tmp_path):
    """The same data in another folder (the lists name ids, not paths)."""
    return str(shutil.copytree(voc_root, tmp_path / "moved_voc"))


# flag -> a function (voc_root, tmp_path, ckpt) -> (flags of the resumed run, folder it ends in)
S4GAN_CASES = {
    "num_workers": lambda v, t, c: (["--num-workers", "2"], c),
    "device": lambda v, t, c: (["--device", "cpu"], c),
    "gpu": lambda v, t, c: (["--gpu", "3"], c),
    "log_every": lambda v, t, c: (["--log-every", "3"], c),
    "checkpoint_dir": lambda v, t, c: (["--checkpoint-dir", str(shutil.copytree(c, t / "moved_ck"))], t / "moved_ck"),
    "restore_from": lambda v, t, c: (["--restore-from", str(t / "never_read.pth")], c),
    "restore_from_D": lambda v, t, c: (["--restore-from-D", str(t / "never_read_D.pth")], c),
    "resume": lambda v, t, c: (["--resume", str(c / "latest.pth")], c),
    "resume_with_other_flags": lambda v, t, c: (["--resume-with-other-flags"], c),
    "save_pred_every": lambda v, t, c: (["--save-pred-every", "3"], c),
    "data_dir": lambda v, t, c: (["--data-dir", str(moved_copy(v, t))], c),
    "data_list": lambda v, t, c: (["--data-list", os.path.join(moved_copy(v, t), "lists", "train_aug.txt")], c),
    "split_id": lambda v, t, c: (["--split-id", "none"], c),
    "val_list": lambda v, t, c: (["--val-list", os.path.join(v, "lists", "train_aug.txt")], c),
    "tensorboard": lambda v, t, c: (["--tensorboard"], c),
}
# flags no segmentation trainer above has: checked with the trainer that has them
MLMT_CASES = {"pkl_file", "pretrained", "exp_name", "output_dir", "verbose"}
WRN_CASES = {"out"}


def test_every_harmless_flag_is_checked():
    assert HARMLESS_FLAGS == set(S4GAN_CASES) | MLMT_CASES | WRN_CASES
    assert "channels_last" not in HARMLESS_FLAGS


@pytest.mark.parametrize("flag", sorted(S4GAN_CASES))
def test_a_harmless_flag_changed_on_resume_gives_the_same_bits(voc_root, tmp_path, reference, flag):
    ckpt = tmp_path / "ck"
    interrupted(voc_root, ckpt)
    extra, folder = S4GAN_CASES[flag](voc_root, tmp_path, ckpt)
    argv = s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto", *extra)
    assert run_main(train_s4GAN.main, argv)[0] == 0
    assert_identical(final_files(folder, 4), reference)


def test_channels_last_is_refused_on_resume_unless_asked_for(voc_root, tmp_path, capsys):
    ckpt = tmp_path / "ck"
    interrupted(voc_root, ckpt)
    argv = s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto", "--channels-last")
    expect_error(train_s4GAN.main, argv, capsys, "--channels-last False -> True",
                 "--resume-with-other-flags to continue all the same")
    code, out, err = run_main(train_s4GAN.main, argv + ["--resume-with-other-flags"], capsys)
    assert code == 0, err
    assert "warning: resuming" in out and "--channels-last False -> True" in out


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_voc(str(tmp_path_factory.mktemp("flags_voc")), sizes_train=TRAIN_SIZES)


@pytest.fixture(scope="module")
def mlmt_reference(voc, module_tmp):
    folder = module_tmp("mlmt_flags_reference")
    assert run_main(train_mlmt.main, mlmt_flags(voc, folder))[0] == 0
    return mlmt_files(folder)


def mlmt_files(folder):
    latest = torch.load(folder / "latest.pth", weights_only=True)
    return {"model": latest["model"], "modules": latest["modules"], "optimizers": latest["optimizers"],
            "iteration": latest["iteration"]}


def test_the_mlmt_flags_changed_on_resume_give_the_same_bits(voc, tmp_path, mlmt_reference):
    """train_mlmt.py's own harmless flags, all changed at once on one resume."""
    folder = tmp_path / "o"
    with crash_at(MLMTStep, 3):
        train_mlmt.main(mlmt_flags(voc, folder))
    moved = shutil.copytree(folder, tmp_path / "moved")
    argv = mlmt_flags(voc, folder) + ["--resume", "auto", "--output-dir", str(moved), "--exp-name", "another",
                                      "--verbose", "--pretrained", str(tmp_path / "never_read.pth"),
                                      "--pkl-file", str(tmp_path / "never_read.pkl")]
    assert run_main(train_mlmt.main, argv)[0] == 0
    assert_identical(mlmt_files(moved), mlmt_reference)


def test_the_wrn38_output_folder_changed_on_resume_gives_the_same_bits(tmp_path):
    city = make_city(str(tmp_path / "city"), layout="official",
                     cities={"train": {"aachen": 3, "bochum": 2}, "val": {"frankfurt": 1}})
    base = ["--num-steps", "3", "--save-pred-every", "1", "--val-every", "5"]
    assert run_main(train_s4GAN_wrn38.main, wrn_flags(city, tmp_path / "ref", *base))[0] == 0
    with crash_at(S4GANStep, 2):
        train_s4GAN_wrn38.main(wrn_flags(city, tmp_path / "run", *base))
    argv = wrn_flags(city, tmp_path / "run", *base, "--resume", "auto", "--out", str(tmp_path / "elsewhere"))
    assert run_main(train_s4GAN_wrn38.main, argv)[0] == 0
    assert_identical(torch.load(tmp_path / "run" / "ck" / "VOC_3.pth", weights_only=True),
                     torch.load(tmp_path / "ref" / "ck" / "VOC_3.pth", weights_only=True))
