"""The demo (`make demo`): s4GAN against the supervised baseline on a synthetic dataset, on CPU.

1. writes a synthetic dataset in the VOC layout (data/synthetic.py) and one split file;
2. trains, with the same seed and split, the supervised baseline and s4GAN on 1/8 of the labels,
   and (unless --no-full) the baseline on all labels: the ordinary scripts, as subprocesses;
3. evaluates each run with evaluate.py;
4. writes demo_output/results.md (mIoU and per-class IoU, and what one seed can show),
   demo_output/predictions.png (images, ground truth and each run's predictions) and
   demo_output/curves.png (training curves).

Every command it runs is printed, so each step can be re-run by hand. The recipe (dataset, flags,
report) is experiments/demo_recipe.py.
"""
import argparse
import os
import platform
import sys
import time

import torch

from experiments import demo_recipe as recipe
from experiments.scripts import run_script as run


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    recipe.add_recipe_flags(p)
    p.add_argument("--no-full", action="store_true", help="skip the all-labels baseline (saves about a fifth of the time)")
    return p.parse_args(argv)


def machine():
    """Which machine produced the numbers (they depend on its floats)."""
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}, {torch.backends.cpu.get_cpu_capability()}), "
            f"PyTorch {torch.__version__.split('+')[0]}")


def main(argv=None):
    args = parse(argv)
    t_start = time.time()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data, num_classes = recipe.make_data(args, out)
    split = recipe.make_split(args, os.path.join(out, "split.pkl"), args.seed)
    common, semi = recipe.train_flags(args, data, num_classes, split, args.seed)
    folders = {}
    for name, cmd in recipe.runs(args, common, semi, full=not args.no_full).items():
        folders[name] = os.path.join(out, "runs", name.replace(" ", "_").replace("/", "_"))
        run([*cmd, "--checkpoint-dir", folders[name]])
        run(recipe.evaluate_flags(args, data, num_classes, folders[name]))
    table = recipe.write_report(args, out, data, folders, machine())
    print("\n" + table + "\n" + recipe.ONE_SEED)
    print(f"wrote {out}/results.md, predictions.png, curves.png ({(time.time() - t_start) / 60:.1f} min)")


if __name__ == "__main__":
    main(sys.argv[1:])
