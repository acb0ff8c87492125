"""Training curves from metrics.jsonl.

    python -m utils.plot CHECKPOINT_DIR [CHECKPOINT_DIR ...] [--out curves.png]

One panel per logged quantity (losses, images above the self-training threshold, learning rate);
several folders are drawn in the same panels, labelled by folder name.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SKIP = {"iter", "time"}


def read_metrics(folder):
    path = os.path.join(folder, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (was the folder written by train_full.py or train_s4GAN.py?)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_runs(runs, out, title=None):
    """runs: {label: list of metric records}. Writes a PNG with one panel per quantity."""
    keys = []
    for records in runs.values():
        for record in records:
            keys += [k for k, v in record.items() if k not in SKIP and k not in keys and isinstance(v, (int, float))]
    cols = min(3, max(1, len(keys)))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for label, records in runs.items():
            points = [(r["iter"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points), label=label, linewidth=1.2)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        if key == "lr":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if len(runs) > 1:
        axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m utils.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="checkpoint folders holding metrics.jsonl")
    parser.add_argument("--out", default=None, help="PNG path (default: <first folder>/curves.png)")
    args = parser.parse_args(argv)
    try:
        runs = {os.path.basename(os.path.normpath(f)): read_metrics(f) for f in args.folders}
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    out = args.out or os.path.join(args.folders[0], "curves.png")
    plot_runs(runs, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
