"""The demo (`make demo`): s4GAN against the supervised baseline on a synthetic dataset, on CPU.

1. writes a synthetic dataset in the VOC layout (data/synthetic.py) and one split file;
2. trains, with the same seed and split, the supervised baseline and s4GAN on 1/8 of the labels,
   and (unless --no-full) the baseline on all labels: the ordinary scripts, as subprocesses;
3. evaluates each run with evaluate.py;
4. writes demo_output/results.md (mIoU and per-class IoU), demo_output/predictions.png (images,
   ground truth and each run's predictions) and demo_output/curves.png (training curves).

Every command it runs is printed, so each step can be re-run by hand.
"""
import argparse
import os
import sys
import time

from data.classes import voc_palette
from data.transforms import read_label
from utils.experiments import read_result, results_table, run_script as run
from utils.plot import plot_runs, read_metrics, read_threshold
from utils.visualize import colorize, montage, read_rgb, save_rgb


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    p.add_argument("--num-train", type=int, default=400, help="synthetic training images (default: %(default)s)")
    p.add_argument("--num-val", type=int, default=100, help="synthetic validation images (default: %(default)s)")
    p.add_argument("--labeled-ratio", type=float, default=0.125, help="labeled fraction (default: %(default)s)")
    p.add_argument("--steps", type=int, default=800, help="training iterations per run (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="batch per loader (default: %(default)s)")
    p.add_argument("--crop", type=int, default=97, help="training crop (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=5e-3, help="segmenter SGD lr (default: %(default)s)")
    p.add_argument("--learning-rate-D", type=float, default=1e-3,
                   help="discriminator Adam lr; 10x the paper's 1e-4 so that D learns within the demo's few hundred steps "
                        "(default: %(default)s)")
    p.add_argument("--threshold-st", type=float, default=0.6, help="s4GAN self-training threshold (default: %(default)s)")
    p.add_argument("--backbone", default="resnet18", help="(default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=1, help="loader workers per run (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="dataset, split and training seed (default: %(default)s)")
    p.add_argument("--no-full", action="store_true", help="skip the all-labels baseline (saves about a fifth of the time)")
    return p.parse_args(argv)


def make_data(args, out):
    """The synthetic dataset in <out>/data (kept when it is already there): (folder, number of classes)."""
    data = os.path.join(out, "data")
    if not os.path.isfile(os.path.join(data, "lists", "val.txt")):
        run(["-m", "data.synthetic", "--out", data, "--num-train", str(args.num_train), "--num-val", str(args.num_val),
             "--seed", str(args.seed)])
    return data, sum(1 for line in open(os.path.join(data, "classes.txt")) if line.strip())


def make_split(args, path, seed):
    run(["-m", "data.splits", "--num-images", str(args.num_train), "--seed", str(seed), "--out", path])
    return path


def train_flags(args, data, num_classes, split, seed):
    """The demo's recipe: (flags of every training run, flags of a run on --labeled-ratio of the labels)."""
    common = ["--dataset", "folder", "--num-classes", str(num_classes), "--data-dir", data,
              "--data-list", os.path.join(data, "lists", "train_aug.txt"), "--backbone", args.backbone,
              "--restore-from", "none", "--init", "kaiming", "--input-size", f"{args.crop},{args.crop}",
              "--batch-size", str(args.batch_size), "--num-steps", str(args.steps), "--save-pred-every",
              str(args.steps), "--learning-rate", str(args.learning_rate), "--num-workers", str(args.num_workers),
              "--random-seed", str(seed), "--log-every", "20", "--random-mirror"]
    return common, ["--labeled-ratio", str(args.labeled_ratio), "--split-id", split]


def evaluate_flags(args, data, num_classes, folder):
    return ["evaluate.py", "--dataset", "folder", "--num-classes", str(num_classes), "--data-dir", data,
            "--data-list", os.path.join(data, "lists", "val.txt"), "--backbone", args.backbone,
            "--restore-from", os.path.join(folder, f"VOC_{args.steps}.pth"), "--save-dir", os.path.join(folder, "eval"),
            "--num-workers", str(args.num_workers), "--save-output-images"]


def main(argv=None):
    args = parse(argv)
    t_start = time.time()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data, num_classes = make_data(args, out)
    split = make_split(args, os.path.join(out, "split.pkl"), args.seed)
    common, semi = train_flags(args, data, num_classes, split, args.seed)
    fraction = f"1/{round(1 / args.labeled_ratio)}" if args.labeled_ratio < 1 else "all"
    runs = {f"baseline {fraction}": ["train_full.py", *common, *semi],
            f"s4GAN {fraction}": ["train_s4GAN.py", *common, *semi, "--learning-rate-D", str(args.learning_rate_D),
                                  "--threshold-st", str(args.threshold_st)]}
    if not args.no_full:
        runs["baseline all labels"] = ["train_full.py", *common]
    folders = {}
    for name, cmd in runs.items():
        folder = os.path.join(out, "runs", name.replace(" ", "_").replace("/", "_"))
        folders[name] = folder
        run([*cmd, "--checkpoint-dir", folder])
        run(evaluate_flags(args, data, num_classes, folder))

    results = {name: read_result(os.path.join(folder, "eval", "result.txt")) for name, folder in folders.items()}
    table = f"IoU (%) on the synthetic validation set; labeled ratio {args.labeled_ratio}.\n\n" + results_table(results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("# Demo results\n\n" + table)
    print("\n" + table)

    val_ids = [line.strip() for line in open(os.path.join(data, "lists", "val.txt")) if line.strip()][:6]
    rows, palette = [], voc_palette()
    for name in val_ids:
        row = [read_rgb(os.path.join(data, "JPEGImages", name + ".jpg")),
               colorize(read_label(os.path.join(data, "SegmentationClassAug", name + ".png")), palette)]
        row += [colorize(read_label(os.path.join(folder, "eval", name + ".png")), palette) for folder in folders.values()]
        rows.append(row)
    save_rgb(os.path.join(out, "predictions.png"),
             montage(rows, ["image", "ground truth", *folders], tile=(128, 128), nearest_columns=range(1, 2 + len(folders))))
    plot_runs({name: read_metrics(folder) for name, folder in folders.items()}, os.path.join(out, "curves.png"),
              title="training curves", thresholds={name: read_threshold(folder) for name, folder in folders.items()})
    minutes = (time.time() - t_start) / 60
    print(f"wrote {out}/results.md, predictions.png, curves.png ({minutes:.1f} min)")


if __name__ == "__main__":
    main(sys.argv[1:])
