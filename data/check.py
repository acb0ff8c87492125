"""Check a dataset once before hours of training: every listed image and label, and what the labels hold.

    python -m data.check --dataset pascal_voc --data-dir ./data/voc_dataset/ [--data-list LIST] [--split val]

For every listed image: the image and its label exist and decode, the label holds one class index per
pixel (a colour-coded RGB label is the most common mistake), its values lie in [0, --num-classes) or are
the ignore value, and image and label have the same size. Then a summary: images, pixels per class,
classes never seen, images whose every pixel is ignored; and `class_frequencies.png` (--out) with the
pixels per class on a log scale. Exit status 2 with the first problems listed when anything is wrong.
"""
import argparse
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm import tqdm

from data import DATASETS, fill_dataset_defaults
from data.config import DataConfig
from data.spec import label_files
from utils.errors import ArgumentParser, UserError, run_cli

RGB_LABEL_ADVICE = ("labels must hold one class index per pixel (single-channel or palette PNG), not colours: "
                    "map each colour to its class index, e.g. np.array(Image.open(p).convert('RGB')) -> "
                    "index via your colour table, saved with Image.fromarray(index.astype(np.uint8))")


@dataclass
class Report:
    images: int = 0
    pixels: np.ndarray = None
    problems: list = field(default_factory=list)
    all_ignored: list = field(default_factory=list)


def image_size(path):
    """(width, height) of an image that decodes completely."""
    with Image.open(path) as img:
        img.load()
        return img.size


def check_item(dataset, name, num_classes, ignore_label, report):
    image_path, label_path = dataset.image_path(name), dataset.label_path(name)
    for path, what in ((image_path, "image"), (label_path, "label")):
        if not os.path.isfile(path):
            report.problems.append(f"{path}: the {what} of listed id {name} does not exist")
            return
    try:
        size = image_size(image_path)
    except Exception as exc:
        report.problems.append(f"{image_path}: cannot be decoded ({exc})")
        return
    try:
        with Image.open(label_path) as img:
            mode = img.mode
        if mode in ("RGB", "RGBA"):
            report.problems.append(f"{label_path}: an {mode} colour image; {RGB_LABEL_ADVICE}")
            return
        label = dataset.label_indices(name)
    except UserError as exc:
        report.problems.append(str(exc))
        return
    except Exception as exc:
        report.problems.append(f"{label_path}: cannot be decoded ({exc})")
        return
    if (label.shape[1], label.shape[0]) != size:
        report.problems.append(f"{label_path}: {label.shape[1]}x{label.shape[0]} but its image is {size[0]}x{size[1]}")
        return
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_label)
    if bad.any():
        values = np.unique(label[bad])[:5].tolist()
        report.problems.append(f"{label_path}: values {values} outside [0, {num_classes}) that are not the ignore "
                               f"label {ignore_label} (check --num-classes)")
        return
    valid = label[(label >= 0) & (label < num_classes)]
    if valid.size == 0:
        report.all_ignored.append(name)
    report.pixels += np.bincount(valid, minlength=num_classes)[:num_classes]
    report.images += 1


def scan(dataset, num_classes, ignore_label, progress=True):
    report = Report(pixels=np.zeros(num_classes, np.int64))
    for name in tqdm(dataset.ids, desc="checking", unit="image", disable=not progress):
        check_item(dataset, name, num_classes, ignore_label, report)
    return report


def summary(report, class_names, total):
    lines = [f"{report.images} of {total} images readable and consistent"]
    share = report.pixels / max(1, report.pixels.sum())
    width = max(len(n) for n in class_names)
    lines += [f"  {k:3d} {name:{width}s} {count:12d} pixels  {100 * s:6.2f} %"
              for k, (name, count, s) in enumerate(zip(class_names, report.pixels, share))]
    unseen = [name for name, count in zip(class_names, report.pixels) if count == 0]
    lines.append(f"classes never seen: {', '.join(unseen) if unseen else 'none'}")
    lines.append(f"images whose every pixel is ignored: {len(report.all_ignored)}"
                 + (f" ({', '.join(report.all_ignored[:5])}{' ...' if len(report.all_ignored) > 5 else ''})"
                    if report.all_ignored else ""))
    return lines


def plot_frequencies(pixels, class_names, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(class_names)), 4))
    ax.bar(range(len(pixels)), np.maximum(pixels, 0.5))  # a zero would vanish on the log scale
    ax.set_yscale("log")
    ax.set_xticks(range(len(pixels)))
    ax.set_xticklabels(class_names, rotation=90, fontsize=8)
    ax.set_ylabel("pixels")
    ax.set_title("pixels per class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def main(argv=None):
    parser = ArgumentParser(prog="python -m data.check", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pascal_voc", choices=sorted(DATASETS))
    parser.add_argument("--data-dir", default=None, help="dataset root (default: the dataset's)")
    parser.add_argument("--data-list", default=None, help="list of ids (default: the dataset's for --split)")
    parser.add_argument("--split", default="train", choices=("train", "val"), help="which default list to check")
    parser.add_argument("--num-classes", type=int, default=None, help="default: the dataset's")
    parser.add_argument("--ignore-label", type=int, default=None, help="default: the dataset's")
    parser.add_argument("--out", default=".", help="folder for class_frequencies.png")
    parser.add_argument("--max-problems", type=int, default=20, help="problems listed before stopping the list")
    args = parser.parse_args(argv)
    spec = fill_dataset_defaults(args)
    # every listed file is checked by the scan itself, one problem per file, rather than the first up front
    config = DataConfig(args.dataset, args.data_dir, args.num_classes, args.ignore_label, args.data_list,
                        check_files=False)
    build = spec.build_train if args.split == "train" else spec.build_val
    dataset = label_files(build(config), args.dataset, "python -m data.check")
    report = scan(dataset, args.num_classes, args.ignore_label, progress=sys.stderr.isatty())
    names = spec.class_names(args.num_classes, args.data_dir)
    print("\n".join(summary(report, names, len(dataset.ids))))
    os.makedirs(args.out, exist_ok=True)
    plot_frequencies(report.pixels, names, os.path.join(args.out, "class_frequencies.png"))
    print(f"wrote {os.path.join(args.out, 'class_frequencies.png')}")
    if report.problems:
        shown = report.problems[:args.max_problems]
        more = len(report.problems) - len(shown)
        raise UserError(f"{len(report.problems)} problem(s) in {args.dataset} at {args.data_dir}:\n  "
                        + "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else ""))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
