"""Training runs against the original's loops: three consecutive iterations on each side, on the same
batches, dropout masks and thresholds.

Our trainers run for real (main() with its flags; tests/crosscheck/recording.py records what their
step receives and computes). The original's script then runs its own loop (driver.py `train_loop`)
on the batches ours drew, grouped by our epochs (its loaders restart where ours started a new
epoch, or the comparison of the restarts fails), with the global random state at each iteration's
start set to ours, and the optimizers of the PyTorch the script was written for
(tests/crosscheck/old_optim.py): S's SGD over the original's own repeated parameter lists, D's Adam.

Each iteration of the original starts S from our S of that moment (weights and BN statistics);
nothing else is ever carried over: D's weights, the SGD momentum buffers and Adam's moments follow
the original's own run from the same start, so three iterations compare how the optimizers' states
evolve. S alone is re-synchronised because a randomly initialised segmenter whose BN uses batch
statistics is chaotic: a relative change of 1e-7 in its weights changes its gradients by percents
(test_why_each_iteration_starts_s_from_our_weights measures it), and the two sides differ by float
rounding (other summation orders in D's pooling and the losses) from the first step on.

Compared per iteration: the losses (L_fm as the original's main() held it), the self-trained count
and pseudo-labels, D's outputs, every gradient, the learning rates, how often each tensor is listed
in S's optimizer, and the change each optimizer step made to every tensor; after the run: the BN
statistics, the loaders (batch sizes, drop_last, epoch lengths, the iterations at which each restarts),
the snapshots (names, schedule, key format), and each side's last snapshot evaluated by both
evaluate.py scripts.
"""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate as evaluate_py
import train_full
import train_s4GAN
import train_s4GAN_wrn38
from engine.evaluator import Validator
from methods.s4gan import S4GANStep
from model.deeplabv2 import DeepLabV2
from methods.supervised import SupervisedStep
from model.weights import main as weights_main
from tests.crosscheck.common import (change_difference, fmt, linked_workdir, make_city_data, max_abs, relative,
                                     worst_of, write_wrn38_imagenet)
from tests.crosscheck.conftest import run_original
from tests.crosscheck.recording import OurRun
from tests.helpers import run_main
from utils.optim import LegacyAdam, LegacySGD

pytestmark = pytest.mark.original
ITERATIONS = 3
# What the numbers support: the two sides compute the same things in other orders (D's pooling, the
# loss reductions), which moves the last bits (the last run's worst values: docs/original.md).
LOSS_RTOL, GRAD_RTOL, CHANGE_RTOL = 1e-5, 1e-4, 1e-4


def for_the_original(float_labels):
    """Our collated batch as the original's loader gave it (its VOC loader returned float labels)."""
    def convert(batch):
        images, labels, *rest = batch
        return (images, labels.float() if float_labels else labels, *rest)
    return convert


def run_theirs(original, script, ours, argv, tmp_path, optimizers, float_labels, workdir=None, real_loaders=(),
               sorted_walk=False,
               keep=("--dataset", "--data-dir", "--data-list", "--labeled-ratio", "--split-id", "--batch-size",
                     "--batch-size-unlab", "--num-steps", "--input-size", "--learning-rate", "--learning-rate-D",
                     "--save-pred-every"), extra=()):
    """The original's `script` on what our run recorded, from our initial weights."""
    torch.save(ours.initial["S"], str(tmp_path / "S_init.pth"))
    their_argv = ["--restore-from", str(tmp_path / "S_init.pth"), "--checkpoint-dir", str(tmp_path / "theirs")]
    if "D" in ours.initial:
        torch.save(ours.initial["D"], str(tmp_path / "D_init.pth"))
        their_argv += ["--restore-from-D", str(tmp_path / "D_init.pth")]
    for k, flag in enumerate(argv):
        if flag in keep:
            their_argv += [flag, argv[k + 1]]
    spec = {"script": script, "argv": their_argv + list(extra), "passes": ours.passes(for_the_original(float_labels)),
            "optimizers": optimizers, "deterministic": True, "rng_states": [o["rng"] for o in ours.iterations],
            "real_loaders": real_loaders, "workdir": workdir or str(tmp_path), "sorted_walk": sorted_walk}
    if ours.choose_thresholds:
        spec["thresholds"] = [o["threshold"] for o in ours.iterations]
    spec["resync_s"] = {o["iteration"]: o["start_s"] for o in ours.iterations if "start_s" in o}
    return run_original(original, "train_loop", spec, tmp_path)


def worst(current, candidate):
    return max(current, candidate, key=lambda w: w[0])


def compare_training(ours, theirs, label, report, lambda_st=None, lambda_fm=None):
    """Iteration by iteration (see the module's docstring); one report row per kind of comparison."""
    keys_s = worst_of(ours.initial["S"], theirs["initial"]["S"], max_abs)
    assert keys_s[0] == 0, ("initial weights differ", keys_s)
    if "D" in ours.initial:
        assert worst_of(ours.initial["D"], theirs["initial"]["D"], max_abs)[0] == 0, "initial D differs"
    assert [t["iteration"] for t in theirs["iterations"]] == [o["iteration"] for o in ours.iterations]
    s4gan = lambda_st is not None
    losses, d_out, lrs = (0.0, None), 0.0, 0.0
    grads, changes = {"S": (0.0, None), "D": (0.0, None)}, {"S": (0.0, None), "D": (0.0, None)}
    counts, pseudo, repeats_differ = [], [0, 0], []
    for o, t in zip(ours.iterations, theirs["iterations"]):
        i, values = o["iteration"], o["values"]
        theirs_values = {"loss_ce": float(t["loss_calc"][0])}
        if s4gan:
            count = t["selected"]["count"]
            counts.append(f"{count}/{len(t['selected']['scores'])}")
            assert values["above_st"] == count, (i, values["above_st"], count)
            st_used = count > 0 and i > 0
            assert len(t["loss_calc"]) == (2 if st_used else 1)
            if count:
                ours_pseudo = o["pseudo_labels"].numpy()
                theirs_pseudo = t["selected"]["pseudo_labels"].numpy()
                pseudo[0] += int((ours_pseudo != theirs_pseudo).sum())
                pseudo[1] += ours_pseudo.size
            loss_s, loss_d = (float(v) for v in t["backward"])
            theirs_values.update(loss_st=float(t["loss_calc"][1]) if st_used else 0.0, loss_S=loss_s, loss_D=loss_d,
                                 loss_fm=lambda_fm * t["locals"]["loss_fm"])
            assert len(o["d_calls"]) == len(t["d_calls"]) == 4
            for ours_call, their_call in zip(o["d_calls"], t["d_calls"]):
                d_out = max(d_out, relative(ours_call[0], their_call[0]), relative(ours_call[1], their_call[1]))
        for name, value in theirs_values.items():
            # L_st is a mean of -log p(own argmax), near 0 for confident maps: its float32 resolution is
            # absolute, so it is compared relative to L_S, the objective it is part of
            scale = abs(theirs_values["loss_S"]) if name == "loss_st" else abs(value)
            diff = abs(values[name] - value) / scale if scale else abs(values[name])
            if diff > losses[0]:
                losses = (diff, f"{name}, iteration {i}")
        for net, key in (("S", "sgd"), ("D", "adam")):
            if key not in t:
                continue
            grads[net] = worst(grads[net], worst_of(o[key]["grads"], t[key]["grads"]))
            changes[net] = worst(changes[net], change_difference(o[key], t[key]))
            lrs = max(lrs, max_abs(o[key]["lr"], t[key]["lr"]))
        if o["sgd"]["repeats"] != t["sgd"]["repeats"]:
            repeats_differ.append(i)
    buffers = {k: v for k, v in ours.final["S"].items() if "running" in k}
    bn = worst_of(buffers, {k: theirs["final"]["S"][k] for k in buffers})
    n, listed = len(ours.iterations), ours.iterations[0]["sgd"]["repeats"]
    rows = [(("losses L_ce, L_fm, L_S, L_D, each relative to itself, L_st to L_S; self-trained count ("
              + ", ".join(counts) + ")" if s4gan else
              "the loss L_ce") + f", {n} iterations" + (f" (worst {losses[1]})" if losses[1] else ""),
             losses[0], losses[0] <= LOSS_RTOL)]
    if s4gan:
        rows.append((f"self-training pseudo-labels: pixels that differ of {pseudo[1]}", pseudo[0], pseudo[0] == 0))
        rows.append(("D's outputs (scores, features) in its 4 calls per iteration", d_out, d_out <= LOSS_RTOL))
    for net in grads:
        if grads[net][1] is None:
            continue
        rows.append((f"every gradient of {net} ({len(ours.iterations[0]['sgd' if net == 'S' else 'adam']['grads'])} "
                     f"tensors, worst {grads[net][1]})", grads[net][0], grads[net][0] <= GRAD_RTOL))
    rows.append((f"how many times S's optimizer lists each tensor ({sum(listed.values())} listings of "
                 f"{len(listed)} tensors)", f"differs at iterations {repeats_differ}" if repeats_differ else "identical",
                 not repeats_differ))
    rows.append(("learning rates of every group at each step (poly, head 10x)", lrs, lrs == 0))
    for net, what in (("S", "SGD over the original's lists"), ("D", "Adam")):
        if changes[net][1] is not None:
            rows.append((f"the change each step made to every tensor of {net} ({what}), ||ours - theirs|| / "
                         f"||theirs|| (worst {changes[net][1]})", changes[net][0], changes[net][0] <= CHANGE_RTOL))
    rows.append(("S's BN running statistics after the last iteration (train-mode BN)", bn[0], bn[0] <= LOSS_RTOL))
    for compared, value, ok in rows:
        report(label, compared, value if isinstance(value, str) else fmt(value), ok)
    assert all(ok for _, _, ok in rows), [r for r in rows if not r[2]]


def compare_loaders(ours, theirs, label, report, numbers):
    """Each training loader of the original (its options as created, its restarts as called) against
    our stream of the same role: batch size, drop_last, pool, batches per epoch, restart iterations.
    `numbers`: {their loader number: our stream's position in draw order}."""
    differences = []
    for k, ours_k in numbers.items():
        options, stream = theirs["loader_options"][k], ours.streams[ours_k]
        pool = theirs["sampler_indices"][options["sampler"]] if options["sampler"] is not None else None
        size = len(pool) if pool is not None else len(stream.sampler)
        their_length = size // options["batch_size"] if options["drop_last"] else -(-size // options["batch_size"])
        ours_restarts = [o["iteration"] for a, o in zip(ours.iterations, ours.iterations[1:])
                         if o["epochs"][ours_k] != a["epochs"][ours_k]]
        their_restarts = [c for c in theirs["iter_calls"][k] if c is not None]
        row = {"batch size": (stream.batch_size, options["batch_size"]),
               "drop_last": (stream.loader.drop_last, options["drop_last"]),
               "shuffled": (True, options["shuffle"] or options["sampler"] is not None),
               "batches per epoch": (len(stream.loader), their_length),
               "restarts at iterations": (ours_restarts, their_restarts)}
        if pool is not None:
            row["pool"] = (sorted(stream.sampler.indices.tolist()), sorted(np.asarray(pool).tolist()))
        differences += [f"loader {k} {what}: ours {a}, theirs {b}" for what, (a, b) in row.items() if a != b]
    restarts = {k: [c for c in theirs["iter_calls"][k] if c is not None] for k in numbers}
    ok = not differences
    report(label, f"training loaders: batch size, drop_last, shuffling, pool, batches per epoch, the iterations "
                  f"at which each restarts ({restarts})", "identical" if ok else "; ".join(differences), ok)
    assert ok, differences


VOC_ARGV = ["--dataset", "pascal_voc", "--labeled-ratio", "0.25", "--batch-size", "2", "--num-steps", str(ITERATIONS),
            "--restore-from", "none", "--num-workers", "0", "--log-every", "1", "--save-pred-every", "1"]


def voc_argv(voc):
    return ["--data-dir", voc, "--data-list", os.path.join(voc, "lists/train_aug.txt"),
            "--split-id", os.path.join(voc, "split.pkl")] + VOC_ARGV


class PerTensor:
    """segmenter_optimizer, its LegacySGD switched to the per-tensor form."""

    def __init__(self, build):
        self.build = build

    def __call__(self, *args, **kwargs):
        optimizer = self.build(*args, **kwargs)
        optimizer.foreach = False
        return optimizer


@pytest.fixture(scope="module")
def voc_s4gan(original, voc, module_tmp):
    """train_s4GAN.py on VOC (DeepLabv2-R101, 321x321, batch 2, 3 labeled images: the labeled and
    real streams restart at iteration 2), ours in both forms of --sgd-mode legacy, and the original."""
    folder = module_tmp("voc_s4gan")
    runs = {}
    for form in ("foreach", "per-tensor"):
        run = OurRun(S4GANStep, LegacySGD, LegacyAdam, choose_thresholds=True)
        build = train_s4GAN.segmenter_optimizer
        if form == "per-tensor":
            train_s4GAN.segmenter_optimizer = PerTensor(build)
        try:
            with run.recording():
                train_s4GAN.main(voc_argv(voc) + ["--checkpoint-dir", str(folder / f"ours_{form}")])
        finally:
            train_s4GAN.segmenter_optimizer = build
        runs[form] = run
    theirs = run_theirs(original, "train_s4GAN", runs["foreach"], voc_argv(voc), folder,
                        {"S": "sgd041", "D": "adam041"}, float_labels=True)
    return runs, theirs, folder


@pytest.mark.parametrize("form", ["foreach", "per-tensor"])
def test_s4gan_voc_deeplabv2(voc_s4gan, voc, report, form):
    """S's SGD (LegacySGD in the given form) against PyTorch 0.4's over the original's lists, D's Adam
    against PyTorch 0.4's."""
    runs, theirs, _ = voc_s4gan
    ours = runs[form]
    args = train_s4GAN.parse_args(voc_argv(voc))
    label = f"s4GAN, VOC, DeepLabv2-R101 321x321, --sgd-mode legacy ({form})"
    if form == "per-tensor":  # the same bits as the multi-tensor form, every weight at every step
        same = all(torch.equal(a["sgd"]["after"][k], b["sgd"]["after"][k])
                   for a, b in zip(ours.iterations, runs["foreach"].iterations) for k in a["sgd"]["after"])
        report(label, "S's weights after every step against the multi-tensor form", "identical" if same else
               "differ", same)
        assert same
    compare_training(ours, theirs, label, report, lambda_st=args.lambda_st, lambda_fm=args.lambda_fm)
    if form == "foreach":
        compare_loaders(ours, theirs, "s4GAN, VOC", report, {0: 0, 1: 1, 2: 2})


def test_s4gan_snapshots_and_each_sides_checkpoint_in_both_evaluations(voc_s4gan, original, voc, tmp_path, capsys,
                                                                        report):
    """The snapshots each side wrote (names: the save schedule; keys; each equal to that side's weights
    after that iteration), then each side's last snapshot evaluated by our evaluate.py and by the
    original's on the same validation image: the original's file as it is, ours exported with
    `python -m model.weights export-original`. Each checkpoint gives the same predictions in both."""
    runs, theirs, folder = voc_s4gan
    ours = runs["foreach"]
    ours_dir, their_dir = folder / "ours_foreach", folder / "theirs"
    names = {side: sorted(f for f in os.listdir(d) if f.startswith("VOC_")) for side, d in
             (("ours", ours_dir), ("theirs", their_dir))}
    assert names["ours"] == names["theirs"], names
    key_forms, worst_value = set(), 0.0
    for name in names["theirs"]:
        mine, their = torch.load(ours_dir / name), torch.load(their_dir / name)
        key_forms.add((next(iter(mine)).startswith("module."), next(iter(their)).startswith("module.")))
        their = {k[len("module."):]: v for k, v in their.items()}
        assert set(mine) == set(their), name
        i = int(name.split("_")[1].split(".")[0])
        i = ITERATIONS - 1 if i == ITERATIONS else i  # VOC_<num-steps>.pth: after the last iteration
        net = "adam" if name.endswith("_D.pth") else "sgd"
        for state, record in ((mine, ours.iterations), (their, theirs["iterations"])):
            after = record[i][net]["after"]
            worst_value = max(worst_value, max(max_abs(state[k], after[k]) for k in after))
    ok = worst_value == 0 and key_forms == {(False, True)}
    report("s4GAN snapshots, VOC", f"files written with --save-pred-every 1 over {ITERATIONS} iterations "
           f"({', '.join(names['theirs'])}); keys (ours bare, the original's 'module.'); each file against its side's "
           f"weights after that iteration", f"same names; {fmt(worst_value)}", ok)
    assert ok

    val_list = tmp_path / "one_val.txt"
    with open(os.path.join(voc, "lists", "val.txt")) as f:
        first = f.readline().strip()
    val_list.write_text(first + "\n")
    checkpoint = f"VOC_{ITERATIONS}.pth"
    exported = tmp_path / "ours_original_keys.pth"
    assert run_main(weights_main, ["export-original", str(ours_dir / checkpoint), str(exported)], capsys)[0] == 0
    rows = []
    for label, ours_file, their_file in (("the original's snapshot", their_dir / checkpoint, their_dir / checkpoint),
                                         ("our snapshot", ours_dir / checkpoint, exported)):
        out = tmp_path / label.replace(" ", "_").replace("'", "")
        logits = []
        hook = torch.nn.modules.module.register_module_forward_hook(
            lambda module, inputs, output: logits.append(output.detach().clone()) if isinstance(module, DeepLabV2)
            else None)
        try:
            code, _, err = run_main(evaluate_py.main, ["--dataset", "pascal_voc", "--data-dir", voc, "--data-list",
                                                       str(val_list), "--restore-from", str(ours_file), "--num-workers",
                                                       "0", "--save-dir", str(out / "ours"), "--save-output-images"],
                                    capsys)
        finally:
            hook.remove()
        assert code == 0, err
        result = run_original(original, "evaluate", {
            "argv": ["--dataset", "pascal_voc", "--data-dir", voc, "--data-list", str(val_list), "--restore-from",
                     str(their_file), "--save-dir", str(out / "theirs")], "workdir": str(tmp_path), "logits": True},
            tmp_path)
        ours_pred = np.asarray(Image.open(out / "ours" / f"{first}.png")).ravel()
        gt, their_pred = result["pairs"][0]
        assert len(logits) == len(result["logits"]) == 1
        rows.append((label, int((ours_pred != their_pred).sum()), their_pred.size, relative(logits[0], result["logits"][0])))
    ok = all(differ == 0 and logit <= LOSS_RTOL for _, differ, _, logit in rows)
    report("checkpoints across the two evaluate.py", "; ".join(f"{label}: the segmenter's logits, the {total} predicted "
                                                              f"pixels" for label, _, total, _ in rows),
           "; ".join(f"{fmt(logit)}, {differ} pixels" for _, differ, _, logit in rows), ok)
    assert ok


def test_train_full_voc(original, voc, module_tmp, report):
    """train_full.py on VOC (DeepLabv2-R101, 321x321, batch 2, 3 labeled images: the loader restarts at
    iteration 2): L_ce, gradients, S's SGD against PyTorch 0.4's over the original's lists."""
    folder = module_tmp("voc_full")
    ours = OurRun(SupervisedStep, LegacySGD)
    with ours.recording():
        train_full.main(voc_argv(voc) + ["--checkpoint-dir", str(folder / "ours")])
    theirs = run_theirs(original, "train_full", ours, voc_argv(voc), folder, {"S": "sgd041"}, float_labels=True)
    label = "train_full.py, VOC, DeepLabv2-R101 321x321"
    compare_training(ours, theirs, label, report)
    compare_loaders(ours, theirs, label, report, {0: 0})


CITY_ARGV = ["--dataset", "cityscapes", "--labeled-ratio", "0.5", "--batch-size", "2", "--batch-size-unlab", "2",
             "--input-size", "256,512", "--num-steps", str(ITERATIONS), "--learning-rate", "1e-3",
             "--learning-rate-D", "1e-5", "--num-workers", "0", "--log-every", "1", "--save-pred-every", "1000"]


def test_s4gan_cityscapes_wrn38(original, module_tmp, report):
    """train_s4GAN_wrn38.py on Cityscapes (DeepLabv3+ on WRN-38, 256x512, batch 2): S's SGD against
    the for-loop SGD of PyTorch 1.9-1.11 over the original's repeated lists (--sgd-mode legacy), D's
    Adam; and its validation after iteration 0 (--val-protocol original), which the original runs
    on its own validation loader (the first image of each batch of --batch-size) through its own
    metric: the images, each prediction, the per-class IoU and result.txt."""
    folder = module_tmp("city_wrn38")
    city = make_city_data(str(folder / "city"), val={"munster": 2, "frankfurt": 1})  # batches of 2: images 0, 2
    argv = ["--data-dir", city, "--split-id", os.path.join(city, "split.pkl")] + CITY_ARGV
    ours = OurRun(S4GANStep, torch.optim.SGD, torch.optim.Adam, choose_thresholds=True)
    confusions, real_validator = [], Validator.__call__
    Validator.__call__ = lambda self, model: confusions.append(real_validator(self, model)) or confusions[-1]
    try:
        with ours.recording():
            train_s4GAN_wrn38.main(argv + ["--checkpoint-dir", str(folder / "ours"), "--out", str(folder / "ours_out")])
    finally:
        Validator.__call__ = real_validator
    trunk = {k[len("backbone."):]: v for k, v in ours.initial["S"].items() if k.startswith("backbone.")}
    workdir = linked_workdir(str(folder / "work"), {"data/city_dataset": city})
    write_wrn38_imagenet(os.path.join(workdir, "pretrained_models", "wider_resnet38.pth.tar"), trunk)
    theirs = run_theirs(original, "train_s4GAN_wrn38", ours, argv, folder, {"S": "sgd1x", "D": "adam"},
                        float_labels=False, workdir=workdir, real_loaders=(3,), extra=["--out", str(folder / "theirs_out")],
                        sorted_walk=True)
    label = "s4GAN, Cityscapes, DeepLabv3+ WRN-38 256x512"
    args = train_s4GAN_wrn38.parse_args(argv)
    compare_training(ours, theirs, label, report, lambda_st=args.lambda_st, lambda_fm=args.lambda_fm)
    compare_loaders(ours, theirs, label, report, {0: 0, 1: 1, 2: 2})
    compare_wrn38_validation(confusions, theirs, folder, report)


def compare_wrn38_validation(confusions, theirs, folder, report):
    import json
    with open(folder / "ours_out" / "metrics.jsonl") as f:
        ours_val = [r for r in map(json.loads, f) if "val_miou" in r]
    their_after = [v["after"] for v in theirs["validations"]]
    schedule_ok = [r["iter"] for r in ours_val] == their_after
    report("WRN-38 validation", "the iterations after which it validates (--val-protocol original)",
           f"ours {[r['iter'] for r in ours_val]}, the original {their_after}", schedule_ok)
    assert schedule_ok and their_after == [0]
    with open(folder / "ours_out" / "result.txt") as f:
        ours_table = f.read()
    with open(folder / "theirs_out" / "result.txt") as f:
        their_table = f.read()
    ours_iou = [line.split()[-1] for line in ours_table.splitlines() if line.startswith("class")]
    their_iou = [line.split()[-1] for line in their_table.splitlines() if line.startswith("class")]
    their_miou = float(their_table.strip().splitlines()[-1].split(":")[1])
    validation = theirs["validations"][0]
    pairs = validation["pairs"]
    confusion_diff = int(np.abs(confusions[0].numpy() - validation["confusion"]).sum())
    miou_diff = abs(ours_val[0]["val_miou"] - validation["miou"])
    ok = ours_iou == their_iou and confusion_diff == 0 and miou_diff <= 1e-12 and abs(their_miou - validation["miou"]) < 1e-9
    report("WRN-38 validation", f"{len(pairs)} validation images (the first of each batch), {sum(p[1].size for p in pairs)} "
           f"pixels ({len(np.unique(np.concatenate([p[1] for p in pairs])))} classes predicted): the confusion "
           f"matrix, the per-class IoU of result.txt and the mIoU ({validation['miou']:.4f})",
           f"{confusion_diff} pixels counted elsewhere; IoU table {'identical' if ours_iou == their_iou else 'differs'}; "
           f"mIoU {fmt(miou_diff)}", ok)
    assert ok


def test_why_each_iteration_starts_s_from_our_weights(report):
    """The gradients of the segmenter the runs above start from (DeepLabv2-R101, the original's
    N(0, 0.01) initialisation, BN on batch statistics), at the weights and after a relative change of
    1e-7 (about float32's resolution) in every weight: the median change of a tensor's gradient."""
    from model import build_segmenter
    from utils.losses import masked_cross_entropy
    from utils.tensors import upsample
    torch.manual_seed(0)
    model = build_segmenter("resnet101", 21, "deeplabv2", aspp_branches=2).train()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 321, 321, generator=generator) * 50
    labels = torch.randint(0, 21, (2, 321, 321), generator=generator)

    def gradients(scale):
        model.load_state_dict(start)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
        model.zero_grad()
        masked_cross_entropy(upsample(model(images), (321, 321)), labels, 255).backward()
        return {n: p.grad.double().clone() for n, p in model.named_parameters() if p.grad is not None}

    before, after = gradients(0.0), gradients(1e-7)
    median = float(np.median([float((after[k] - before[k]).norm() / before[k].norm()) for k in before]))
    report("why S restarts from our weights", "DeepLabv2-R101 at initialisation, train-mode BN: the median "
           "change of a tensor's gradient when every weight changes by a relative 1e-7", fmt(median), median > 1e-3)
    assert median > 1e-3, "the segmenter is no longer chaotic here: the runs could compare whole trajectories"
