"""train_mlmt.py against the original's: four consecutive optimizer steps over two epochs on each
side (never re-synchronised: the classifier's computations are the same bits on both sides), its
validations after each epoch, and its output files.

ResNet-101 at 320x320; 4 labeled images in batches of 2 (two steps an epoch); 4 unlabeled images in
one batch of 4, so the unlabeled iterator is exhausted at the second step of each epoch and restarted
(and re-created at every epoch, --unlabeled-restart epoch); --burn-in-epochs 0, so the consistency
weight is 0 then 1; --evaluation-epochs 1 with validation batches of 2 over 3 images, so the output
files hold a batch whose np.roll over the flattened batch moves a value across rows. The student's
SGD is PyTorch 0.4's (Nesterov, no repeated tensors)."""
import os

import pytest
import torch

import train_mlmt
from methods.mlmt.labels import normalize_images
from data.sampler import BatchStream
from methods.mlmt.objective import MLMTStep
from tests.crosscheck.common import fmt, make_mlmt_data, max_abs, worst_of
from tests.crosscheck.conftest import run_original, with_our_flags
from tests.crosscheck.recording import clone

pytestmark = pytest.mark.original
LOSS_RTOL = 1e-5


def test_mlmt_training_validation_and_output_files(original, tmp_path, report):
    import torchvision
    root = make_mlmt_data(str(tmp_path / "mlmt"), num_train=8, num_val=3)
    trunk = str(tmp_path / "resnet101.pth")
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet101().state_dict(), trunk)
    argv = ["--data-dir", root, "--pkl-file", os.path.join(root, "split.pkl"), "--labeled-ratio", "0.5",
            "--batch-size-lab", "2", "--batch-size-unlab", "4", "--batch-size-val", "2", "--num-epochs", "2",
            "--burn-in-epochs", "0", "--evaluation-epochs", "1", "--exp-name", "x"]
    steps, drawn, streams = [], [], []
    real_call, real_next = MLMTStep.__call__, BatchStream.__next__

    def call(step, i, epoch, **batches):
        entry = {"iteration": i, "epoch": epoch, "batches": clone(batches), "lr": step.optimizer.param_groups[0]["lr"],
                 "epochs": drawn[-len(batches):]}
        drawn.clear()
        if not steps:
            entry["initial"] = {"student": clone(step.student_params.state_dict()),
                                "teacher": clone(step.teacher.state_dict())}
        entry["values"] = real_call(step, i, epoch, **batches)
        entry["after"] = {"student": clone(step.student_params.state_dict()), "teacher": clone(step.teacher.state_dict())}
        steps.append(entry)
        return entry["values"]

    def next_batch(stream):
        batch = real_next(stream)
        if stream not in streams:
            streams.append(stream)
        drawn.append(stream.epoch)
        return batch

    MLMTStep.__call__, BatchStream.__next__ = call, next_batch
    try:
        train_mlmt.main(with_our_flags("train_mlmt", argv + ["--workers", "0", "--pretrained", trunk, "--output-dir",
                                                             str(tmp_path / "ours"), "--log-every", "1"]))
    finally:
        MLMTStep.__call__, BatchStream.__next__ = real_call, real_next
    assert [s["epoch"] for s in steps] == [0, 0, 1, 1]

    def labeled(batch):
        x = normalize_images(batch[0])
        return (x, x), batch[1]

    def unlabeled(batch):
        return (normalize_images(batch[0]), normalize_images(batch[1])), torch.zeros(len(batch[0]))

    passes = {}  # each stream's batches grouped by our epochs: the n-th iterator the original creates
    for k, (name, convert) in enumerate((("labeled", labeled), ("unlabeled", unlabeled))):
        epochs = {}
        for s in steps:
            epochs.setdefault(s["epochs"][k], []).append(convert(s["batches"][name]))
        passes[k] = [epochs[e] for e in sorted(epochs)]
    theirs = run_original(original, "mlmt", {
        "argv": argv + ["--workers", "0"], "initial": steps[0]["initial"], "deterministic": True, "passes": passes,
        "optimizer": "sgd041", "workdir": str(tmp_path)}, tmp_path)
    label = "MLMT, ResNet-101 320x320"

    printed = [line for line in theirs["stdout"].splitlines() if line.startswith("Loss:")]
    losses, weights = 0.0, (0.0, None)
    for k, (s, t) in enumerate(zip(steps, theirs["steps"])):
        v = s["values"]
        pairs = [(v["loss_class"], theirs["class_loss"][k]), (v["loss_cons"], theirs["cons_loss"][k]),
                 (v["loss"], theirs["backward"][k])]
        losses = max([losses] + [abs(a - float(b)) / max(abs(float(b)), 1e-12) for a, b in pairs])
        assert t["global_step"] == k + 1
        for who in ("student", "teacher"):
            weights = max(weights, worst_of(s["after"][who], t[who], max_abs), key=lambda w: w[0])
    assert len(theirs["steps"]) == len(steps) and len(printed) == 2
    for epoch, line in enumerate(printed):  # the printed means of each epoch against ours (metrics.jsonl)
        numbers = [float(x) for x in line.split() if x.replace(".", "", 1).replace("e-", "", 1).isdigit()]
        ours_means = [sum(s["values"][key] for s in steps if s["epoch"] == epoch) / 2
                      for key in ("loss", "loss_class", "loss_cons", "acc", "acc_mt")]
        losses = max([losses] + [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours_means, numbers)])
    lrs = max(abs(ours - theirs_epoch["lr"]) for ours, theirs_epoch in
              zip([s["lr"] for s in steps if s["iteration"] % 2 == 0], theirs["epochs"]))
    rows = [("the losses (BCE, cosine consistency, total) of each of the 4 steps and the printed epoch means, "
             "w_cons 0 then 1", losses, losses <= LOSS_RTOL),
            ("student and teacher after each step, never re-synchronised: 4 steps of SGD (Nesterov) and EMA "
             "(alpha 1/2, 2/3, 3/4, 4/5), BN statistics included, absolute" +
             (f" (worst {weights[1]})" if weights[1] else ""), weights[0], weights[0] == 0),
            ("the learning rate of each epoch (cosine)", lrs, lrs == 0)]
    for compared, value, ok in rows:
        report(label, compared, fmt(value), ok)
    assert all(ok for _, _, ok in rows), rows

    # the loaders: options as created, and the steps at which each iterator is (re)created
    differences = []
    for k, stream in enumerate(streams):
        options = theirs["loader_options"][k]
        pool = theirs["sampler_indices"][options["sampler"]]
        ours_calls = [0] + [s["iteration"] for a, s in zip(steps, steps[1:]) if s["epochs"][k] != a["epochs"][k]]
        row = {"batch size": (stream.batch_size, options["batch_size"]),
               "drop_last": (stream.loader.drop_last, options["drop_last"]),
               "pool": (sorted(stream.sampler.indices.tolist()), sorted(pool.tolist())),
               "iterators created at steps": (ours_calls, theirs["iter_calls"][k])}
        differences += [f"loader {k} {what}: ours {a}, theirs {b}" for what, (a, b) in row.items() if a != b]
    ok = not differences
    report(label, f"loaders: batch size, drop_last, pool; the steps at which each iterator is created (labeled "
                  f"{theirs['iter_calls'][0]}, unlabeled {theirs['iter_calls'][1]}: exhausted, and new every epoch)",
           "identical" if ok else "; ".join(differences), ok)
    assert ok

    # the validations' output files, byte for byte
    names = sorted(f for f in os.listdir(tmp_path / "mlmt_output" / "x"))
    differ = [n for n in names if (tmp_path / "ours" / n).read_bytes() != (tmp_path / "mlmt_output" / "x" / n).read_bytes()]
    ok = not differ and len(names) == 8 and sorted(f for f in os.listdir(tmp_path / "ours") if f.startswith("output_")) == names
    report(label, f"the output files of the validations after epochs 1 and 2, byte for byte ({len(names)} files: "
                  f"student and teacher, raw and binary; 3 images in batches of 2)",
           "identical" if ok else f"differ: {differ or names}", ok)
    assert ok
