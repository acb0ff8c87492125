"""Split lists (--labeled-list, --unlabeled-list): the shipped files of splits/ (digests, counts, the
relations their sources state), how a list line names an image, the pools a run draws from (worked
out by hand), the errors, and a tiny DeepLabv3+ trained by each trainer on a classic-style list of the
VOC fixture and evaluated in every evaluation mode."""
import hashlib
import os
import re

import numpy as np
import pytest

import evaluate
import train_full
import train_mlmt
import train_s4GAN
import train_s4GAN_wrn38
from data.image_lists import ImageIndex, ListedImages, entry_name, image_pools, labeled_first
from data.splits import load_permutation
from tests.city_fixture import make_city
from tests.helpers import expect_error, run_main, tiny_eval_flags, tiny_train_flags

SPLITS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "splits")


def shipped_rows():
    """(file, labeled count, sha256) of each row of the split-list table in splits/README.md."""
    with open(os.path.join(SPLITS, "README.md")) as f:
        text = f.read()
    rows = re.findall(r"^\| `((?:voc|city)/[a-z_0-9]+/[0-9_]+\.txt)` \| ([0-9,]+) \| `([0-9a-f]{64})` \|$", text, re.M)
    return [(name, int(count.replace(",", "")), digest) for name, count, digest in rows]


def read(name):
    with open(os.path.join(SPLITS, name)) as f:
        return [line.strip() for line in f if line.strip()]


def test_each_shipped_list_has_its_digest_and_its_count():
    rows = shipped_rows()
    assert len(rows) == 16  # classic 5, blended U2PL 4, blended CPS 3, Cityscapes 4
    on_disk = {os.path.relpath(os.path.join(d, f), SPLITS).replace(os.sep, "/")
               for d, _, files in os.walk(SPLITS) for f in files if f.endswith(".txt") and "LICENSE" not in f}
    assert on_disk == {name for name, _, _ in rows}  # every list is documented, every row shipped
    for name, count, digest in rows:
        with open(os.path.join(SPLITS, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
        ids = read(name)
        assert len(ids) == count == len(set(ids)), name
        form = r"[a-z]+/[a-z]+_\d{6}_\d{6}" if name.startswith("city/") else r"20\d\d_\d{6}"
        assert all(re.fullmatch(form, i) for i in ids), name
    # the counts the protocols name: 1/16 .. 1/2 of 10,582 and of 2,975
    assert [c for n, c, _ in rows if "blended_u2pl" in n] == [662, 1323, 2646, 5291]
    assert [c for n, c, _ in rows if n.startswith("city/")] == [186, 372, 744, 1488]


def test_the_families_are_what_their_sources_say():
    fine = set(read("voc/classic/1464.txt"))
    for n in (92, 183, 366, 732):
        assert set(read(f"voc/classic/{n}.txt")) <= fine  # classic: fine labels only
    u2pl = {f: set(read(f"voc/blended_u2pl/{f}.txt")) for f in ("1_16", "1_8", "1_4", "1_2")}
    assert u2pl["1_16"] <= fine and fine <= u2pl["1_4"]  # the fine set first
    cps = [set(read(f"voc/blended_cps/{f}.txt")) for f in ("1_16", "1_8", "1_4")]
    assert [len(s & fine) for s in cps] == [93, 193, 388]  # drawn over all of train_aug
    cities = {i.split("/")[0] for i in read("city/u2pl/1_2.txt")}
    assert len(cities) == 18  # the 18 training cities of Cityscapes
    assert all(i.split("/")[1].startswith(i.split("/")[0] + "_") for i in read("city/u2pl/1_2.txt"))


def test_a_list_line_names_an_image_in_every_published_form():
    index = ImageIndex(["2007_000032", "2007_000039", "aachen/aachen_000000_000019"])
    forms = {"2007_000039": 1, "JPEGImages/2007_000039.jpg SegmentationClass/2007_000039.png": 1,
             "aachen/aachen_000000_000019": 2, "aachen_000000_000019": 2,
             "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png "
             "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png": 2,
             "2007_000099": None}
    for line, position in forms.items():
        assert index.find(entry_name(line)) == position, line
    # a file name two images share is found only by the whole id
    shared = ImageIndex(["a/x", "b/x"])
    assert shared.find("x") is None and shared.find("b/x") == 1


def test_the_pools_worked_out_by_hand():
    perm = labeled_first(np.array([4, 1]), 6)
    assert perm.tolist() == [4, 1, 0, 2, 3, 5]
    labeled, unlabeled = image_pools(perm, 6, None, ListedImages(np.array([4, 1])))
    assert labeled.tolist() == [4, 1] and unlabeled.tolist() == [0, 2, 3, 5]  # the rest of the list
    # with --unlabeled-list: exactly its images (7: one joined after the 6 of the training list)
    labeled, unlabeled = image_pools(perm, 6, None, ListedImages(np.array([4, 1]), np.array([2, 7])))
    assert labeled.tolist() == [4, 1] and unlabeled.tolist() == [2, 7]
    # without --labeled-list: the ratio's split, and the list's images join it once
    labeled, unlabeled = image_pools(np.array([5, 4, 3, 2, 1, 0]), 6, 0.5, ListedImages(None, np.array([2, 6])))
    assert labeled.tolist() == [5, 4, 3] and unlabeled.tolist() == [2, 1, 0, 6]
    labeled, unlabeled = image_pools(None, 3, None, ListedImages(None, np.array([3])))
    assert labeled.tolist() == [0, 1, 2] and unlabeled.tolist() == [0, 1, 2, 3]


def fixture_ids(voc_root):
    return read_lines(os.path.join(voc_root, "lists", "train_aug.txt"))


def read_lines(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def write_list(path, ids, two_columns=True):
    with open(path, "w") as f:
        for i in ids:
            f.write(f"JPEGImages/{i}.jpg SegmentationClass/{i}.png\n" if two_columns else f"{i}\n")
    return str(path)


def test_bad_lists_are_named(voc_root, tmp_path, capsys):
    ids = fixture_ids(voc_root)
    base = tiny_train_flags(voc_root, tmp_path / "ck", "--num-steps", "1")
    expect_error(train_full.main, [*base, "--labeled-list", str(tmp_path / "nope.txt")], capsys,
                 "--labeled-list", "nope.txt", "does not exist")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    expect_error(train_full.main, [*base, "--labeled-list", str(empty)], capsys, "--labeled-list", "is empty")
    twice = write_list(tmp_path / "twice.txt", [ids[0], ids[1], ids[0]])
    expect_error(train_full.main, [*base, "--labeled-list", twice], capsys, "line 3", ids[0], "listed twice")
    stranger = write_list(tmp_path / "stranger.txt", [ids[0], "2012_999999"])
    expect_error(train_full.main, [*base, "--labeled-list", stranger], capsys,
                 "line 2", "2012_999999", "is not an image of the training list", "train_aug.txt")
    fine = write_list(tmp_path / "fine.txt", ids[:2])
    expect_error(train_full.main, [*base, "--labeled-list", fine, "--labeled-ratio", "0.5"], capsys,
                 "--labeled-list", "--labeled-ratio", "give one")
    every = write_list(tmp_path / "every.txt", ids)
    expect_error(train_s4GAN.main, [*base, "--labeled-list", every], capsys, "names every image", "--unlabeled-list")
    assert not os.path.exists(tmp_path / "ck" / "args.json")  # refused runs write nothing


def v3p(voc_root, folder, *extra):
    return tiny_train_flags(voc_root, folder, "--model", "deeplabv3p", "--backbone", "resnet50", "--input-size",
                            "65,65", "--num-steps", "2", "--save-pred-every", "2", *extra)


def test_each_trainer_on_a_classic_list_of_the_fixture_then_every_evaluation_mode(voc_root, tmp_path, capsys):
    """A classic split as today's codebases publish it (two-column lines) over the fixture's training
    list: the runs label exactly its images, the unlabeled pool is the rest (or --unlabeled-list), and
    the s4GAN snapshot evaluates in every mode."""
    ids = fixture_ids(voc_root)
    chosen = [ids[3], ids[0]]
    labeled = write_list(tmp_path / "labeled.txt", chosen)
    unlabeled = write_list(tmp_path / "unlabeled.txt", [i for i in ids if i not in chosen], two_columns=False)
    val = os.path.join(voc_root, "lists", "val.txt")
    runs = {"full": (train_full.main, "split.pkl", []),
            "s4gan": (train_s4GAN.main, "train_voc_split.pkl", ["--unlabeled-list", unlabeled]),
            "validated": (train_s4GAN_wrn38.main, "train_voc_split.pkl",
                          ["--batch-size-unlab", "2", "--val-images", "1", "--val-list", val,
                           "--out", str(tmp_path / "out"), "--eval-mode", "whole"])}
    for name, (main, split_file, extra) in runs.items():
        code, out, err = run_main(main, v3p(voc_root, tmp_path / name, "--labeled-list", labeled, *extra), capsys)
        assert code == 0, (name, err)
        perm = load_permutation(str(tmp_path / name / split_file), len(ids))
        assert perm[:2].tolist() == [3, 0] and sorted(perm[2:].tolist()) == [1, 2, 4, 5], name

    mlmt = ["--data-dir", voc_root, "--data-list", os.path.join(voc_root, "lists/train_aug.txt"), "--val-list", val,
            "--backbone", "resnet18", "--pretrained", "none", "--image-size", "33", "--batch-size-lab", "2",
            "--batch-size-unlab", "2", "--batch-size-val", "2", "--num-epochs", "1", "--burn-in-epochs", "0",
            "--evaluation-epochs", "1", "--num-workers", "0", "--output-dir", str(tmp_path / "mlmt"),
            "--labeled-list", labeled, "--unlabeled-list", unlabeled]
    code, out, err = run_main(train_mlmt.main, mlmt, capsys)
    assert code == 0, err
    assert "training images: 2 labeled, 4 unlabeled" in out

    scores = {}
    for mode in (["original"], ["whole"], ["center-crop", "--eval-window", "41,41"],
                 ["sliding", "--eval-window", "41,41", "--eval-stride", "20,20"]):
        argv = tiny_eval_flags(voc_root, tmp_path / "s4gan" / "VOC_2.pth", tmp_path / f"eval_{mode[0]}",
                               "--eval-mode", *mode)
        del argv[argv.index("--backbone"):argv.index("--backbone") + 2]  # from args.json: deeplabv3p resnet50
        code, out, err = run_main(evaluate.main, argv, capsys)
        assert code == 0, (mode, err)
        scores[mode[0]] = float(re.search(r"meanIOU:? ([0-9.]+)", out).group(1))
    assert len(scores) == 4 and all(0 <= v <= 1 for v in scores.values())
    # the s4GAN + MLMT row of today's tables: the snapshot fused with the classifier's file, whole images
    argv = tiny_eval_flags(voc_root, tmp_path / "s4gan" / "VOC_2.pth", tmp_path / "eval_fused", "--eval-mode", "whole",
                           "--with-mlmt", "--mlmt-file", str(tmp_path / "mlmt" / "output_ema_raw_1.txt"))
    del argv[argv.index("--backbone"):argv.index("--backbone") + 2]
    code, out, err = run_main(evaluate.main, argv, capsys)
    assert code == 0 and "meanIOU" in out, err


@pytest.mark.parametrize("script", [train_full, train_mlmt])
def test_a_list_and_a_ratio_are_refused_together(voc_root, tmp_path, capsys, script):
    labeled = write_list(tmp_path / "l.txt", fixture_ids(voc_root)[:2])
    expect_error(script.main, ["--data-dir", voc_root, "--labeled-list", labeled, "--labeled-ratio", "0.5"], capsys,
                 "give one")


def test_unlabeled_images_outside_the_training_list_where_they_cannot_be_read(voc_root, tmp_path, capsys):
    """train_mlmt.py draws unlabeled images from the training list only, and Cityscapes reads no image
    outside its training list: each names the line."""
    ids = fixture_ids(voc_root)
    labeled = write_list(tmp_path / "l.txt", ids[:2])
    unlabeled = write_list(tmp_path / "u.txt", [ids[2], "2012_424242"])
    expect_error(train_mlmt.main, ["--data-dir", voc_root, "--data-list", os.path.join(voc_root, "lists/train_aug.txt"),
                                   "--val-list", os.path.join(voc_root, "lists/val.txt"), "--pretrained", "none",
                                   "--num-workers", "0", "--output-dir", str(tmp_path / "o"),
                                   "--labeled-list", labeled, "--unlabeled-list", unlabeled], capsys,
                 "--unlabeled-list", "line 2", "2012_424242", "train_mlmt.py reads unlabeled images from it only")
    city = make_city(str(tmp_path / "city"))
    stranger = tmp_path / "city_u.txt"
    stranger.write_text("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png\nulm/ulm_000001_000019\n")
    expect_error(train_s4GAN.main, ["--dataset", "cityscapes", "--data-dir", city, "--backbone", "resnet18",
                                    "--restore-from", "none", "--num-workers", "0", "--checkpoint-dir",
                                    str(tmp_path / "ck"), "--unlabeled-list", str(stranger)], capsys,
                 "line 2", "ulm/ulm_000001_000019", "reads no images outside it")
