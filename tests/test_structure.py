"""The layout promises: imports run one way, registries, the original's file names and defaults."""
import argparse
import ast
import os
import sys

import pytest
import torch

import evaluate
import train_full
import train_s4GAN
from engine.state import read_training_state
from model import SEGMENTERS, build_segmenter, canonical_model_name
from model.weights import main as weights_main, read_state_dict
from tests.helpers import ROOT, expect_error, run_main, tiny_eval_flags, tiny_train_flags
from utils.errors import UserError

SCRIPTS = {"train_full", "train_s4GAN", "train_s4GAN_wrn38", "train_mlmt", "evaluate", "demo", "reproduce"}
# package -> our packages it must never import. The layers: scripts -> engine (the run machinery) ->
# methods (the objectives) -> model, data, utils (utils: leaf helpers only); experiments (the
# orchestration behind reproduce.py, demo.py and the studies) runs the scripts as processes and
# reads their files, so it needs none of engine, methods, model. No package imports a script.
OURS = {"model", "data", "utils", "methods", "engine", "experiments", "studies", "benchmarks", "tests"}
FORBIDDEN = {"model": OURS - {"model", "utils"}, "data": OURS - {"data", "utils"}, "utils": OURS - {"utils"},
             "methods": OURS - {"methods", "model", "data", "utils"},
             "engine": OURS - {"engine", "methods", "model", "data", "utils"},
             "experiments": OURS - {"experiments", "data", "utils"},
             "studies": {"tests", "benchmarks"}}


def imported_top_modules(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def python_files(package):
    """Every .py file of a package, subpackages included."""
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        yield from (os.path.join(folder, f) for f in sorted(files) if f.endswith(".py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    files = list(python_files(package))
    assert files, package
    for path in files:
        imported = set(imported_top_modules(path))
        bad = imported & (FORBIDDEN[package] | SCRIPTS)
        assert not bad, f"{os.path.relpath(path, ROOT)} imports {sorted(bad)}"


def test_the_import_check_sees_subpackages(tmp_path, monkeypatch):
    """A forbidden import two folders down is found."""
    nested = tmp_path / "model" / "sub" / "deeper"
    nested.mkdir(parents=True)
    (nested / "x.py").write_text("from engine import run\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    with pytest.raises(AssertionError, match="imports"):
        test_imports_run_one_way("model")


def test_the_loop_and_the_objective_are_one_file_apart():
    """main() of each trainer holds the iteration loop; the s4GAN terms live in the file its step comes from."""
    for script in ("train_full.py", "train_s4GAN.py"):
        source = open(os.path.join(ROOT, script)).read()
        assert "for i, batches in run.iterations():" in source and "step(i, **batches)" in source
    objective = open(os.path.join(ROOT, "methods", "s4gan.py")).read()
    for term in ("def feature_matching_loss", "def self_training_loss", "def discriminator_loss",
                 "def discriminator_input", "loss_ce + self.lambda_fm * loss_fm + self.lambda_st * loss_st"):
        assert term in objective


def test_model_registry_and_the_original_model_names():
    assert canonical_model_name("DeepLab") == canonical_model_name("deeplabv2") == "deeplabv2"
    assert train_s4GAN.parse_args(["--model", "DeepLab"]).model == "deeplabv2"
    model = build_segmenter("resnet18", 3, "deeplabv2", aspp_branches=2)
    groups = model.optim_parameters(1e-3)
    assert [g["lr_mult"] for g in groups] == [1, 10] and groups[1]["lr"] == pytest.approx(1e-2)
    assert SEGMENTERS["deeplabv2"].backbones[0] == "resnet101"


def test_original_defaults_of_the_scripts():
    full, semi = train_full.parse_args([]), train_s4GAN.parse_args([])
    assert full.checkpoint_dir == "./checkpoints/voc_full/" and full.batch_size == 10
    assert full.split_id == "./splits/voc/split_0.pkl" and semi.split_id is None
    assert semi.checkpoint_dir == "./checkpoints/voc_semi_0_125/" and semi.batch_size == 8
    for args in (full, semi):
        assert (args.model, args.backbone, args.num_classes, args.ignore_label) == ("deeplabv2", "resnet101", 21, 255)
        assert args.data_dir == "./data/voc_dataset/" and args.restore_from.endswith("resnet101-5d3b4d8f.pth")
    assert evaluate.get_args_parser().get_default("model") is None  # -> args.json, else deeplabv2
    assert evaluate.parse_args(["--restore-from", "x.pth"]).model == "deeplabv2"


def test_split_files_keep_the_original_names(voc_root, tmp_path, capsys):
    code, _, err = run_main(train_full.main, tiny_train_flags(voc_root, tmp_path / "full", "--num-steps", "1",
                                                              "--labeled-ratio", "0.5", "--split-id", "none"), capsys)
    assert code == 0, err
    assert (tmp_path / "full" / "split.pkl").is_file() and not (tmp_path / "full" / "train_voc_split.pkl").exists()


def test_evaluate_takes_the_model_flags_from_args_json(voc_root, tmp_path, capsys):
    ck = tmp_path / "run"
    code, _, err = run_main(train_full.main, tiny_train_flags(voc_root, ck, "--num-steps", "1"), capsys)
    assert code == 0, err
    argv = tiny_eval_flags(voc_root, ck / "VOC_1.pth", tmp_path / "r")
    del argv[argv.index("--backbone"):argv.index("--backbone") + 2]  # resnet18 comes from args.json
    code, out, err = run_main(evaluate.main, argv, capsys)
    assert code == 0 and "meanIOU" in out, err
    expect_error(evaluate.main, argv + ["--backbone", "resnet50"], capsys, "--backbone resnet50", "--backbone resnet18")


def test_export_original_writes_module_prefixed_keys(tmp_path, capsys):
    model = build_segmenter("resnet18", 3)
    torch.save(model.state_dict(), tmp_path / "VOC_1.pth")
    code, out, err = run_main(weights_main, ["export-original", str(tmp_path / "VOC_1.pth"), str(tmp_path / "o.pth")],
                              capsys)
    assert code == 0, err
    exported = torch.load(tmp_path / "o.pth", weights_only=True)
    assert set(exported) == {"module." + k for k in model.state_dict()}
    assert all(torch.equal(exported["module." + k], v) for k, v in model.state_dict().items())
    assert read_state_dict(str(tmp_path / "o.pth")).keys() == model.state_dict().keys()  # and loads back here


def test_resume_refuses_another_model(tmp_path):
    args = train_s4GAN.parse_args(["--checkpoint-dir", str(tmp_path), "--resume", "auto"])
    saved = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()}
    torch.save({"format": "semisup-seg-training-state-1", "args": {**saved, "model": "deeplabv3p_wrn38"},
                "world_size": 1}, tmp_path / "latest.pth")
    with pytest.raises(UserError, match="--model 'deeplabv3p_wrn38' -> 'deeplabv2'"):
        read_training_state(args, 1)
    torch.save({"format": "semisup-seg-training-state-1", "args": saved, "world_size": 1}, tmp_path / "latest.pth")
    assert read_training_state(argparse.Namespace(**vars(args)), 1)["args"]["model"] == "deeplabv2"
