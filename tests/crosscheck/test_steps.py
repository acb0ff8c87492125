"""Training iterations against the original's loops, on the same batches, weights and dropout masks.

Our trainers run for real (main() with its flags); what their step receives and computes is
recorded and given to the original's script, whose loop then runs on those batches, each iteration
starting from our weights of that moment (the first from the same initial weights), with the global
RNG at each iteration's start set to ours (the same dropout masks). Compared: the losses, the
self-trained count, D's outputs, every gradient, the learning rates, the parameters after each
optimizer step and the BN statistics.

Each iteration starts from the same weights because two runs that differ by float rounding drift
apart: with a freshly initialised network many pixels have near-tied logits, so a difference of
1e-7 in the weights flips some argmax pseudo-labels of L_st, which changes the next gradients by a
few percent in deep layers while every loss still agrees to 1e-7 (seen on WRN-38).
"""
import contextlib
import json
import os

import numpy as np
import pytest
import torch

import train_mlmt
import train_s4GAN
import train_s4GAN_wrn38
from methods.mlmt import MLMTStep
from methods.s4gan import S4GANStep
from tests.crosscheck.common import (fmt, linked_workdir, make_mlmt_data, max_abs, relative, worst_of,
                                     write_wrn38_imagenet)
from tests.crosscheck.conftest import run_original
from utils.optim import LegacySGD

pytestmark = pytest.mark.original
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4


class ScoresTaken(Exception):
    pass


def clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone(o) for o in obj)
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    return obj


class OurRun:
    """Records what our S4GANStep receives and computes in a run of one of our trainers: the batches,
    the global RNG state at each step's start, the initial weights, D's outputs, the values, and each
    optimizer step's gradients, learning rates and (when `apply_s`, or for D) the parameters after it."""

    def __init__(self, s_optimizer, apply_s, stop_at_scores=None):
        self.s_optimizer, self.apply_s, self.stop_at_scores = s_optimizer, apply_s, stop_at_scores
        self.iterations, self.initial, self.names = [], None, {}

    def now(self):
        return self.iterations[-1]

    def _recording_step(self, cls, key, apply):
        real = cls.step

        def step(opt, closure=None):
            grads = {self.names[id(p)]: p.grad.detach().clone()
                     for g in opt.param_groups for p in g["params"] if p.grad is not None}
            repeats = {}
            for g in opt.param_groups:
                for p, k in zip(g["params"], g.get("multiplicity") or [1] * len(g["params"])):
                    repeats[self.names[id(p)]] = repeats.get(self.names[id(p)], 0) + k
            entry = {"lr": [g["lr"] for g in opt.param_groups], "grads": grads, "repeats": repeats}
            if apply:
                real(opt, closure)
                entry["after"] = {self.names[id(p)]: p.detach().clone() for g in opt.param_groups for p in g["params"]}
            self.now()[key] = entry

        return real, step

    @contextlib.contextmanager
    def recording(self):
        real_call = S4GANStep.__call__
        run = self

        def call(step, i, **batches):
            if not run.names:
                model = getattr(step.model, "module", step.model)
                run.names = {id(p): n for n, p in model.named_parameters()}
                run.names.update({id(p): n for n, p in step.model_d_without_ddp.named_parameters()})
                run.initial = {"S": clone(model.state_dict()), "D": clone(step.model_d_without_ddp.state_dict())}
                step.model_d_without_ddp.register_forward_hook(run._d_hook)
                run.model = model
            run.iterations.append({"iteration": i, "batches": clone(batches), "rng": torch.get_rng_state(),
                                   "d_calls": []})
            if i > 0:
                run.now()["start"] = {"S": clone(run.model.state_dict()),
                                      "D": clone(step.model_d_without_ddp.state_dict())}
            run.now()["values"] = real_call(step, i, **batches)
            return run.now()["values"]

        real_s, step_s = self._recording_step(self.s_optimizer, "sgd", self.apply_s)
        real_d, step_d = self._recording_step(torch.optim.Adam, "adam", True)
        S4GANStep.__call__, self.s_optimizer.step, torch.optim.Adam.step = call, step_s, step_d
        try:
            yield self
        except ScoresTaken:
            pass
        finally:
            S4GANStep.__call__, self.s_optimizer.step, torch.optim.Adam.step = real_call, real_s, real_d
        self.final_s = clone(self.model.state_dict())

    def _d_hook(self, module, inputs, outputs):
        self.now()["d_calls"].append(tuple(o.detach().clone() for o in outputs))
        if self.stop_at_scores == self.now()["iteration"]:
            raise ScoresTaken()


def threshold_between(main, argv, s_optimizer, iteration=1):
    """A --threshold-st strictly between two of D's scores on the unlabeled batch at `iteration`,
    so that the self-training selection takes some images and leaves others (our run, stopped there)."""
    probe = OurRun(s_optimizer, apply_s=False, stop_at_scores=iteration)
    with probe.recording():
        main(argv + ["--threshold-st", "2.0"])
    scores = np.sort(probe.now()["d_calls"][0][0].reshape(-1).numpy().astype(np.float64))
    assert scores[-1] - scores[0] > 1e-6, scores
    return float((scores[0] + scores[1]) / 2)


def for_the_original(batch, float_labels):
    """Our collated batch as the original's loader gave it (its VOC loader returned float labels)."""
    images, labels, *rest = batch
    return (images, labels.float() if float_labels else labels, *rest)


def compare_s4gan(ours, theirs, args, report, label, apply_s):
    rows = []
    keys_s = worst_of(ours.initial["S"], theirs["initial"]["S"], max_abs)
    keys_d = worst_of(ours.initial["D"], theirs["initial"]["D"], max_abs)
    assert keys_s[0] == 0 and keys_d[0] == 0, ("initial weights differ", keys_s, keys_d)
    assert [t["iteration"] for t in theirs["iterations"]] == [o["iteration"] for o in ours.iterations]
    losses, counts, d_out, grads_s, grads_d, after, lrs = 0.0, [], 0.0, (0.0, None), (0.0, None), 0.0, 0.0
    for o, t in zip(ours.iterations, theirs["iterations"]):
        i, values = o["iteration"], o["values"]
        count = t["selected"]["count"]
        counts.append(f"{count}/{len(t['selected']['scores'])}")
        assert values["above_st"] == count, (i, values["above_st"], count)
        st_used = count > 0 and i > 0
        assert len(t["loss_calc"]) == (2 if st_used else 1)
        loss_s, loss_d = (float(v) for v in t["backward"])
        loss_ce = float(t["loss_calc"][0])
        loss_st = float(t["loss_calc"][1]) if st_used else 0.0
        theirs_values = {"loss_ce": loss_ce, "loss_st": loss_st, "loss_S": loss_s, "loss_D": loss_d,
                         "loss_fm": loss_s - loss_ce - args.lambda_st * loss_st}
        for name, value in theirs_values.items():  # L_fm is a difference of L_S's terms: L_S's scale
            scale = abs(loss_s) if name == "loss_fm" else abs(value)
            losses = max(losses, abs(values[name] - value) / scale if scale else abs(values[name]))
        assert len(o["d_calls"]) == len(t["d_calls"]) == 4
        for ours_call, their_call in zip(o["d_calls"], t["d_calls"]):
            d_out = max(d_out, relative(ours_call[0], their_call[0]), relative(ours_call[1], their_call[1]))
        grads_s = max(grads_s, worst_of(o["sgd"]["grads"], t["sgd"]["grads"]), key=lambda w: w[0])
        grads_d = max(grads_d, worst_of(o["adam"]["grads"], t["adam"]["grads"]), key=lambda w: w[0])
        lrs = max(lrs, max_abs(o["sgd"]["lr"], t["sgd"]["lr"]), max_abs(o["adam"]["lr"], t["adam"]["lr"]))
        after = max(after, worst_of(o["adam"]["after"], t["adam"]["after"], max_abs)[0])
        if apply_s:
            after = max(after, worst_of(o["sgd"]["after"], t["sgd"]["after"], max_abs)[0])
    buffers = {k: v for k, v in ours.final_s.items() if "running" in k}
    bn = worst_of(buffers, {k: theirs["final"]["S"][k] for k in buffers})[0]
    n = len(ours.iterations)
    rows.append((f"losses L_ce, L_st, L_fm, L_S, L_D; self-trained count ({', '.join(counts)}), {n} iterations",
                 losses, losses <= LOSS_RTOL))
    rows.append(("D's outputs (scores, features) in its 4 calls per iteration", d_out, d_out <= LOSS_RTOL))
    rows.append((f"every gradient: S ({len(ours.iterations[0]['sgd']['grads'])} tensors, worst {grads_s[1]}), "
                 f"D ({len(ours.iterations[0]['adam']['grads'])})", max(grads_s[0], grads_d[0]),
                 max(grads_s[0], grads_d[0]) <= GRAD_RTOL))
    rows.append(("learning rates of every group at each step (poly, head 10x)", lrs, lrs == 0))
    rows.append(("weights after each step: " + ("S (SGD over the repeated lists) and " if apply_s else "") +
                 "D (Adam), absolute", after, after <= 1e-6))
    rows.append(("S's BN running statistics after the last iteration (train-mode BN)", bn, bn <= LOSS_RTOL))
    for compared, worst, ok in rows:
        report(label, compared, fmt(worst), ok)
    assert all(ok for _, _, ok in rows), rows


def test_s4gan_iteration_voc_deeplabv2(original, voc, tmp_path, report):
    """Two iterations of train_s4GAN.py on VOC (DeepLabv2-R101, 321x321, batch 3). S's update is
    skipped on both sides (PyTorch 0.4's SGD over the repeated lists cannot be run today; LegacySGD
    has its own test): S's gradients are compared at both iterations, D is updated by Adam."""
    argv = ["--dataset", "pascal_voc", "--data-dir", voc, "--data-list", os.path.join(voc, "lists/train_aug.txt"),
            "--labeled-ratio", "0.5", "--split-id", os.path.join(voc, "split.pkl"), "--batch-size", "3",
            "--num-steps", "2", "--restore-from", "none", "--num-workers", "0", "--log-every", "1"]
    threshold = threshold_between(train_s4GAN.main, argv + ["--checkpoint-dir", str(tmp_path / "probe")], LegacySGD)
    ours = OurRun(LegacySGD, apply_s=False)
    with ours.recording():
        train_s4GAN.main(argv + ["--threshold-st", str(threshold), "--checkpoint-dir", str(tmp_path / "ours")])
    theirs = run_s4gan_original(original, "train_s4GAN", ours, argv, threshold, tmp_path, float_labels=True,
                                step_s=False)
    compare_s4gan(ours, theirs, train_s4GAN.parse_args(argv), report,
                  "s4GAN iteration, VOC, DeepLabv2-R101 321x321", apply_s=False)


def run_s4gan_original(original, script, ours, argv, threshold, tmp_path, float_labels, step_s, workdir=None,
                       keep=("--dataset", "--data-dir", "--data-list", "--labeled-ratio", "--split-id",
                             "--batch-size", "--batch-size-unlab", "--num-steps", "--input-size", "--learning-rate",
                             "--learning-rate-D")):
    torch.save(ours.initial["S"], str(tmp_path / "S_init.pth"))
    torch.save(ours.initial["D"], str(tmp_path / "D_init.pth"))
    their_argv = []
    for k, flag in enumerate(argv):
        if flag in keep:
            their_argv += [flag, argv[k + 1]]
    args = {"train_s4GAN": train_s4GAN, "train_s4GAN_wrn38": train_s4GAN_wrn38}[script].parse_args(argv)
    their_argv += ["--num-classes", str(args.num_classes), "--ignore-label", str(args.ignore_label),
                   "--threshold-st", str(threshold), "--restore-from", str(tmp_path / "S_init.pth"),
                   "--restore-from-D", str(tmp_path / "D_init.pth"), "--checkpoint-dir", str(tmp_path / "theirs")]
    if script == "train_s4GAN_wrn38":
        their_argv += ["--out", str(tmp_path / "theirs_out")]
    passes = {k: [[for_the_original(o["batches"][name], float_labels) for o in ours.iterations]]
              for k, name in enumerate(S4GANStep.streams)}
    return run_original(original, "s4gan", {
        "script": script, "argv": their_argv, "passes": passes, "step_s": step_s, "deterministic": True,
        "rng_states": [o["rng"] for o in ours.iterations], "workdir": workdir or str(tmp_path),
        "start_states": {o["iteration"]: o["start"] for o in ours.iterations if "start" in o}}, tmp_path)


def test_s4gan_iteration_cityscapes_wrn38(original, city, tmp_path, report):
    """Two iterations of train_s4GAN_wrn38.py on Cityscapes (DeepLabv3+ on WRN-38, 256x512, batch 2),
    each ending in the optimizer steps: S by SGD over the original's repeated parameter lists as the
    PyTorch of 2022 applied it (--sgd-mode legacy), D by Adam."""
    argv = ["--dataset", "cityscapes", "--data-dir", city, "--labeled-ratio", "0.67",
            "--split-id", os.path.join(city, "split.pkl"), "--batch-size", "2", "--batch-size-unlab", "2",
            "--input-size", "256,512", "--num-steps", "2", "--learning-rate", "1e-3", "--learning-rate-D", "1e-5",
            "--num-workers", "0", "--log-every", "1", "--val-every", "2", "--val-images", "1"]
    threshold = threshold_between(train_s4GAN_wrn38.main, argv + ["--checkpoint-dir", str(tmp_path / "probe"),
                                                                  "--out", str(tmp_path / "probe_out")],
                                  torch.optim.SGD)
    ours = OurRun(torch.optim.SGD, apply_s=True)
    with ours.recording():
        train_s4GAN_wrn38.main(argv + ["--threshold-st", str(threshold), "--checkpoint-dir", str(tmp_path / "ours"),
                                       "--out", str(tmp_path / "ours_out")])
    trunk = {k[len("backbone."):]: v for k, v in ours.initial["S"].items() if k.startswith("backbone.")}
    workdir = linked_workdir(str(tmp_path / "work"), {"data/city_dataset": city})
    write_wrn38_imagenet(os.path.join(workdir, "pretrained_models", "wider_resnet38.pth.tar"), trunk)
    theirs = run_s4gan_original(original, "train_s4GAN_wrn38", ours, argv, threshold, tmp_path, float_labels=False,
                                step_s=True, workdir=workdir)
    compare_s4gan(ours, theirs, train_s4GAN_wrn38.parse_args(argv), report,
                  "s4GAN iteration, Cityscapes, DeepLabv3+ WRN-38 256x512", apply_s=True)
    with open(tmp_path / "ours_out" / "metrics.jsonl") as f:
        ours_val = [r["iter"] for r in map(json.loads, f) if "val_miou" in r]
    ok = ours_val == theirs["validate_after"]
    report("s4GAN iteration, Cityscapes, DeepLabv3+ WRN-38 256x512", "the iterations after which it validates "
           "(--val-every 2, --val-protocol original)", f"ours {ours_val}, the original {theirs['validate_after']}", ok)
    assert ok


def test_mlmt_iterations(original, tmp_path, report):
    """Two epochs of one iteration each of train_mlmt.py (ResNet-101, 320x320; 2 labeled and 3
    unlabeled images per iteration; --burn-in-epochs 0, so the consistency weight is 0 then 1):
    the losses, the printed epoch means, student and teacher (BN statistics included) after each
    step, and the cosine learning rate of each epoch."""
    import torchvision
    root = make_mlmt_data(str(tmp_path / "mlmt"), num_train=8)
    trunk = str(tmp_path / "resnet101.pth")
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet101().state_dict(), trunk)
    argv = ["--data-dir", root, "--pkl-file", os.path.join(root, "split.pkl"), "--labeled-ratio", "0.25",
            "--batch-size-lab", "2", "--batch-size-unlab", "3", "--num-epochs", "2", "--burn-in-epochs", "0"]
    steps = []
    real_call = MLMTStep.__call__

    def call(step, i, epoch, **batches):
        entry = {"iteration": i, "epoch": epoch, "batches": clone(batches), "lr": step.optimizer.param_groups[0]["lr"]}
        if not steps:
            entry["initial"] = {"student": clone(step.student_params.state_dict()),
                                "teacher": clone(step.teacher.state_dict())}
        entry["values"] = real_call(step, i, epoch, **batches)
        entry["after"] = {"student": clone(step.student_params.state_dict()), "teacher": clone(step.teacher.state_dict())}
        steps.append(entry)
        return entry["values"]

    MLMTStep.__call__ = call
    try:
        train_mlmt.main(argv + ["--workers", "0", "--pretrained", trunk, "--output-dir", str(tmp_path / "ours"),
                                "--log-every", "1"])
    finally:
        MLMTStep.__call__ = real_call
    assert [s["epoch"] for s in steps] == [0, 1]
    from data.multilabel import normalize_images

    def labeled(batch):
        x = normalize_images(batch[0])
        return (x, x), batch[1]

    def unlabeled(batch):
        return (normalize_images(batch[0]), normalize_images(batch[1])), torch.zeros(len(batch[0]))

    theirs = run_original(original, "mlmt", {
        "argv": argv + ["--workers", "0", "--exp-name", "x"], "initial": steps[0]["initial"], "deterministic": True,
        "passes": {0: [[labeled(s["batches"]["labeled"])] for s in steps],
                   1: [[unlabeled(s["batches"]["unlabeled"])] for s in steps]},
        "workdir": str(tmp_path)}, tmp_path)
    printed = [line for line in theirs["stdout"].splitlines() if line.startswith("Loss:")]
    losses, weights, lrs = 0.0, (0.0, None), 0.0
    for k, (s, t) in enumerate(zip(steps, theirs["epochs"])):
        v = s["values"]
        numbers = [float(x) for x in printed[k].split() if x.replace(".", "", 1).replace("e-", "", 1).isdigit()]
        pairs = [(v["loss_class"], theirs["class_loss"][k]), (v["loss_cons"], theirs["cons_loss"][k]),
                 (v["loss"], theirs["backward"][k])] + list(zip([v["loss"], v["loss_class"], v["loss_cons"],
                                                                 v["acc"], v["acc_mt"]], numbers))
        assert len(numbers) == 5, printed[k]
        losses = max([losses] + [abs(a - float(b)) / max(abs(float(b)), 1e-12) for a, b in pairs])
        lrs = max(lrs, abs(s["lr"] - t["lr"]))
        for who in ("student", "teacher"):
            weights = max(weights, worst_of(s["after"][who], t[who], max_abs), key=lambda w: w[0])
    rows = [(f"losses (BCE, cosine consistency, total) of each iteration and the printed epoch means, "
             f"w_cons 0 then 1", losses, losses <= LOSS_RTOL),
            ("student and teacher after each step, BN statistics included, absolute" +
             (f" (worst {weights[1]})" if weights[1] else ""), weights[0], weights[0] <= 1e-6),
            ("the learning rate of each epoch (cosine)", lrs, lrs == 0)]
    for compared, worst, ok in rows:
        report("MLMT iterations, ResNet-101 320x320", compared, fmt(worst), ok)
    assert all(ok for _, _, ok in rows), rows
