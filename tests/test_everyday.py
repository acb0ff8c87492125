"""The synthetic dataset, the demo, progress output, plots, montages, custom folders, --help."""
import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import demo
import evaluate
import train_full
import train_s4GAN
import train_s4GAN_wrn38
from data.joined import JoinedDataset
from data.synthetic import CLASSES, write_dataset
from data.voc import VOCSegmentation
from data.config import DataConfig
from tests.helpers import run_main, tiny_train_flags
from utils import plot
from utils.progress import TrainingLog


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    write_dataset(root, num_train=16, num_val=4, seed=3, max_size=120, min_size=64)
    return root


def test_synthetic_dataset_is_in_the_voc_layout(synthetic):
    train = open(os.path.join(synthetic, "lists", "train_aug.txt")).read().split()
    val = open(os.path.join(synthetic, "lists", "val.txt")).read().split()
    assert len(train) == 16 and len(val) == 4 and not set(train) & set(val)
    assert open(os.path.join(synthetic, "classes.txt")).read().split() == list(CLASSES)
    seen = set()
    for name in train:
        image = cv2.imread(os.path.join(synthetic, "JPEGImages", name + ".jpg"))
        png = Image.open(os.path.join(synthetic, "SegmentationClassAug", name + ".png"))
        assert png.mode == "P" and image.shape[:2] == png.size[::-1]
        assert 64 <= min(image.shape[:2]) and max(image.shape[:2]) <= 120
        seen |= set(np.unique(np.array(png)).tolist())
    assert 255 in seen and seen <= set(range(len(CLASSES))) | {255} and len(seen - {0, 255}) >= 3


def test_synthetic_dataset_is_seeded(tmp_path, synthetic):
    write_dataset(str(tmp_path), num_train=16, num_val=4, seed=3, max_size=120, min_size=64)
    name = "train_aug_00005.png"
    a = np.array(Image.open(os.path.join(synthetic, "SegmentationClassAug", name)))
    b = np.array(Image.open(tmp_path / "SegmentationClassAug" / name))
    assert np.array_equal(a, b)


def test_demo_runs_end_to_end_and_writes_its_outputs(synthetic, tmp_path, capfd):
    out = tmp_path / "demo"
    demo.main(["--out", str(out), "--num-train", "16", "--num-val", "4", "--steps", "2", "--crop", "33",
               "--batch-size", "2", "--num-workers", "0"])
    commands = [line for line in capfd.readouterr().out.splitlines() if line.startswith("$ ")]
    assert commands[0].startswith("$ python -m data.synthetic --out")  # commands a user can paste
    assert any(c.startswith("$ python train_s4GAN.py ") for c in commands)
    for name in ("results.md", "predictions.png", "curves.png"):
        assert (out / name).is_file(), name
    table = (out / "results.md").read_text()
    assert "baseline 1/8" in table and "s4GAN 1/8" in table and "baseline all labels" in table and "mIoU" in table
    # which machine produced the numbers, and what one seed can and cannot show
    assert "CPU cores" in table and "PyTorch" in table and "One seed, one machine" in table
    assert "cannot show: whether s4GAN beats the baseline" in table


def test_folder_dataset_names_classes_from_classes_txt(synthetic, tmp_path, capsys):
    flags = ["--dataset", "folder", "--num-classes", "6", "--data-dir", synthetic, "--data-list",
             os.path.join(synthetic, "lists", "train_aug.txt"), "--backbone", "resnet18", "--restore-from", "none",
             "--input-size", "33,33", "--batch-size", "2", "--num-workers", "0", "--num-steps", "1",
             "--checkpoint-dir", str(tmp_path)]
    assert run_main(train_full.main, flags, capsys)[0] == 0
    code, out, err = run_main(evaluate.main, ["--dataset", "folder", "--num-classes", "6", "--data-dir", synthetic,
                                              "--data-list", os.path.join(synthetic, "lists", "val.txt"),
                                              "--backbone", "resnet18", "--restore-from", str(tmp_path / "VOC_1.pth"),
                                              "--save-dir", str(tmp_path / "r"), "--num-workers", "0",
                                              "--save-output-images"], capsys)
    assert code == 0, err
    assert "class  3 triangle" in out
    montage = cv2.imread(str(tmp_path / "r" / "montage.png"))
    assert montage is not None and montage.shape[1] == 3 * 160  # image | ground truth | prediction


def test_folder_eval_scores_each_image_at_its_own_size(synthetic):
    from data import get_dataset
    ds = get_dataset("folder").build_val(DataConfig("folder", synthetic, 6, 255,
                                                    data_list=os.path.join(synthetic, "lists", "val.txt")))
    image, label, size, _, _ = ds[0]
    h, w = size
    assert image.shape[1] == 8 * -(-(h - 1) // 8) + 1 and image.shape[2] == 8 * -(-(w - 1) // 8) + 1


def test_unlabeled_list_adds_images_without_labels(fresh_voc, tmp_path, capsys):
    rng = np.random.default_rng(0)
    extra = ["extra_0", "extra_1", "extra_2"]
    for name in extra:
        cv2.imwrite(os.path.join(fresh_voc, "JPEGImages", name + ".jpg"), rng.integers(0, 255, (50, 60, 3), dtype=np.uint8))
    (tmp_path / "unlabeled.txt").write_text("\n".join(extra) + "\n")
    listed = VOCSegmentation(fresh_voc, os.path.join(fresh_voc, "lists", "train_aug.txt"), (33, 33))
    joined = JoinedDataset(listed, VOCSegmentation(fresh_voc, str(tmp_path / "unlabeled.txt"), (33, 33), labeled=False))
    assert len(joined) == 9 and joined.ids[6:] == extra
    sample = joined[(7, (0, 1, 0, 0))]
    assert sample[3] == "extra_1" and sample[4] == 7 and (sample[1] == 255).all()  # no label: all ignored
    code, _, err = run_main(train_s4GAN.main, tiny_train_flags(fresh_voc, tmp_path / "ck", "--num-steps", "2",
                                                               "--labeled-ratio", "0.5", "--unlabeled-list",
                                                               str(tmp_path / "unlabeled.txt")), capsys)
    assert code == 0, err
    (tmp_path / "bad.txt").write_text("missing_image\n")
    code, _, err = run_main(train_s4GAN.main, tiny_train_flags(fresh_voc, tmp_path / "ck2", "--unlabeled-list",
                                                               str(tmp_path / "bad.txt")), capsys)
    assert code == 2 and "missing_image.jpg" in err and "bad.txt" in err


def test_plot_draws_curves_from_metrics(voc_root, tmp_path, capsys):
    assert run_main(train_s4GAN.main, tiny_train_flags(voc_root, tmp_path, "--num-steps", "3", "--log-every", "1"), capsys)[0] == 0
    plot.main([str(tmp_path)])
    image = cv2.imread(str(tmp_path / "curves.png"))
    assert image is not None and image.shape[0] > 200
    with pytest.raises(SystemExit):
        plot.main([str(tmp_path / "nowhere")])


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_plain_lines_otherwise(tmp_path):
    tty = _Terminal()
    log = TrainingLog(str(tmp_path / "m.jsonl"), 0, 4, log_every=2, stream=tty)
    for i in range(4):
        log.update(i, {"loss_ce": 0.5, "above_st": 1, "lr": 1e-3})
    log.close()
    assert "loss_ce 0.5000" in tty.getvalue() and "4/4" in tty.getvalue()
    plain = io.StringIO()
    log = TrainingLog(str(tmp_path / "p.jsonl"), 0, 4, log_every=2, stream=plain)
    for i in range(4):
        log.update(i, {"loss_ce": 0.5, "lr": 1e-3})
    lines = plain.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["0/4", "2/4", "3/4"] and "eta" in lines[0]
    assert len(open(tmp_path / "p.jsonl").read().splitlines()) == 3


@pytest.mark.parametrize("script", [train_full, train_s4GAN, train_s4GAN_wrn38, evaluate])
def test_every_flag_has_help(script):
    p = script.get_args_parser()
    for action in p._actions:
        if action.dest != "help":
            assert action.help and len(action.help) > 10, action.dest
    assert "--fidelity" in p.format_help()
