"""Each kind of comparison of the crosscheck shown failing on a deliberate difference of its kind.

    python tests/crosscheck/demonstrate.py --original PATH [--only NAME ...] [--out FILE]

For every demonstration below, one crosscheck test runs with one deliberate difference on our side
only: a flipped switch (SEMISUP_CROSSCHECK_OURS, read by tests/crosscheck/conftest.py `with_our_flags`)
or a one-line change in a temporary copy of this repository. The demonstration holds when the test
fails and the rows it reports as DIFFERS (or its error) are of the expected kind. The table it prints
(and writes to --out) is the one in docs/original.md, "Every comparison can fail".
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tests.helpers import copy_repository  # noqa: E402

# (name, kind of comparison, test id, our flags or None, (file, old line, new line) or None, what must differ)
DEMONSTRATIONS = [
    ("voc-draws", "data items: the random draws", "test_data.py::test_voc_training_items[readme]",
     "--random-mirror", None, "draw"),
    ("context-values", "data items: image values", "test_data.py::test_context_training_items[train_s4GAN]",
     "--context-train-mean rgb", None, "image floats"),
    ("context-order", "data items: the image order", "test_data.py::test_context_training_items[train_full]", None,
     ("data/context_layout.py", "        ids = [line.split()[0] for line in f if line.strip()]",
      "        ids = [line.split()[0] for line in f if line.strip()][::-1]"), "image order"),
    ("context-sizes", "sizes of the rescale", "test_data.py::test_context_rescale_sizes", None,
     ("data/context.py", "        return short, int(1.0 * height * short / width)",
      "        return short, round(1.0 * height * short / width)"), "sizes differ"),
    ("mlmt-items", "MLMT items", "test_data.py::test_mlmt_items", "--image-size 300", None, "draw"),
    ("evaluate", "evaluation: predictions, IoU, result.txt", "test_evaluate.py::test_evaluate[voc]",
     "evaluate: --aspp-branches 4", None, "pixels"),
    ("fusion", "MLMT fusion", "test_evaluate.py::test_evaluate[voc-mlmt]", "evaluate: --mlmt-fusion mask", None,
     "pixels"),
    ("schedule", "learning-rate schedules", "test_schedules_splits.py::test_poly_learning_rates[40000]",
     "--power 1.0", None, "poly learning rate"),
    ("splits", "labeled / unlabeled split", "test_schedules_splits.py::test_splits_of_every_trainer",
     "train_s4GAN: --split-id none", None, "differs"),
    ("flags", "flag defaults", "test_flags.py::test_every_flag_of_the_original_scripts",
     "train_full: --weight-decay 1e-4", None, "weight-decay"),
    ("sgd-lists", "S's update over the original's lists", "test_steps.py::test_s4gan_voc_deeplabv2[foreach]",
     "train_s4GAN: --sgd-mode standard", None, "lists each tensor"),
    ("adam", "D's update", "test_steps.py::test_s4gan_voc_deeplabv2[foreach]", "train_s4GAN: --adam-mode standard",
     None, "tensor of D"),
    ("losses", "losses, D's outputs, gradients", "test_steps.py::test_s4gan_voc_deeplabv2[foreach]",
     "train_s4GAN: --d-real-norm own", None, "losses"),
    ("poly", "learning rates in training", "test_steps.py::test_s4gan_voc_deeplabv2[foreach]",
     "train_s4GAN: --power 1.0", None, "learning rates"),
    ("loaders", "loaders and their restarts", "test_steps.py::test_train_full_voc", None,
     ("engine/setup.py", "                                worker_init_fn=init_worker, drop_last=split.drop_last)",
      "                                worker_init_fn=init_worker, drop_last=True)"), "training loaders"),
    ("snapshots", "snapshot names and schedule",
     "test_steps.py::test_s4gan_snapshots_and_each_sides_checkpoint_in_both_evaluations",
     "train_s4GAN: --save-pred-every 2", None, "snapshots"),
    ("checkpoints", "a checkpoint in both evaluate.py",
     "test_steps.py::test_s4gan_snapshots_and_each_sides_checkpoint_in_both_evaluations",
     "evaluate: --amp bf16", None, "checkpoints across"),
    ("mlmt-outputs", "MLMT output files", "test_mlmt_training.py", "--output-roll per-row", None, "output files"),
    ("mlmt-loaders", "MLMT loaders", "test_mlmt_training.py", "--batch-size-unlab 2", None, "loaders"),
    ("mlmt-ema", "MLMT student and teacher", "test_mlmt_training.py", "--ema-decay 0.5", None, "teacher"),
    ("wrn38-validation", "WRN-38 validation", "test_wrn38_training.py::test_s4gan_cityscapes_wrn38",
     "train_s4GAN_wrn38: --val-protocol all --val-every 2", None, "validates"),
    ("old-sgd-rule", "the old optimizers' rules", "../test_old_optim.py", None,
     ("tests/crosscheck/old_optim.py", '                    g.add_(p, alpha=group["weight_decay"])\n                if momentum',
      '                    g = g.add(p, alpha=group["weight_decay"])\n                if momentum'), "failed"),
]


def copy_with_change(change):
    """A temporary copy of the repository's tracked files with one change (a replaced text)."""
    path, old, new = change
    folder = copy_repository(tempfile.mkdtemp(prefix="semisup-demo-"))
    target = os.path.join(folder, path)
    with open(target) as f:
        text = f.read()
    if text.count(old) < 1:
        raise SystemExit(f"demonstration: {old!r} is not in {path} any more: update demonstrate.py")
    with open(target, "w") as f:
        f.write(text.replace(old, new, 1))
    return folder


def run(demo, original):
    name, kind, test, flags, change, expected = demo
    folder = copy_with_change(change) if change else ROOT
    report = tempfile.mktemp(suffix=".md")
    env = dict(os.environ, SEMISUP_CROSSCHECK_REPORT=report, SEMISUP_CROSSCHECK_OURS=flags or "")
    test_path = os.path.normpath(os.path.join("tests", "crosscheck", test))
    marker = [] if test.startswith("..") else ["-m", "original", "--original", original]
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test_path] + marker,
                          cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.time() - start
    rows = []
    if os.path.exists(report):
        with open(report) as f:
            rows = [line for line in f if "| DIFFERS |" in line]
        os.remove(report)
    if change:
        shutil.rmtree(folder, ignore_errors=True)
    failed = proc.returncode != 0
    evidence = [": ".join(r.split(" | ")[1:3]) for r in rows] or [line for line in proc.stdout.splitlines()
                                                                  if line.startswith("E ")][:1]
    shown = failed and any(expected.lower() in e.lower() for e in evidence + [proc.stdout[-3000:]])
    what = f"`{flags}`" if flags else (f"`{change[0]}`: `{' '.join(change[1].split())[:60]}` -> "
                                       f"`{' '.join(change[2].split())[:60]}`")
    return (kind, what, test, "; ".join(e[:160] for e in evidence[:3]) or "(no row)",
            "fails, as it must" if shown else "DID NOT FAIL AS EXPECTED", f"{seconds:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", required=True, help="a checkout of sud0301/semisup-semseg")
    parser.add_argument("--only", nargs="*", help="names of demonstrations to run (default: all)")
    parser.add_argument("--out", help="also write the table here")
    args = parser.parse_args()
    chosen = [d for d in DEMONSTRATIONS if not args.only or d[0] in args.only]
    lines = ["| kind of comparison | deliberate difference (ours only) | test | what it reports | result | time |",
             "|---|---|---|---|---|---|"]
    failures = 0
    for demo in chosen:
        row = run(demo, os.path.abspath(args.original))
        failures += row[4] != "fails, as it must"
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
