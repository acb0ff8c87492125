"""Reproduce the paper's tables: plan, run (resumably), collect, plot.

    python reproduce.py --table voc                      # print the plan: every run, its commands, an estimate
    python reproduce.py --table voc --run                # run it here, one run after another, then --collect
    python reproduce.py --table voc --emit slurm         # a Slurm array job script, one task per run
    python reproduce.py --table voc --collect            # results/voc.md and results/voc.png from the runs' files

The tables voc-classic, voc-blended and cityscapes-modern follow today's protocol instead
(docs/modern-protocol.md): DeepLabv3+ ResNet-101, the split lists of splits/, three seeds, and the best
snapshot reported beside the final one, marked as selected on the evaluation set.

Each cell of a paper's table is the mean over the splits splits/<dataset>/seeded_{0,1,2}.pkl, as the paper
reports the mean over 3 random splits (the "full" column has no split: its runs differ by
--random-seed). Every run is an ordinary command of this project with the flags of the original
README's command for its dataset (README.md) plus its split, output folder and `--resume auto`; the
plan prints them all, so any run can be repeated by hand. The final snapshot is evaluated; the
original README evaluated VOC_30000.pth of its 40,000-step VOC and Cityscapes runs
(`--eval-snapshot readme`).

A run is done when its final snapshot VOC_<steps>.pth (MLMT: its last output file) and its
evaluation's result.txt exist: --run skips it. A run with a latest.pth and no final snapshot was
interrupted and resumes. A failed run is reported and the others go on; the exit status is then 1.
Ctrl-C stops the sweep after the current run has saved its state. Everything after `--` goes to
every segmentation training command (train_full.py, train_s4GAN.py), e.g. `-- --amp bf16`.
"""
import argparse
import os
import shlex
import sys

from experiments.scripts import ROOT
from experiments import collect, jobs, plan as sweep_plan, running, speed
from experiments.catalog import COCO_WEIGHTS
from utils.errors import ArgumentParser, run_cli


def get_args_parser():
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True,
                   choices=("voc", "context", "cityscapes", "folder", "voc-classic", "voc-blended", "cityscapes-modern"),
                   help="voc (1/50, 1/20, 1/8, full), context or cityscapes (1/8, 1/4, full), or folder: the same "
                        "protocol on your own VOC-layout --data-dir (no paper column); voc-classic, voc-blended, "
                        "cityscapes-modern: today's protocol (DeepLabv3+, split lists; docs/modern-protocol.md)")
    p.add_argument("--init", default="imagenet", choices=("imagenet", "coco"),
                   help="pre-training of the segmenter: the paper's ImageNet table or, for voc, its ImageNet + COCO "
                        f"table (--restore-from {COCO_WEIGHTS}) (default: %(default)s)")
    p.add_argument("--ratios", default=None, help="labeled fractions, e.g. 1/8,full or 0.125; today's tables: their "
                                                  "lists, e.g. 92,1464 or 1_16 (default: the table's)")
    p.add_argument("--splits", default="0,1,2", help="split numbers k of splits/<dataset>/seeded_<k>.pkl "
                                                     "(default: %(default)s)")
    p.add_argument("--methods", default=None,
                   help="some of baseline,s4gan,mlmt (default: the table's; the s4GAN + MLMT rows need train_mlmt.py)")
    p.add_argument("--steps", type=int, default=None, help="--num-steps of every segmentation run (default: the "
                                                           "trainers' 40000)")
    p.add_argument("--data-dir", default=None, help="dataset folder, passed to every command (default: the dataset's)")
    p.add_argument("--eval-snapshot", default="final",
                   help="which snapshot to evaluate: final (VOC_<steps>.pth), readme (the original README's choice: "
                        "VOC_30000.pth of 40,000 steps for VOC and Cityscapes, VOC_40000.pth for Context) or an "
                        "iteration (default: %(default)s)")
    p.add_argument("--out", default=None, help="folder of the runs (default: ./checkpoints/reproduce/<table>)")
    p.add_argument("--results-dir", default="results",
                   help="where <table>.md and <table>.png go (default: %(default)s)")
    p.add_argument("--run", action="store_true", help="train and evaluate every run that is not done, then --collect")
    p.add_argument("--collect", action="store_true", help="only write the table and the plot from the finished runs")
    p.add_argument("--emit", choices=("slurm", "shell"), default=None,
                   help="write a job script (one Slurm array task, or one argument, per run) instead of running")
    p.add_argument("--emit-to", default=None, help="path of that script (default: <out>/<table>.slurm or .sh)")
    p.add_argument("--launcher", choices=("python", "torchrun"), default="python",
                   help="torchrun: each segmentation run on --gpus GPUs, the batch split over them so that the "
                        "total batch stays the paper's (default: %(default)s)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per run with --launcher torchrun (default: %(default)s)")
    p.add_argument("--calibrate", action="store_true",
                   help="time a few iterations of each kind of run here (benchmarks/) and keep the result in "
                        "<out>/calibration.json for the estimate")
    p.add_argument("--sec-per-iter", default=None, help="the estimate's seconds per iteration, e.g. "
                                                        "baseline=0.4,s4gan=0.9,mlmt=0.5")
    p.add_argument("--bench-device", default=None,
                   help="estimate with the benchmarks/RESULTS.md rows of a device measured there (a GPU: "
                        f"{', '.join(speed.measured_gpus(speed.benchmark_rows(speed.RESULTS))) or 'none yet'}), or "
                        "cpu for this machine's CPU (default: this machine's GPU; without one, the GPU measured there)")
    p.add_argument("--eval-flags", default="", help="extra flags for every evaluate.py command, e.g. '--batch-size 8'")
    p.add_argument("--mlmt-flags", default="", help="extra flags for every train_mlmt.py command")
    return p


def collect_flags(own):
    """The flags that choose the plan (what --collect needs to find the same runs)."""
    kept, skip = [], False
    for a in own:
        if skip:
            skip = False
        elif a in ("--emit", "--emit-to"):
            skip = True
        elif a not in ("--run", "--collect", "--calibrate") and not a.startswith(("--emit=", "--emit-to=")):
            kept.append(a)
    return kept


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    own, passthrough = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = get_args_parser().parse_args(own)
    if args.gpus < 1 or (args.gpus > 1 and args.launcher != "torchrun"):
        get_args_parser().error("--gpus N needs --launcher torchrun and N >= 1")

    if os.path.abspath(os.getcwd()) != ROOT:  # the commands run in the project root
        for name in ("out", "data_dir", "results_dir", "emit_to"):
            if getattr(args, name):
                setattr(args, name, os.path.abspath(getattr(args, name)))

    plan = sweep_plan.build_plan(args, passthrough)
    plan.collect_command = shlex.join(["python", "reproduce.py", *collect_flags(own), "--collect",
                                       *(["--", *passthrough] if passthrough else [])])
    if args.collect and not args.run:
        print(collect.collect(plan))
        print(f"wrote {plan.markdown_path} and {plan.png_path}")
        return 0

    device, note = speed.estimate_device(args.bench_device, speed.benchmark_rows(speed.RESULTS))
    if args.calibrate:
        device, note = speed.device_name(), None
        speed.calibrate(plan, device)
    speeds = speed.estimate_speeds(plan, device, args.sec_per_iter)
    print(running.describe(plan, speeds, device, note))

    if args.emit:
        path = jobs.write_job_script(plan, args.emit, args.emit_to, speeds)
        how = f"sbatch {path}" if args.emit == "slurm" else f"bash {path}"
        print(f"\nwrote {path}: {how}; afterwards {plan.collect_command}")
    if not args.run:
        if not args.emit:
            print("\nNothing was run: --run trains and evaluates here, --emit slurm|shell writes a job script.")
        return 0

    failures, stopped = running.execute(plan, speeds)
    print()
    print(collect.collect(plan))
    print(f"wrote {plan.markdown_path} and {plan.png_path}")
    if failures:
        print(f"{len(failures)} of {len(plan.runs)} runs failed:\n  " + "\n  ".join(failures), file=sys.stderr)
    if stopped:
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
