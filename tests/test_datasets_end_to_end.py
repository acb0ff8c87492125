"""PASCAL-Context and Cityscapes through the ordinary scripts: train_full, train_s4GAN and evaluate.py."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import train_full
import train_s4GAN
from data import DATASETS, get_dataset
from data.cityscapes import city_palette
from data.context import context_palette
from model import build_discriminator
from engine.config import segmentation_config
from tests.city_fixture import make_city
from tests.context_fixture import make_context_layout
from tests.helpers import expect_error, run_main


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return {"cityscapes": make_city(str(tmp_path_factory.mktemp("city")), layout="official"),
            "pascal_context": (lambda root: (make_context_layout(root), root)[1])(str(tmp_path_factory.mktemp("pc")))}


def train_flags(dataset, root, checkpoint_dir, *extra):
    crop = "33,65" if dataset == "cityscapes" else "33,33"
    return ["--dataset", dataset, "--data-dir", root, "--backbone", "resnet18", "--restore-from", "none",
            "--input-size", crop, "--batch-size", "2", "--num-workers", "0", "--num-steps", "2",
            "--checkpoint-dir", str(checkpoint_dir), *extra]


def test_both_datasets_are_registered_with_their_own_defaults():
    city, context = get_dataset("cityscapes"), get_dataset("pascal_context")
    assert (city.num_classes, city.ignore_label, city.default_data_dir) == (19, 250, "./data/city_dataset/")
    assert (context.num_classes, context.ignore_label, context.default_data_dir) == (60, -1, "./data/pcontext_dataset/")
    args = train_s4GAN.parse_args(["--dataset", "cityscapes"])
    assert (args.num_classes, args.ignore_label, args.data_dir) == (19, 250, "./data/city_dataset/")
    assert train_s4GAN.parse_args(["--dataset", "pascal_context"]).context_train_mean == "reversed"
    assert train_full.parse_args(["--dataset", "pascal_context"]).context_train_mean == "rgb"
    assert set(DATASETS) == {"pascal_voc", "folder", "pascal_context", "cityscapes"}


@pytest.mark.parametrize("dataset", ["cityscapes", "pascal_context"])
def test_train_and_evaluate(dataset, roots, tmp_path, capsys):
    root = roots[dataset]
    for main in (train_full.main, train_s4GAN.main):
        ratio = ["--labeled-ratio", "0.5"] if main is train_s4GAN.main else []
        code, _, err = run_main(main, train_flags(dataset, root, tmp_path / main.__module__, *ratio), capsys)
        assert code == 0, err
    code, out, err = run_main(evaluate.main, ["--dataset", dataset, "--data-dir", root, "--num-workers", "0",
                                              "--restore-from", str(tmp_path / "train_s4GAN" / "VOC_2.pth"),
                                              "--save-dir", str(tmp_path / "r"), "--save-output-images"], capsys)
    assert code == 0 and "meanIOU" in out, err
    names = get_dataset(dataset).class_names(get_dataset(dataset).num_classes)
    assert f"class  1 {names[1]}" in out  # the dataset's own class names
    val = get_dataset(dataset).build_val(segmentation_config(train_full.parse_args(["--dataset", dataset,
                                                                                    "--data-dir", root])).data)
    png = Image.open(tmp_path / "r" / (val.ids[0] + ".png"))
    palette = city_palette() if dataset == "cityscapes" else context_palette()
    assert png.mode == "P" and np.array_equal(np.array(png.getpalette()[:768], np.uint8).reshape(256, 3), palette)
    expected = (1024, 512) if dataset == "cityscapes" else (512, 512)  # the scored resolution
    assert png.size == expected


def test_cityscapes_full_resolution_scoring(roots, tmp_path, capsys):
    root = roots["cityscapes"]
    code, _, err = run_main(train_full.main, train_flags("cityscapes", root, tmp_path / "ck"), capsys)
    assert code == 0, err
    flags = ["--dataset", "cityscapes", "--data-dir", root, "--num-workers", "0", "--restore-from",
             str(tmp_path / "ck" / "VOC_2.pth"), "--save-dir", str(tmp_path / "r"), "--save-output-images"]
    code, out, err = run_main(evaluate.main, flags + ["--eval-full-res"], capsys)
    assert code == 0 and "meanIOU" in out, err
    name = sorted(os.listdir(tmp_path / "r" / "frankfurt"))[0]
    assert Image.open(tmp_path / "r" / "frankfurt" / name).size == (128, 64)  # the fixture's full size


def test_discriminator_works_at_the_cityscapes_crop():
    d = build_discriminator(19)
    prob, features = d(torch.rand(2, 19 + 3, 256, 512))
    assert prob.shape == (2, 1) and features.shape == (2, 512, 1, 1)
    # global pooling equals the original's fixed 16x32 kernel at this size
    x = torch.rand(1, 22, 256, 512)
    d.eval()
    with torch.no_grad():
        maps = d.leaky_relu(d.conv4(d.leaky_relu(d.conv3(d.leaky_relu(d.conv2(d.leaky_relu(d.conv1(x))))))))
        assert maps.shape[-2:] == (16, 32)
        assert torch.allclose(torch.nn.functional.avg_pool2d(maps, (16, 32)), d(x)[1])


def test_wrong_ignore_label_and_missing_folders_are_named(tmp_path, capsys):
    expect_error(train_full.main, ["--dataset", "cityscapes", "--ignore-label", "255"], capsys,
                 "--ignore-label 255", "250")
    expect_error(train_full.main, train_flags("cityscapes", str(tmp_path / "nothing"), tmp_path / "ck"), capsys,
                 "gtFine_trainvaltest.zip")
    expect_error(train_full.main, train_flags("pascal_context", str(tmp_path / "nothing"), tmp_path / "ck"), capsys,
                 "prepare", detail_lines=4)  # the three layouts and the conversion, one per line
