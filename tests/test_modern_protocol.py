"""Today's protocol (docs/modern-protocol.md): Cityscapes at its own resolution, a Cityscapes split list
in the published form, and reproduce.py's tables voc-classic, voc-blended and cityscapes-modern
(their commands, job scripts and the collected table with the final and the best snapshot)."""
import os
import re
import shlex
import subprocess

import numpy as np
import pytest
from PIL import Image

import evaluate
import reproduce
import train_full
import train_mlmt
import train_s4GAN
from data.cityscapes import LABEL_TO_TRAIN, CityscapesSegmentation
from data.splits import load_permutation
from experiments import catalog, speed
from tests.city_fixture import make_city
from tests.helpers import expect_error, run_main, tiny_train_flags

TABLES = ("voc-classic", "voc-blended", "cityscapes-modern")


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return make_city(str(tmp_path_factory.mktemp("city_modern")), size=(64, 128))


def test_full_resolution_items_are_the_files_as_they_are(city):
    val = CityscapesSegmentation(city, "val", train=False, native_size=True)
    image, label, size, name, _ = val[0]
    raw = np.asarray(Image.open(val.image_path(name)).convert("RGB"))
    raw_label = LABEL_TO_TRAIN[np.asarray(Image.open(val.label_path(name)))]
    assert image.shape == (3, 64, 128) and size.tolist() == [64, 128]
    assert np.array_equal(label, raw_label)
    assert np.array_equal(val.display(0)[0], raw)
    train = CityscapesSegmentation(city, "train", crop_size=(48, 40), native_size=True)
    image, label, size, _, _ = train[(0, (1, 2))]
    assert image.shape == (3, 48, 40) and label.shape == (48, 40) and size.tolist() == [64, 128]
    too_big = CityscapesSegmentation(city, "train", crop_size=(65, 40), native_size=True)
    with pytest.raises(Exception, match="larger than"):
        too_big[0]


def test_full_resolution_is_refused_for_other_datasets(voc_root, tmp_path, capsys):
    expect_error(train_full.main, tiny_train_flags(voc_root, tmp_path / "ck", "--full-resolution"), capsys,
                 "--full-resolution is a Cityscapes option")


def test_a_published_cityscapes_list_trains_at_full_resolution_and_evaluates_sliding(city, tmp_path, capsys):
    """The lines of a published Cityscapes list (leftImg8bit/... gtFine/...) label exactly their
    images; training crops and evaluation windows come from the 2048x1024-style (here 128x64) files."""
    listed = tmp_path / "labeled.txt"
    listed.write_text("".join(f"leftImg8bit/train/{c}/{c}_000000_000019_leftImg8bit.png "
                              f"gtFine/train/{c}/{c}_000000_000019_gtFine_labelTrainIds.png\n"
                              for c in ("bochum", "aachen")))
    argv = ["--dataset", "cityscapes", "--data-dir", city, "--full-resolution", "--labeled-list", str(listed),
            "--model", "deeplabv3p", "--backbone", "resnet50", "--restore-from", "none", "--input-size", "49,49",
            "--batch-size", "2", "--num-steps", "2", "--save-pred-every", "2", "--num-workers", "0",
            "--checkpoint-dir", str(tmp_path / "ck")]
    code, out, err = run_main(train_full.main, argv, capsys)  # (s4GAN would need 2 unlabeled of the 3 images)
    assert code == 0, err
    # the training list, sorted: aachen_000000, aachen_000001, bochum_000000
    assert load_permutation(str(tmp_path / "ck" / "split.pkl"), 3).tolist() == [2, 0, 1]
    code, out, err = run_main(evaluate.main, ["--dataset", "cityscapes", "--data-dir", city, "--full-resolution",
                                              "--restore-from", str(tmp_path / "ck" / "VOC_2.pth"), "--eval-mode",
                                              "sliding", "--eval-window", "49,49", "--num-workers", "0",
                                              "--save-dir", str(tmp_path / "eval")], capsys)
    assert code == 0, err
    assert os.path.isfile(tmp_path / "eval" / "result.txt")


def plan(argv, capsys, monkeypatch):
    monkeypatch.setattr(catalog, "mlmt_available", lambda: True)
    code = reproduce.main(argv)
    out = capsys.readouterr().out
    assert code == 0
    runs = re.findall(r"^#\d+ +(\S+) .*\n +(.*)\n +(.*)$", out, re.M)
    return [(name, shlex.split(t), shlex.split(e)) for name, t, e in runs], out


@pytest.mark.parametrize("table", TABLES)
def test_each_table_plans_its_lists_seeds_and_protocol(table, capsys, monkeypatch):
    runs, out = plan(["--table", table], capsys, monkeypatch)
    columns = catalog.tables()[table].lists
    methods = 2 if table.startswith("cityscapes") else 3
    assert len(runs) == len(columns) * 3 * methods
    scripts = {"train_full.py": train_full, "train_s4GAN.py": train_s4GAN, "train_mlmt.py": train_mlmt}
    seen = set()
    for name, train, evaluation in runs:
        script = scripts[train[1]]
        args = script.get_args_parser().parse_args(train[2:])  # every flag is one the trainer has
        assert args.labeled_list in {path for _, path, _ in columns.values()}
        assert os.path.isfile(os.path.join(catalog.ROOT, args.labeled_list))
        assert args.random_seed in (1234, 1235, 1236)
        seen.add((train[1], args.labeled_list, args.random_seed))
        if script is not train_mlmt:
            assert (args.model, args.backbone, args.fidelity, args.batch_size) == ("deeplabv3p", "resnet101", "fixed", 8)
            assert args.labeled_ratio is None and args.full_resolution == table.startswith("cityscapes")
        eval_args = evaluate.get_args_parser().parse_args(evaluation[2:])
        assert eval_args.eval_mode == ("sliding" if table.startswith("cityscapes") else "whole")
    assert len(seen) == len(runs)  # each list x seed x trainer once
    assert "and 7 more evaluations" in out and "not comparable with the paper" in out


def test_deeplabv3p_runs_never_take_deeplabv2_measurements(capsys, monkeypatch):
    """benchmarks/RESULTS.md times DeepLabv2-ResNet-101 on the H200, not DeepLabv3+: the plan says so
    rather than estimating with the other model's speed; MLMT's classifier is the same, and is estimated."""
    monkeypatch.setattr(speed, "device_name", lambda: "CPU")
    _, out = plan(["--table", "voc-classic", "--ratios", "92", "--splits", "0"], capsys, monkeypatch)
    assert "s4GAN: no measurement for NVIDIA H200" in out
    assert "(labeled only): no measurement for NVIDIA H200" in out
    assert re.search(r"s4GAN \+ MLMT: [\d.]+ s / iteration from benchmarks/RESULTS.md", out)
    _, out = plan(["--table", "voc-classic", "--ratios", "92", "--splits", "0", "--sec-per-iter",
                   "baseline=0.0176,s4gan=0.0527"], capsys, monkeypatch)
    assert "s4GAN: 0.0527 s / iteration from --sec-per-iter" in out


def test_the_documented_gpu_hours_are_the_plans(capsys, monkeypatch):
    monkeypatch.setattr(speed, "device_name", lambda: "CPU")
    text = open(os.path.join(catalog.ROOT, "docs", "modern-protocol.md")).read()
    rows = re.findall(r"^\| `([\w-]+)` \| `--sec-per-iter (\S+)` \| ([\d.]+) \| ([\d.]+) \| ([\d.]+|–) \| ([\d.]+) \|$",
                      text, re.M)
    assert [r[0] for r in rows] == list(TABLES)
    bf16 = ["--amp", "bf16", "--channels-last"]
    for table, rates, *hours in rows:
        _, out = plan(["--table", table, "--sec-per-iter", rates, "--mlmt-flags", " ".join(bf16), "--", *bf16],
                      capsys, monkeypatch)
        estimate = re.search(r"^Estimate: about ([\d.]+) GPU-hours of training on NVIDIA H200 \((.*)\);", out, re.M)
        parts = dict(re.findall(r"(\(labeled only\)|s4GAN|MLMT classifiers) ([\d.]+)", estimate.group(2)))
        planned = [parts.get(k, "–") for k in ("(labeled only)", "s4GAN", "MLMT classifiers")]
        assert [*planned, estimate.group(1)] == hours, table


def test_columns_are_chosen_by_their_list(capsys, monkeypatch):
    runs, _ = plan(["--table", "voc-blended", "--ratios", "1/16,1_2", "--splits", "0", "--methods", "s4gan"],
                   capsys, monkeypatch)
    assert [name for name, _, _ in runs] == ["s4gan_1_16_s0", "s4gan_1_2_s0"]
    expect_error(reproduce.main, ["--table", "voc-classic", "--ratios", "100"], capsys, "not a column", "92, 183")


def test_the_job_script_evaluates_every_snapshot(tmp_path, capsys, monkeypatch):
    script = tmp_path / "jobs.sh"
    runs, _ = plan(["--table", "voc-classic", "--ratios", "92", "--splits", "0", "--methods", "s4gan", "--steps",
                    "20", "--out", str(tmp_path / "ck"), "--emit", "shell", "--emit-to", str(script), "--",
                    "--save-pred-every", "5"], capsys, monkeypatch)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").write_text('#!/bin/bash\necho "$*" >> "$FAKE_LOG"\n')
    (bindir / "python").chmod(0o755)
    log = tmp_path / "log"
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_LOG=str(log))
    assert subprocess.run(["bash", str(script), "0"], env=env).returncode == 0
    logged = log.read_text().splitlines()
    assert logged[0].startswith("train_s4GAN.py") and len(logged) == 5  # training, then snapshots 20, 5, 10, 15
    assert [re.search(r"VOC_(\d+)\.pth", line).group(1) for line in logged[1:]] == ["20", "5", "10", "15"]


def write_result(path, miou):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"class  0 background  {miou:.4f}\nmeanIOU: {miou}\n")


def test_collect_reports_the_final_and_the_best_snapshot(tmp_path, capsys, monkeypatch):
    """Worked by hand: seed 0 scores 0.50 final and 0.60 at its best snapshot, seed 1 0.40 and 0.44:
    final 45.0 +- 7.1, best 52.0 +- 11.3."""
    out = tmp_path / "ck"
    argv = ["--table", "voc-classic", "--ratios", "92", "--splits", "0,1", "--methods", "baseline", "--steps", "10",
            "--out", str(out), "--results-dir", str(tmp_path / "results"), "--", "--save-pred-every", "5"]
    for seed, (final, other) in enumerate(((0.50, 0.60), (0.40, 0.44))):
        folder = out / f"baseline_92_s{seed}"
        folder.mkdir(parents=True)
        (folder / "VOC_10.pth").write_bytes(b"")
        write_result(str(folder / "eval_VOC_10" / "result.txt"), final)
        write_result(str(folder / "eval_VOC_5" / "result.txt"), other)
    monkeypatch.setattr(catalog, "mlmt_available", lambda: True)
    assert reproduce.main([*argv[:-3], "--collect", *argv[-3:]]) == 0
    text = open(tmp_path / "results" / "voc-classic.md").read()
    assert "| DeepLabv3+ supervised (labeled only) | 92 | 45.0 ± 7.1 | 2 | 52.0 ± 11.3 |" in text
    assert "selected on the evaluation set" in text and "not comparable with the paper" in text
    assert "| baseline_92_s0 | DeepLabv3+ supervised (labeled only) | 92 | 0 | 50.00 | 60.00 |" in text
