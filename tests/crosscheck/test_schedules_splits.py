"""The poly learning rates over a run's iteration numbers, and the labeled / unlabeled indices each
trainer takes from the same split pickle, against the original's scripts."""
import os
import types

import numpy as np
import pytest
import torch

import train_full
import train_mlmt
import train_s4GAN
import train_s4GAN_wrn38
from data.splits import load_permutation, save_permutation
from engine import setup
from engine.config import segmentation_config
from methods.mlmt.config import MLMTConfig
from methods.mlmt import data as mlmt_data
from engine.run import TrainingRun
from methods.s4gan import S4GANStep
from methods.supervised import SupervisedStep
from model import build_discriminator, build_segmenter
from model.wider_resnet import WiderResNet38
from tests.crosscheck.common import fmt, make_mlmt_data, write_wrn38_imagenet
from tests.crosscheck.conftest import run_original, with_our_flags
from utils.distributed import init_environment
from utils.optim import segmenter_optimizer

pytestmark = pytest.mark.original

ITERATIONS = (0, 1, 2, 100, 4999, 5000, 19999, 20000, 39998, 39999, 59999)


@pytest.mark.parametrize("num_steps", [40000, 60000])
def test_poly_learning_rates(original, tmp_path, report, num_steps):
    """Ours: the optimizers the trainers build, their rates set by the run (TrainingRun.set_poly_learning_rates)."""
    flags = {train_s4GAN: ["--learning-rate", "2.5e-4", "--learning-rate-D", "1e-4"],
             train_full: ["--learning-rate", "2.5e-4"],
             train_s4GAN_wrn38: ["--learning-rate", "1e-3", "--learning-rate-D", "1e-5"]}
    iterations = [i for i in ITERATIONS if i < num_steps]
    theirs = run_original(original, "schedules", {
        "scripts": {s.__name__: f + ["--num-steps", num_steps] for s, f in flags.items()},
        "iterations": iterations}, tmp_path)
    worst = 0.0
    for script, extra in flags.items():
        args = script.parse_args(with_our_flags(script.__name__, extra + ["--num-steps", str(num_steps),
                                                                           "--checkpoint-dir", str(tmp_path)]))
        model = build_segmenter("resnet18" if args.model == "deeplabv2" else "wrn38", 21, args.model,
                                **({"wrn_width_mult": 1 / 16} if args.model != "deeplabv2" else {}))
        optimizers = {"S": segmenter_optimizer(model, args.learning_rate, args.momentum, args.weight_decay,
                                               args.sgd_mode)}
        base = {"S": args.learning_rate}
        if hasattr(args, "learning_rate_D"):
            optimizers["D"] = torch.optim.Adam(build_discriminator(21).parameters(), lr=args.learning_rate_D)
            base["D"] = args.learning_rate_D
        run = types.SimpleNamespace(optimizers=optimizers, base_lrs=base, num_iterations=args.num_steps,
                                    segmentation=segmentation_config(args))
        for i, row in zip(iterations, theirs[script.__name__]):
            TrainingRun.set_poly_learning_rates(run, i)
            for name, opt in optimizers.items():
                ours = [g["lr"] for g in opt.param_groups]
                assert len(ours) == len(row[name]), (script.__name__, name)
                worst = max(worst, max(abs(a - b) for a, b in zip(ours, row[name])))
    ok = worst == 0
    report(f"poly learning rate, {num_steps} steps", f"S (backbone, 10x head) and D of the 3 trainers at "
           f"{len(iterations)} iterations", fmt(worst), ok)
    assert ok


@pytest.fixture(scope="module")
def wrn_workdir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("wrn_work"))
    write_wrn38_imagenet(os.path.join(folder, "pretrained_models", "wider_resnet38.pth.tar"),
                         WiderResNet38().state_dict())
    return folder


def test_splits_of_every_trainer(original, voc, no_weights, wrn_workdir, tmp_path, report):
    """The same --split-id and --labeled-ratio: the indices each trainer samples from, and the split
    file it writes into its checkpoint folder."""
    split = os.path.join(voc, "split.pkl")
    data = ["--dataset", "pascal_voc", "--data-dir", voc, "--data-list", os.path.join(voc, "lists/train_aug.txt"),
            "--labeled-ratio", "0.5", "--split-id", split, "--batch-size", "2"]
    env = init_environment("cpu", 0)
    rows = []
    for script, streams, split_file, extra in (
            (train_s4GAN, S4GANStep.streams, "train_voc_split.pkl", []),
            (train_full, SupervisedStep.streams, "split.pkl", []),
            (train_s4GAN_wrn38, S4GANStep.streams, "train_voc_split.pkl", ["--batch-size-unlab", "2"])):
        ours_dir, their_dir = str(tmp_path / f"ours_{script.__name__}"), str(tmp_path / f"theirs_{script.__name__}")
        args = script.parse_args(with_our_flags(script.__name__, data + extra + ["--checkpoint-dir", ours_dir]))
        os.makedirs(ours_dir, exist_ok=True)
        wrn38 = script is train_s4GAN_wrn38
        seg = segmentation_config(args, batch_sizes={"unlabeled": args.batch_size_unlab} if wrn38 else None,
                                  drop_last=wrn38)
        dataset, n = setup.make_train_dataset(seg.data)
        perm = setup.make_split(seg.split, args.random_seed, n)
        save_permutation(os.path.join(ours_dir, split_file), perm)
        pools = setup.make_streams(seg.split, env, dataset, perm, streams, n, args.random_seed, args.num_workers)
        theirs = run_original(original, "capture", {
            "script": script.__name__, "workdir": wrn_workdir,
            "argv": data + extra + ["--restore-from", no_weights, "--checkpoint-dir", their_dir]}, tmp_path)
        ours = [pools[name].sampler.indices for name in streams]
        same = len(ours) == len(theirs["sampler_indices"]) and all(
            np.array_equal(a, b) for a, b in zip(ours, theirs["sampler_indices"]))
        files = [load_permutation(os.path.join(d, split_file), n) for d in (ours_dir, their_dir)]
        same = same and np.array_equal(*files)
        rows.append((script.__name__, same))
    root = make_mlmt_data(str(tmp_path / "mlmt"))
    argv = ["--data-dir", root, "--pkl-file", os.path.join(root, "split.pkl"), "--labeled-ratio", "0.5", "--workers", "0"]
    args = train_mlmt.parse_args(with_our_flags("train_mlmt", argv + ["--output-dir", str(tmp_path / "mlmt_out")]))
    _, _, streams = mlmt_data.make_data(MLMTConfig.from_flags(args), env, say=lambda *_: None)
    theirs = run_original(original, "mlmt_items", {"argv": argv, "items": {}}, tmp_path)
    rows.append(("train_mlmt", all(np.array_equal(streams[k].sampler.indices, theirs["sampler_indices"][k])
                                   for k in ("labeled", "unlabeled"))))
    ok = all(same for _, same in rows)
    report("labeled / unlabeled split", "indices of every stream of " + ", ".join(n for n, _ in rows) +
           "; the split file written", "identical" if ok else "differs: " + ", ".join(n for n, s in rows if not s), ok)
    assert ok


def test_the_shipped_split_files_are_the_authors(original, report):
    """splits/<dataset>/split_0.pkl against the authors' files of that name (read as plain pickles of
    their own repository: the same numbers, whatever the bytes)."""
    import pickle
    from tests.helpers import ROOT
    same = []
    for folder in ("voc", "pc", "city"):
        with open(os.path.join(original, "splits", folder, "split_0.pkl"), "rb") as f:
            theirs = np.asarray(pickle.load(f))
        ours = load_permutation(os.path.join(ROOT, "splits", folder, "split_0.pkl"), len(theirs))
        same.append((folder, len(theirs), np.array_equal(ours, theirs)))
    ok = all(s for _, _, s in same)
    report("shipped split files", "splits/{voc,pc,city}/split_0.pkl against the authors' files (" +
           ", ".join(f"{f} {n}" for f, n, _ in same) + " entries)", "identical" if ok else f"differ: {same}", ok)
    assert ok
