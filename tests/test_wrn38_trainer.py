"""train_s4GAN_wrn38.py: the s4GAN loop with DeepLabv3+ on WRN-38, a narrow test width, on tiny Cityscapes."""
import json

import pytest
import torch

import evaluate
import train_s4GAN_wrn38
from engine import validation
from engine.config import validation_config
from model import build_segmenter
from tests.city_fixture import make_city
from tests.helpers import crash_at, expect_error, run_main
from tests.test_wrn38 import write_imagenet_file
from utils.optim import segmenter_optimizer

TINY = "0.0625"


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return make_city(str(tmp_path_factory.mktemp("city")), layout="official",
                     cities={"train": {"aachen": 3, "bochum": 2}, "val": {"frankfurt": 1}})


def flags(city, tmp_path, *extra):
    return ["--dataset", "cityscapes", "--data-dir", city, "--wrn-width-mult", TINY, "--input-size", "64,128",
            "--batch-size", "2", "--batch-size-unlab", "2", "--num-workers", "0", "--labeled-ratio", "0.4",
            "--val-images", "1", "--restore-from", "none", "--checkpoint-dir", str(tmp_path / "ck"),
            "--out", str(tmp_path / "out"), *extra]


@pytest.fixture(scope="module")
def reference(city, module_tmp):
    """An uninterrupted 4-step run (validated after iterations 0 and 2: the original's i % N == 0)."""
    tmp_path = module_tmp("ref")
    code, _, _ = run_main(train_s4GAN_wrn38.main, flags(city, tmp_path, "--num-steps", "4", "--val-every", "2"))
    assert code == 0
    return tmp_path


def test_defaults_of_the_wrn_trainer():
    args = train_s4GAN_wrn38.parse_args([])
    assert (args.model, args.backbone, args.save_pred_every, args.batch_size_unlab) == ("deeplabv3p_wrn38", "wrn38",
                                                                                        1000, 8)
    assert args.restore_from.endswith("wider_resnet38.pth.tar")  # not the ResNet-101 file
    assert args.context_train_mean == "reversed" and args.out == "result"


def test_a_missing_imagenet_file_stops_the_run(city, tmp_path, capsys, monkeypatch):
    """The default ImageNet file absent: one error naming it and the way out, and no run; the
    original's torch.load fails there too, rather than training from random weights for hours."""
    monkeypatch.chdir(tmp_path)
    argv = flags(city, tmp_path)
    del argv[argv.index("--restore-from"):argv.index("--restore-from") + 2]
    expect_error(train_s4GAN_wrn38.main, argv, capsys, "--restore-from ./pretrained_models/wider_resnet38.pth.tar "
                 "does not exist", "pretrained_models/README.md", "--restore-from none")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing written
    (tmp_path / "pretrained_models").mkdir()
    trunk = build_segmenter("wrn38", 19, "deeplabv3p_wrn38", wrn_width_mult=float(TINY)).backbone
    write_imagenet_file(tmp_path / "pretrained_models" / "wider_resnet38.pth.tar", trunk)
    code, out, err = run_main(train_s4GAN_wrn38.main, argv + ["--num-steps", "1", "--val-every", "5"], capsys)
    assert code == 0, err
    assert f"loaded {len(trunk.state_dict())} ImageNet tensors into the wrn38 trunk" in out


def test_validation_protocols_by_hand():
    """--val-protocol original: after iterations 0, N, 2N, ...; Cityscapes scores images 0, B, 2B, ...
    (the first of each of its first 50 batches of --batch-size B); all: after every N-th and the last."""
    def args(*extra):
        return train_s4GAN_wrn38.parse_args(["--dataset", "cityscapes", "--batch-size", "8", *extra])

    def due(flags):
        return [i for i in range(1000) if validation.validates_after(i, validation_config(flags), flags.num_steps)]

    def images(flags):
        return validation.validation_images(validation_config(flags))
    original = args()
    assert (original.val_protocol, original.val_images) == ("original", 50)
    assert due(original) == [0, 200, 400, 600, 800]
    assert images(original)(500) == list(range(0, 393, 8))
    assert images(original)(100) == list(range(0, 100, 8))
    voc = train_s4GAN_wrn38.parse_args(["--dataset", "pascal_voc", "--batch-size", "8"])
    assert images(voc)(1449) == list(range(50))
    every = args("--val-protocol", "all", "--num-steps", "1000")
    assert every.val_images == 0 and images(every)(500) == list(range(500))
    assert due(every) == [199, 399, 599, 799, 999]
    assert images(args("--val-protocol", "all", "--val-images", "3"))(500) == [0, 1, 2]
    assert args("--fidelity", "fixed").val_protocol == "all"


def test_validation_does_not_draw_from_the_global_generator(city, tmp_path):
    """Validating is not allowed to change the training's random numbers (dropout draws from the
    global generator)."""
    from engine.config import segmentation_config
    from engine.validation import Validator
    from utils.distributed import init_environment
    args = train_s4GAN_wrn38.parse_args(flags(city, tmp_path))
    model = build_segmenter("wrn38", 19, "deeplabv3p_wrn38", wrn_width_mult=float(TINY))
    data = segmentation_config(args).data.listing(args.val_list)
    validator = Validator(data, init_environment("cpu", 0), None, args.num_workers,
                          images=validation.validation_images(validation_config(args)))
    torch.manual_seed(0)
    validator(model)
    after_validation = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after_validation, torch.rand(3))


def test_train_validate_and_evaluate(city, reference, tmp_path, capsys):
    records = [json.loads(line) for line in open(reference / "out" / "metrics.jsonl")]
    assert [r["iter"] for r in records if "val_miou" in r] == [0, 2]
    # the s4GAN diagnostics, and the run's flags beside metrics.jsonl for the plot's threshold line
    assert {"score_real", "score_fake", "st_share", "st_term"} <= set(records[-1])
    assert json.loads((reference / "out" / "args.json").read_text())["threshold_st"] == 0.6
    assert (reference / "ck" / "best.pth").is_file() and (reference / "out" / "result.txt").is_file()
    assert "meanIOU" in (reference / "out" / "result.txt").read_text()
    assert (reference / "ck" / "VOC_4.pth").is_file() and (reference / "ck" / "VOC_4_D.pth").is_file()
    evaluate_flags = ["--dataset", "cityscapes", "--data-dir", city, "--num-workers", "0", "--save-dir",
                      str(tmp_path / "r"), "--restore-from"]
    code, out, err = run_main(evaluate.main, evaluate_flags + [str(reference / "ck" / "VOC_4.pth"), "--model",
                                                               "deeplabv3p_wrn38"], capsys)
    assert code == 0 and "meanIOU" in out, err
    # an original-style checkpoint (DataParallel keys) of this model loads too; the model kind and
    # width then have to be given, as there is no args.json beside it
    state = torch.load(reference / "ck" / "VOC_4.pth", weights_only=True)
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "VOC_4.pth")
    code, out, err = run_main(evaluate.main, evaluate_flags + [str(tmp_path / "VOC_4.pth"), "--model",
                                                               "deeplabv3p_wrn38", "--wrn-width-mult", TINY], capsys)
    assert code == 0 and "meanIOU" in out, err


def test_interrupted_run_resumes_bit_identically(city, reference, tmp_path):
    from methods.s4gan import S4GANStep
    argv = flags(city, tmp_path, "--num-steps", "4", "--val-every", "2", "--save-pred-every", "2")
    with crash_at(S4GANStep, 3):
        run_main(train_s4GAN_wrn38.main, argv)
    assert run_main(train_s4GAN_wrn38.main, argv + ["--resume", "auto"])[0] == 0
    for name in ("VOC_4.pth", "VOC_4_D.pth", "best.pth"):
        ours = torch.load(tmp_path / "ck" / name, weights_only=True)
        theirs = torch.load(reference / "ck" / name, weights_only=True)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), name


def test_legacy_sgd_keeps_the_original_repeated_lists():
    model = build_segmenter("wrn38", 19, "deeplabv3p_wrn38", wrn_width_mult=1 / 16)
    legacy = segmenter_optimizer(model, 1e-3, 0.9, 5e-4, "legacy")
    lists = model.original_param_lists()
    assert [len(g["params"]) for g in legacy.param_groups] == [len(x) for x in lists]
    assert [g["lr_mult"] for g in legacy.param_groups] == [1, 10]
    standard = segmenter_optimizer(model, 1e-3, 0.9, 5e-4, "standard")
    assert sum(len(g["params"]) for g in standard.param_groups) == len(list(model.parameters()))
    # one step: a tensor listed k times moves k times as far as with the list deduplicated
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    legacy.step()
    repeats = {}
    for p in lists[0]:
        repeats[id(p)] = repeats.get(id(p), 0) + 1
    p = lists[0][0]
    expected = before[id(p)] - repeats[id(p)] * 1e-3 * (1 + 5e-4 * before[id(p)])
    assert torch.allclose(p.detach(), expected, atol=1e-7)


def test_bad_input(city, tmp_path, capsys):
    expect_error(train_s4GAN_wrn38.main, flags(city, tmp_path, "--amp", "fp16"), capsys, "--amp fp16", "--sgd-mode")
    expect_error(train_s4GAN_wrn38.main, flags(city, tmp_path, "--labeled-ratio", "0.2", "--batch-size", "2"),
                 capsys, "do not fill one batch")


def test_bf16_and_channels_last_train(city, tmp_path, capsys):
    code, _, err = run_main(train_s4GAN_wrn38.main, flags(city, tmp_path, "--num-steps", "2", "--amp", "bf16",
                                                          "--channels-last", "--log-every", "1"), capsys)
    assert code == 0, err
    records = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    assert len(records) == 2 and all(r["loss_S"] == r["loss_S"] for r in records) and "val_miou" in records[0]
