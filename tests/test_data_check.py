"""python -m data.check: every kind of label problem is found, a clean dataset passes."""
import os

import numpy as np
from PIL import Image

from data.check import main as check_main
from tests.city_fixture import make_city
from tests.helpers import run_main
from tests.voc_fixture import write_label


def voc_flags(root, out, *extra):
    return ["--dataset", "folder", "--num-classes", "21", "--data-dir", root,
            "--data-list", os.path.join(root, "lists", "train_aug.txt"), "--out", str(out), *extra]


def test_clean_dataset_passes_with_a_summary_and_a_chart(fresh_voc, tmp_path, capsys):
    code, out, err = run_main(check_main, voc_flags(fresh_voc, tmp_path), capsys)
    assert code == 0, err
    assert "6 of 6 images readable and consistent" in out and "classes never seen:" in out
    assert "images whose every pixel is ignored: 0" in out
    assert (tmp_path / "class_frequencies.png").is_file()


def test_each_problem_is_found_in_one_run(fresh_voc, tmp_path, capsys):
    labels = os.path.join(fresh_voc, "SegmentationClassAug")
    names = [line.strip() for line in open(os.path.join(fresh_voc, "lists", "train_aug.txt"))]
    rgb = np.array(Image.open(os.path.join(labels, names[0] + ".png")).convert("RGB"))
    Image.fromarray(rgb).save(os.path.join(labels, names[0] + ".png"))  # a colour-coded label
    os.remove(os.path.join(fresh_voc, "JPEGImages", names[1] + ".jpg"))  # a missing image
    label = np.array(Image.open(os.path.join(labels, names[2] + ".png")))
    label[0, 0] = 40
    write_label(os.path.join(labels, names[2] + ".png"), label)  # a value out of range
    write_label(os.path.join(labels, names[3] + ".png"), np.zeros((10, 10), np.uint8))  # size mismatch
    shape = np.array(Image.open(os.path.join(labels, names[4] + ".png"))).shape
    write_label(os.path.join(labels, names[4] + ".png"), np.full(shape, 255, np.uint8))  # all ignored
    code, out, err = run_main(check_main, voc_flags(fresh_voc, tmp_path), capsys)
    assert code == 2
    assert "4 problem(s)" in err
    assert names[0] in err and "RGB colour image" in err and "class index" in err
    assert f"{names[1]}.jpg: the image of listed id {names[1]} does not exist" in err
    assert "values [40] outside [0, 21)" in err
    assert "10x10 but its image is" in err
    assert "images whose every pixel is ignored: 1" in out and names[4] in out


def test_cityscapes_labels_are_checked_as_train_ids(tmp_path, capsys):
    root = make_city(str(tmp_path / "city"), layout="official")
    code, out, err = run_main(check_main, ["--dataset", "cityscapes", "--data-dir", root, "--out", str(tmp_path)],
                              capsys)
    assert code == 0, err
    assert "road" in out and "3 of 3 images" in out

