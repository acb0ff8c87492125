"""--model deeplabv3p (DeepLabv3+ on ResNet-50/101): its layout, its ImageNet file, and every trainer
and evaluate.py with it under both fidelity profiles, on the tiny VOC fixture."""
import json
import os

import pytest
import torch
import torchvision

import evaluate
import train_full
import train_s4GAN
import train_s4GAN_wrn38
from model import SEGMENTERS, build_segmenter
from tests.helpers import expect_error, run_main, tiny_eval_flags, tiny_train_flags


def v3p_flags(voc_root, checkpoint_dir, *extra):
    return tiny_train_flags(voc_root, checkpoint_dir, "--model", "deeplabv3p", "--backbone", "resnet50",
                            "--input-size", "65,65", "--num-steps", "2", "--labeled-ratio", "0.5", "--split-id", "none",
                            *extra)


def test_the_layout_of_the_modern_recipe():
    model = build_segmenter("resnet50", 5, "deeplabv3p").eval()
    trunk = model.backbone
    # output stride 16: layer4 dilated (torchvision's rule: from its second block), not strided
    assert trunk.layer4[0].conv2.stride == (1, 1) and trunk.layer4[0].downsample[0].stride == (1, 1)
    assert trunk.layer4[1].conv2.dilation == (2, 2)
    assert trunk.layer3[0].conv2.stride == (2, 2)
    assert [branch[0].dilation for branch in model.aspp.features[1:]] == [(6, 6), (12, 12), (18, 18)]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 5, 16, 24)  # logits at 1/4
    groups = model.optim_parameters(0.01)
    assert [g["lr_mult"] for g in groups] == [1, 10] and groups[1]["lr"] == pytest.approx(0.1)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.parameters()}
    entry = SEGMENTERS["deeplabv3p"]
    assert entry.backbones == ("resnet101", "resnet50") and entry.min_batch == 2
    assert entry.imagenet_weights == {"resnet101": "resnet101-5d3b4d8f.pth", "resnet50": "resnet50-19c8e357.pth"}


def test_the_torchvision_imagenet_file_loads_into_the_trunk(voc_root, tmp_path, capsys):
    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save(reference.state_dict(), path)
    argv = v3p_flags(voc_root, tmp_path / "ck", "--num-steps", "1", "--log-every", "1")
    argv[argv.index("--restore-from") + 1] = str(path)
    code, out, err = run_main(train_full.main, argv, capsys)
    assert code == 0, err
    assert "loaded 318 ImageNet tensors into the resnet50 trunk" in out  # every tensor but fc's
    argv[argv.index("--restore-from") + 1] = str(tmp_path / "elsewhere" / "resnet50-19c8e357.pth")
    argv[argv.index("--checkpoint-dir") + 1] = str(tmp_path / "ck2")
    expect_error(train_full.main, argv, capsys, "does not exist", "--restore-from none")


@pytest.mark.parametrize("fidelity", ["original", "fixed"])
def test_every_trainer_and_evaluate_take_it(voc_root, tmp_path, capsys, fidelity):
    runs = {"full": (train_full.main, []), "s4gan": (train_s4GAN.main, []),
            "s4gan_validated": (train_s4GAN_wrn38.main, ["--batch-size-unlab", "2", "--val-images", "1",
                                                         "--val-list", os.path.join(voc_root, "lists", "val.txt"),
                                                         "--out", str(tmp_path / "out")])}
    for name, (main, extra) in runs.items():
        code, out, err = run_main(main, v3p_flags(voc_root, tmp_path / name, "--fidelity", fidelity, *extra), capsys)
        assert code == 0, (name, err)
        if fidelity == "original":  # no repeated parameter lists to reproduce: today's SGD, said once
            assert out.count("standard SGD for DeepLabV3PlusResNet") == 1, name
        assert json.load(open(tmp_path / name / "args.json"))["model"] == "deeplabv3p"
    argv = tiny_eval_flags(voc_root, tmp_path / "s4gan" / "VOC_2.pth", tmp_path / "r")
    del argv[argv.index("--backbone"):argv.index("--backbone") + 2]  # model and backbone from args.json
    code, out, err = run_main(evaluate.main, argv, capsys)
    assert code == 0 and "meanIOU" in out, err
    assert os.path.isfile(tmp_path / "r" / "result.txt")
