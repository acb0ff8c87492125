"""Training curves from metrics.jsonl.

    python -m utils.plot CHECKPOINT_DIR [CHECKPOINT_DIR ...] [--out curves.png]

One panel per logged quantity (losses, images above the self-training threshold, learning rate,
validation mIoU when a run logged it); several folders are drawn in the same panels, each run in one
colour throughout, labelled by folder name. Noisy curves are drawn faint with a moving average on top
(--smooth, in logged points; 1 draws the raw values only). An s4GAN run also gets the panel
"discriminator": D's mean score on ground truth (solid) and on predictions (dashed), with its
--threshold-st (from the folder's args.json) as a dotted line; docs/your-data.md, "s4GAN on your own data",
says how to read it.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SKIP = {"iter", "time"}
D_SCORES = ("score_real", "score_fake")  # drawn together in the panel "discriminator"


def read_metrics(folder):
    path = os.path.join(folder, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (was the folder written by train_full.py or train_s4GAN.py?)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_threshold(folder):
    """The run's --threshold-st from <folder>/args.json, or None (not an s4GAN run, or no args.json)."""
    try:
        with open(os.path.join(folder, "args.json")) as f:
            return json.load(f).get("threshold_st")
    except (OSError, ValueError):
        return None


def smoothed(values, window):
    """Trailing moving average over up to `window` points (the first points average what there is)."""
    out, total = [], 0.0
    for k, v in enumerate(values):
        total += v
        if k >= window:
            total -= values[k - window]
        out.append(total / min(k + 1, window))
    return out


def draw_curve(ax, records, key, colour, label, smooth, linestyle="-"):
    points = [(r["iter"], r[key]) for r in records if key in r]
    if not points:
        return
    x, y = zip(*points)
    if smooth > 1 and len(y) > 2 and key != "lr":
        ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.8, linestyle=linestyle)
        ax.plot(x, smoothed(list(y), smooth), color=colour, label=label, linewidth=1.4, linestyle=linestyle)
    else:
        ax.plot(x, y, color=colour, label=label, linewidth=1.2, marker="o" if len(y) < 30 else None, markersize=3,
                linestyle=linestyle)


def draw_discriminator_panel(ax, runs, colours, smooth, thresholds):
    for label, records in runs.items():
        draw_curve(ax, records, "score_real", colours[label], label, smooth)
        draw_curve(ax, records, "score_fake", colours[label], label, smooth, linestyle="--")
        if thresholds.get(label) is not None:
            ax.axhline(thresholds[label], color=colours[label], linestyle=":", linewidth=1.2, label="_threshold")
    ax.set_ylim(-0.02, 1.02)
    styles = [plt.Line2D([], [], color="0.3", linestyle=s, label=t)
              for s, t in (("-", "D(ground truth)"), ("--", "D(prediction)"), (":", "--threshold-st"))]
    ax.legend(handles=styles, fontsize=7, loc="best")


def plot_runs(runs, out, title=None, smooth=10, thresholds=None):
    """runs: {label: list of metric records}; thresholds: {label: --threshold-st} for the panel
    "discriminator". Writes a PNG with one panel per quantity; returns the figure."""
    keys = []
    for records in runs.values():
        for record in records:
            for k, v in record.items():
                k = "discriminator" if k in D_SCORES else k
                if k not in SKIP and k not in keys and isinstance(v, (int, float)):
                    keys.append(k)
    colours = {label: f"C{k % 10}" for k, label in enumerate(runs)}  # one colour per run in every panel
    cols = min(3, max(1, len(keys)))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        if key == "discriminator":
            draw_discriminator_panel(ax, runs, colours, smooth, thresholds or {})
        else:
            for label, records in runs.items():
                draw_curve(ax, records, key, colours[label], label, smooth)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        if key == "lr":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if len(runs) > 1:
        handles = [plt.Line2D([], [], color=colours[label], label=label) for label in runs]
        axes.flat[0].legend(handles=handles, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m utils.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="checkpoint folders holding metrics.jsonl")
    parser.add_argument("--out", default=None, help="PNG path (default: <first folder>/curves.png)")
    parser.add_argument("--smooth", type=int, default=10,
                        help="moving-average window in logged points, drawn over the faint raw curve; 1: raw only")
    args = parser.parse_args(argv)
    try:
        runs = {os.path.basename(os.path.normpath(f)): read_metrics(f) for f in args.folders}
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    out = args.out or os.path.join(args.folders[0], "curves.png")
    thresholds = {os.path.basename(os.path.normpath(f)): read_threshold(f) for f in args.folders}
    plot_runs(runs, out, smooth=max(1, args.smooth), thresholds=thresholds)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
