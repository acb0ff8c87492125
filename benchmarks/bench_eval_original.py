"""evaluate.py against the original evaluate.py, whole processes, on the same VOC images and weights.

    python benchmarks/bench_eval_original.py --original /path/to/semisup-semseg --images 12
    python benchmarks/bench_eval_original.py --original ... --ours "--amp bf16" --ours "--channels-last"

Writes a VOC-layout folder of --images validation images of VOC's sizes (500x375, 375x500, 500x333),
a DeepLabv2-ResNet-101 checkpoint (random weights; the time does not depend on them) and its export
for the original; then runs, alternately, `python evaluate.py` (once per --ours flag set) and the
original's evaluate.py (through tests/crosscheck/driver.py, which lets the authors' code run on today's
PyTorch and on the CPU), each --repeats times, and prints one JSON line per command: wall seconds
(best of the repeats, from process start to exit) and the ratio original / ours. Our runs write their
predicted PNGs (--save-output-images; the original's run writes none, so this counts against ours),
and each flag set's predictions are compared with the first one's: the share of pixels predicted the
same ("agreement"; random weights leave many near-ties, so this is a strict test of precision).
Both see the same OMP_NUM_THREADS (--threads, default: the CPUs this process may use).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from data.synthetic import write_rectangles  # noqa: E402
from model import build_segmenter  # noqa: E402
from model.weights import export_original  # noqa: E402

VOC_SIZES = ((375, 500), (500, 375), (333, 500))


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--original", required=True, help="a checkout of the authors' repository")
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--ours", action="append", default=None,
                   help="extra evaluate.py flags, one set per use (default: one run without extra flags)")
    p.add_argument("--workdir", default=None, help="where the data and outputs go (default: a temporary folder)")
    return p.parse_args(argv)


def prepare(folder, images):
    sizes = [VOC_SIZES[k % len(VOC_SIZES)] for k in range(images)]
    data = write_rectangles(os.path.join(folder, "voc"), sizes_train=sizes[:1], sizes_val=sizes, seed=1)
    torch.manual_seed(0)
    ours = os.path.join(folder, "VOC_1.pth")
    torch.save(build_segmenter("resnet101", 21).state_dict(), ours)
    theirs = os.path.join(folder, "VOC_1_original.pth")
    export_original(ours, theirs)
    return data, ours, theirs


def timed(command, env):
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {shlex.join(command[:3])} ... failed:\n{proc.stderr[-3000:]}")
    return seconds


def agreement(folder, reference, names):
    same = total = 0
    for name in names:
        a = np.asarray(Image.open(os.path.join(folder, name + ".png")))
        b = np.asarray(Image.open(os.path.join(reference, name + ".png")))
        same, total = same + int((a == b).sum()), total + a.size
    return same / total


def main(argv=None):
    args = parse(argv)
    folder = args.workdir or tempfile.mkdtemp(prefix="bench_eval_original_")
    data, ours_ckpt, theirs_ckpt = prepare(folder, args.images)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
    val_list = os.path.join(data, "lists", "val.txt")
    common = ["--dataset", "pascal_voc", "--num-classes", "21", "--data-dir", data, "--data-list", val_list]

    spec_path = os.path.join(folder, "original.in.pt")
    torch.save({"threads": args.threads, "workdir": folder,
                "argv": common + ["--restore-from", theirs_ckpt, "--save-dir", os.path.join(folder, "theirs")]},
               spec_path)
    commands = {"original": ([sys.executable, os.path.join(ROOT, "tests", "crosscheck", "driver.py"), args.original,
                              "evaluate", spec_path, os.path.join(folder, "original.out.pt")], None)}
    for k, extra in enumerate(args.ours or [""]):
        save_dir = os.path.join(folder, f"ours{k}")
        commands[f"evaluate.py {extra}".strip()] = (
            [sys.executable, os.path.join(ROOT, "evaluate.py"), *common, "--restore-from", ours_ckpt,
             "--save-dir", save_dir, "--save-output-images", *shlex.split(extra)], save_dir)

    best = {}
    for _ in range(args.repeats):
        for name, (command, _) in commands.items():
            seconds = timed(command, env)
            best[name] = min(best.get(name, seconds), seconds)
    with open(val_list) as f:
        names = [line.strip() for line in f if line.strip()]
    reference = commands[next(n for n in commands if n != "original")][1]
    for name, (_, save_dir) in commands.items():
        print(json.dumps({"command": name, "images": args.images, "threads": args.threads, "seconds": round(best[name], 2),
                          "speedup_vs_original": round(best["original"] / best[name], 2),
                          "agreement": None if save_dir is None else round(agreement(save_dir, reference, names), 6),
                          "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
