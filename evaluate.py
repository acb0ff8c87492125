"""Evaluate a segmenter checkpoint: per-class IoU and mIoU, result.txt, optional palette PNGs.

    python evaluate.py --dataset pascal_voc --num-classes 21 \
                       --restore-from ./checkpoints/voc_semi_0_125/VOC_30000.pth
"""
import os
import sys

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data import get_dataset, palette
from data.transforms import read_label
from engine import options
from engine.evaluator import MLMTFusion, check_training_flags, eval_collate, evaluate
from model import build_segmenter
from model.weights import load_exact, read_state_dict
from utils.amp import Precision
from utils.distributed import init_environment
from utils.errors import UserError, run_cli
from utils.metrics import format_iou_table
from utils.visualize import colorize, montage, overlay, read_rgb, save_rgb


class PredictionWriter:
    """--save-output-images: a VOC-palette PNG <save-dir>/<id>.png per image, and montage.png with
    the first few images (image | ground truth | prediction over the image) for a quick look."""

    def __init__(self, save_dir, dataset, montage_size=8):
        self.save_dir, self.dataset, self.montage_size = save_dir, dataset, montage_size
        self.colours = palette().flatten().tolist()
        self.kept = []

    def __call__(self, name, prediction):
        path = os.path.join(self.save_dir, name + ".png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image = Image.fromarray(prediction.astype(np.uint8), mode="P")
        image.putpalette(self.colours)
        image.save(path)
        if len(self.kept) < self.montage_size:
            self.kept.append((name, prediction))

    def write_montage(self):
        rows = []
        for name, prediction in self.kept:
            image = read_rgb(self.dataset.image_path(name))
            truth = read_label(self.dataset.label_path(name))
            rows.append([image, colorize(truth), overlay(image, prediction)])
        if rows:
            save_rgb(os.path.join(self.save_dir, "montage.png"),
                     montage(rows, ["image", "ground truth", "prediction"], nearest_columns=(1,)))


def main(argv=None):
    args = options.check_evaluate_args(options.evaluate_parser().parse_args(argv))
    check_training_flags(args.restore_from, args)
    env = init_environment(args.device, args.gpu)
    spec = get_dataset(args.dataset)
    dataset = spec.build_val(args.data_dir, args.data_list, args.num_classes, args.ignore_label)
    model = build_segmenter(args.backbone, args.num_classes, args.aspp_branches)
    load_exact(model, read_state_dict(args.restore_from), args.restore_from)
    model.to(env.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        os.makedirs(args.save_dir, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--save-dir {args.save_dir} cannot be created: {exc.strerror or exc}") from None
    fusion = MLMTFusion(args.mlmt_file, len(dataset), args.num_classes, args.mlmt_fusion) if args.with_mlmt else None
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                        collate_fn=eval_collate, pin_memory=env.device.type == "cuda")
    writer = PredictionWriter(args.save_dir, dataset) if args.save_output_images else None
    confusion = evaluate(model, loader, args.num_classes, env.device, Precision(args.amp, env.device),
                         args.channels_last, fusion, writer)
    if writer is not None:
        writer.write_montage()
    lines = format_iou_table(confusion, spec.class_names(args.num_classes, args.data_dir))
    print("\n".join(lines))
    with open(os.path.join(args.save_dir, "result.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
