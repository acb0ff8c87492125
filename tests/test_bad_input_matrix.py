"""Bad input, entry point by entry point: exit status 2, one line `error: ...` naming the flag or file
(and what to do), no traceback, and nothing of an earlier run overwritten. The cases are checked before
any model is built, so each costs a fraction of a second."""
import os
import pickle

import numpy as np
import pytest

import evaluate
import reproduce
import train_full
import train_mlmt
import train_s4GAN
import train_s4GAN_wrn38
from data import check as data_check, context as data_context
from tests.city_fixture import make_city
from tests.context_fixture import make_context_mat
from tests.helpers import expect_error, run_main, run_subprocess, tiny_eval_flags, tiny_train_flags
from tests.test_mlmt import write_original_layout

CONTEXT_LAYOUT_LINES = 4  # the PASCAL-Context errors list the three layouts and the conversion below their line


def files_of(folder):
    """{name: bytes} of a folder: what must not change when a command is refused."""
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


def write_split(path, n):
    with open(path, "wb") as f:
        pickle.dump(np.arange(n, dtype=np.int64), f, protocol=3)
    return str(path)


@pytest.fixture(scope="module")
def earlier_run(voc_root, module_tmp):
    """A checkpoint folder a finished s4GAN run left: every refused command below points at it."""
    ckpt = module_tmp("earlier")
    argv = tiny_train_flags(voc_root, ckpt, "--num-steps", "2", "--save-pred-every", "1", "--labeled-ratio", "0.5")
    assert run_main(train_s4GAN.main, argv)[0] == 0
    return ckpt


def segmentation_cases(voc_root, tmp):
    other = write_split(tmp / "other.pkl", 7)
    return [
        (train_full, ["--data-dir", str(tmp / "nowhere")], ["--data-dir", "nowhere", "does not exist"]),
        (train_full, ["--labeled-ratio", "1.5"], ["--labeled-ratio 1.5", "(0, 1]"]),
        (train_full, ["--labeled-ratio", "0.5", "--split-id", other], ["--split-id", "other.pkl", "not a permutation"]),
        (train_full, ["--num-steps", "0"], ["--num-steps", "at least 1"]),
        (train_full, ["--save-pred-every", "0"], ["--save-pred-every", "at least 1"]),
        (train_full, ["--batch-size", "0"], ["--batch-size", "at least 1"]),
        (train_full, ["--restore-from", str(tmp / "missing.pth")], ["--restore-from", "missing.pth", "does not exist"]),
        (train_full, ["--model", "deeplabv3p_wrn38", "--backbone", "wrn38", "--batch-size", "1"],
         ["--batch-size 1", "at least 2 images per batch"]),
        (train_s4GAN, ["--restore-from-D", str(tmp / "missing_D.pth")], ["--restore-from-D", "missing_D.pth"]),
        (train_s4GAN, ["--unlabeled-list", str(tmp / "none.txt")], ["--unlabeled-list", "none.txt", "does not exist"]),
        (train_s4GAN, ["--labeled-ratio", "1.0"], ["--labeled-ratio 1.0", "leaves no unlabeled image"]),
        (train_s4GAN, ["--input-size", "8,8"], ["--input-size", "too small"]),
        (train_s4GAN, ["--resume", str(tmp / "nothing.pth")], ["--resume", "nothing.pth", "does not exist"]),
    ]


def test_segmentation_trainers(voc_root, earlier_run, tmp_path, capsys):
    before = files_of(earlier_run)
    for script, extra, fragments in segmentation_cases(voc_root, tmp_path):
        argv = tiny_train_flags(voc_root, earlier_run, "--num-steps", "2", "--labeled-ratio", "0.5",
                                "--split-id", "none") + extra
        expect_error(script.main, argv, capsys, *fragments)
        assert files_of(earlier_run) == before, (script.__name__, extra)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return make_city(str(tmp_path_factory.mktemp("city")), layout="official",
                     cities={"train": {"aachen": 3, "bochum": 2}, "val": {"frankfurt": 1}})


def test_wrn38_trainer(city, tmp_path, capsys):
    ckpt = tmp_path / "ck"
    common = ["--dataset", "cityscapes", "--data-dir", city, "--wrn-width-mult", "0.0625", "--input-size", "64,128",
              "--batch-size", "2", "--batch-size-unlab", "2", "--num-workers", "0", "--labeled-ratio", "0.4",
              "--restore-from", "none", "--checkpoint-dir", str(ckpt), "--out", str(tmp_path / "out"),
              "--num-steps", "1"]
    assert run_main(train_s4GAN_wrn38.main, common, capsys)[0] == 0
    before = files_of(ckpt)
    for extra, fragments in [
            (["--batch-size", "1"], ["--batch-size 1", "at least 2 images per batch"]),
            (["--batch-size-unlab", "1"], ["--batch-size-unlab 1", "at least 2 images per batch"]),
            (["--val-every", "0"], ["--val-every", "at least 1"]),
            (["--val-images", "-1"], ["--val-images", "0 (all) or more"]),
            (["--labeled-ratio", "0.2"], ["labeled images (1)", "do not fill one batch of 2", "lower the batch size"]),
            (["--amp", "fp16"], ["--amp fp16", "--sgd-mode standard"])]:
        expect_error(train_s4GAN_wrn38.main, common + extra, capsys, *fragments)
        assert files_of(ckpt) == before, extra


def test_cityscapes_images_and_labels_must_pair(tmp_path, capsys):
    root = make_city(str(tmp_path / "city"), layout="official", cities={"train": {"aachen": 2}, "val": {"ulm": 1}})
    flags = ["--dataset", "cityscapes", "--data-dir", root, "--backbone", "resnet18", "--restore-from", "none",
             "--input-size", "33,33", "--num-steps", "1", "--checkpoint-dir", str(tmp_path / "ck")]
    image = os.path.join(root, "leftImg8bit", "train", "aachen", "aachen_000001_000019_leftImg8bit.png")
    label = os.path.join(root, "gtFine", "train", "aachen", "aachen_000001_000019_gtFine_labelIds.png")
    os.rename(label, label + ".moved")
    expect_error(train_full.main, flags, capsys, "aachen_000001_000019_gtFine_labelIds.png", "does not exist")
    os.rename(label + ".moved", label)
    os.remove(image)
    expect_error(train_full.main, flags, capsys, "aachen_000001_000019_gtFine_labelIds.png", "has no image",
                 "re-extract")


def test_mlmt_trainer(voc_root, tmp_path, capsys):
    root = write_original_layout(voc_root, tmp_path / "mlmt")
    out = tmp_path / "out"
    common = ["--data-dir", str(root), "--pkl-file", "none", "--backbone", "resnet18", "--pretrained", "none",
              "--image-size", "64", "--batch-size-lab", "2", "--batch-size-unlab", "2", "--batch-size-val", "2",
              "--num-epochs", "1", "--workers", "0", "--labeled-ratio", "0.5", "--output-dir", str(out)]
    assert run_main(train_mlmt.main, common, capsys)[0] == 0
    before = files_of(out)
    n = sum(1 for line in open(os.path.join(root, "train_img.txt")) if line.strip())
    other = write_split(tmp_path / "other.pkl", n + 3)
    for extra, fragments in [
            (["--pkl-file", other], ["--pkl-file", "other.pkl", f"not a permutation of the {n}"]),
            (["--num-classes", "5"], ["train_label.txt", "expected 5", "--num-classes"]),
            (["--batch-size-lab", "0"], ["--batch-size-lab", "at least 1"]),
            (["--image-size", "10"], ["--image-size 10", "too small"]),
            (["--labeled-ratio", "0"], ["--labeled-ratio 0", "(0, 1]"]),
            (["--data-dir", str(tmp_path / "nowhere")], ["nowhere"])]:
        expect_error(train_mlmt.main, common + extra, capsys, *fragments)
        assert files_of(out) == before, extra


def test_evaluate(voc_root, earlier_run, tmp_path, capsys):
    checkpoint = earlier_run / "VOC_2.pth"
    np.savetxt(tmp_path / "wrong.txt", np.ones((2, 21)))
    for extra, fragments in [
            (["--with-mlmt", "--mlmt-file", str(tmp_path / "wrong.txt")], ["--mlmt-file", "wrong.txt", "2 rows"]),
            (["--with-mlmt", "--mlmt-file", str(tmp_path / "none.txt")], ["--mlmt-file", "none.txt", "does not exist"]),
            (["--batch-size", "0"], ["--batch-size", "at least 1"]),
            (["--num-classes", "5"], ["--num-classes 5", "pass --num-classes 21"])]:
        expect_error(evaluate.main, tiny_eval_flags(voc_root, checkpoint, tmp_path / "r") + extra, capsys, *fragments)
    expect_error(evaluate.main, tiny_eval_flags(voc_root, tmp_path / "missing.pth", tmp_path / "r"), capsys,
                 "--restore-from", "missing.pth", "does not exist")
    assert not (tmp_path / "r" / "result.txt").exists()


def test_reproduce(capsys):
    for argv, fragments in [
            (["--table", "voc", "--eval-snapshot", "best"], ["--eval-snapshot best", "final, readme or an iteration"]),
            (["--table", "voc", "--splits", "a,b"], ["--splits a,b", "split numbers"]),
            (["--table", "voc", "--gpus", "2"], ["--gpus", "--launcher torchrun"]),
            (["--table", "voc", "--sec-per-iter", "fast"], ["--sec-per-iter fast", "METHOD=SECONDS"]),
            (["--table", "voc", "--ratios", "1/0"], ["--ratios"])]:
        expect_error(reproduce.main, argv, capsys, *fragments)


def test_context_prepare(tmp_path, capsys):
    import scipy.io
    root = tmp_path / "pc"
    make_context_mat(str(root))
    mat = root / "trainval" / "2008_000002.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file, but not really")
    expect_error(data_context.main, ["prepare", "--data-dir", str(root)], capsys, "2008_000002.mat", "cannot read")
    scipy.io.savemat(str(mat), {"LabelMap": np.full((40, 60), 600, np.uint16)})
    expect_error(data_context.main, ["prepare", "--data-dir", str(root)], capsys, "2008_000002.mat",
                 "category ids [600]", "outside the 459")
    scipy.io.savemat(str(mat), {"LabelMap": np.zeros((40, 60), np.uint16)})
    os.remove(root / "JPEGImages" / "2008_000123.jpg")
    expect_error(data_context.main, ["prepare", "--data-dir", str(root)], capsys, "2008_000123", "does not exist")
    expect_error(data_context.main, ["prepare", "--data-dir", str(tmp_path / "nowhere")], capsys, "--data-dir",
                 "does not exist", detail_lines=CONTEXT_LAYOUT_LINES)


def test_data_check(voc_root, tmp_path, capsys):
    expect_error(data_check.main, ["--dataset", "pascal_voc", "--data-dir", str(tmp_path / "nowhere")], capsys,
                 "--data-dir", "nowhere")
    expect_error(data_check.main, ["--dataset", "pascal_voc", "--data-dir", voc_root, "--data-list",
                                   str(tmp_path / "none.txt")], capsys, "--data-list", "none.txt", "does not exist")


@pytest.mark.parametrize("argv", [
    ["train_full.py", "--num-steps", "0"],
    ["train_s4GAN.py", "--labeled-ratio", "2"],
    ["train_s4GAN_wrn38.py", "--batch-size", "1"],
    ["train_mlmt.py", "--batch-size-lab", "0"],
    ["evaluate.py"],
    ["reproduce.py", "--table", "voc", "--eval-snapshot", "best"],
    ["-m", "data.context", "prepare", "--data-dir", "/nowhere/pcontext"],
    ["-m", "data.check", "--dataset", "pascal_voc", "--data-dir", "/nowhere/voc"],
], ids=lambda a: a[0] if a[0] != "-m" else a[1])
def test_each_entry_point_as_a_process(argv):
    """The process itself: exit status 2, one line (the Context layouts follow theirs), no traceback."""
    proc = run_subprocess(argv)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    details = CONTEXT_LAYOUT_LINES if "data.context" in argv else 0
    assert len(lines) == 1 + details and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
