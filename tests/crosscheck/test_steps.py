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
from methods.s4gan import S4GANStep
from methods.supervised import SupervisedStep
from model.deeplabv2 import DeepLabV2
from model.weights import main as weights_main
from tests.crosscheck.common import fmt, max_abs, relative
from tests.crosscheck.conftest import run_original, with_our_flags
from tests.crosscheck.recording import OurRun
from tests.crosscheck.training import ITERATIONS, LOSS_RTOL, compare_loaders, compare_training, run_theirs
from tests.helpers import run_main
from utils.optim import LegacyAdam, LegacySGD

pytestmark = pytest.mark.original
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
        run = OurRun(folder / f"records_{form}", S4GANStep, LegacySGD, LegacyAdam, choose_thresholds=True,
                     state_at=ITERATIONS - 1)
        build = train_s4GAN.segmenter_optimizer
        if form == "per-tensor":
            train_s4GAN.segmenter_optimizer = PerTensor(build)
        try:
            with run.recording():
                train_s4GAN.main(with_our_flags("train_s4GAN", voc_argv(voc) + ["--checkpoint-dir",
                                                                                str(folder / f"ours_{form}")]))
        finally:
            train_s4GAN.segmenter_optimizer = build
        runs[form] = run
    theirs = run_theirs(original, "train_s4GAN", runs["foreach"], voc_argv(voc), folder,
                        {"S": "sgd041", "D": "adam041"}, float_labels=True)
    return runs, theirs, folder


@pytest.mark.parametrize("form", ["foreach", "per-tensor"])
def test_s4gan_voc_deeplabv2(voc_s4gan, voc, report, form):
    """S's SGD (LegacySGD in the given form) against PyTorch 0.4's over the original's lists, D's Adam
    against PyTorch 0.4's. The per-tensor form is compared with the multi-tensor form, whose
    comparison with the original it then shares: the same bits in every gradient, weight and
    momentum buffer at every step."""
    runs, theirs, _ = voc_s4gan
    label = f"s4GAN, VOC, DeepLabv2-R101 321x321, --sgd-mode legacy ({form})"
    if form == "foreach":
        args = train_s4GAN.parse_args(voc_argv(voc))
        compare_training(runs[form], theirs, label, report, lambda_st=args.lambda_st, lambda_fm=args.lambda_fm)
        compare_loaders(runs[form], theirs, "s4GAN, VOC", report, {0: 0, 1: 1, 2: 2})
        return
    same, compared = True, 0
    for o in runs[form].iterations:
        a, b = runs[form].heavy(o["iteration"]), runs["foreach"].heavy(o["iteration"])
        for part in ("grads", "after", "state"):
            for k, v in a["sgd"].get(part, {}).items():
                other = b["sgd"][part][k]
                same = same and (all(torch.equal(v[x], other[x]) for x in v) if part == "state" else torch.equal(v, other))
                compared += 1
    report(label, f"S's gradients, weights after every step and momentum buffers after the last ({compared} tensors) "
                  f"against the multi-tensor form (compared with the original above)",
           "identical" if same else "differ", same)
    assert same


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
        for state, after in ((mine, ours.heavy(i)[net]["after"]),
                             (their, torch.load(theirs["iterations"][i]["file"], weights_only=False)[net]["after"])):
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
            code, _, err = run_main(evaluate_py.main, with_our_flags("evaluate", [
                "--dataset", "pascal_voc", "--data-dir", voc, "--data-list", str(val_list), "--restore-from",
                str(ours_file), "--num-workers", "0", "--save-dir", str(out / "ours"), "--save-output-images"]), capsys)
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
    ours = OurRun(folder / "records", SupervisedStep, LegacySGD, state_at=ITERATIONS - 1)
    with ours.recording():
        train_full.main(with_our_flags("train_full", voc_argv(voc) + ["--checkpoint-dir", str(folder / "ours")]))
    theirs = run_theirs(original, "train_full", ours, voc_argv(voc), folder, {"S": "sgd041"}, float_labels=True)
    label = "train_full.py, VOC, DeepLabv2-R101 321x321"
    compare_training(ours, theirs, label, report)
    compare_loaders(ours, theirs, label, report, {0: 0})


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
