"""Evaluate a segmenter checkpoint: per-class IoU and mIoU, result.txt, optional palette PNGs.

    python evaluate.py --dataset pascal_voc --num-classes 21 \
                       --restore-from ./checkpoints/voc_semi_0_125/VOC_30000.pth

Single scale, the original's protocol per dataset (engine/evaluator.py). --model, --backbone and
--num-classes not given are read from the args.json that this project's trainers write.
"""
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data import get_dataset
from engine import options
from engine.config import data_config, eval_mode, model_config
from engine.evaluator import (eval_collate, evaluate, montage_of_predictions,
                              uint8_batches)
from engine.fidelity import apply_profile
from methods.mlmt.fusion import MLMTFusion
from model import build_segmenter
from model.inference import fold_batch_norms
from model.weights import load_exact, read_state_dict
from utils.amp import Precision
from utils.checkpoint import atomic_write_bytes, reported_writes
from utils.distributed import init_environment
from utils.errors import UserError, run_cli
from utils.metrics import format_iou_table
from utils.visualize import save_rgb


def get_args_parser():
    parser = options.parser("Evaluate a segmenter checkpoint (single scale, the original's protocol).")
    options.add_model_flags(parser)
    options.add_data_flags(parser)
    options.add_runtime_flags(parser, evaluation=True)
    # model None: from the checkpoint's args.json, else deeplabv2; init: how the trainers' models are first
    # built, before any weights are loaded (no flag here: the checkpoint's weights replace them all)
    parser.set_defaults(model=None, init="original")
    parser.add_argument("--restore-from", default="", help="checkpoint to evaluate (file or http(s) URL)")
    parser.add_argument("--save-dir", default="results", help="folder for result.txt and the predicted PNGs")
    parser.add_argument("--with-mlmt", action="store_true", help="suppress classes the MLMT branch calls absent")
    parser.add_argument("--mlmt-fusion", default=None, choices=("multiply", "mask"),
                        help="[new] multiply: absent classes' logits x 0 (original); mask: set to -inf "
                             "(default: from --fidelity)")
    parser.add_argument("--mlmt-file", default="./mlmt_output/output_ema_p_1_0_voc_5.txt",
                        help="MLMT class probabilities, one row per val image in list order, background first")
    parser.add_argument("--save-output-images", action="store_true",
                        help="write palette PNGs <save-dir>/<id>.png and montage.png")
    parser.add_argument("--batch-size", type=int, default=1, help="[new] images per forward pass")
    parser.add_argument("--eval-full-res", action="store_true",
                        help="[new] Cityscapes: score the full 2048x1024 labels (logits upsampled to them), the "
                             "protocol most later papers report; default: the original's 1024x512 labels")
    options.add_full_resolution_flag(parser)
    options.add_eval_mode_flags(parser)
    options.add_speed_flags(parser)
    parser.add_argument("--fold-bn", action="store_true",
                        help="[new] fold each BN into the convolution before it (same results to float rounding; "
                             "faster, above all on CPUs)")
    return parser


def parse_args(argv=None):
    args = get_args_parser().parse_args(argv)

    apply_profile(args, "evaluate")
    if not args.restore_from:
        raise UserError("--restore-from is required: the checkpoint to evaluate")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    options.check_eval_mode(args)
    options.adopt_training_flags(args.restore_from, args)
    args.model = args.model or "deeplabv2"
    return options.resolve_dataset_and_model(args)


def evaluation_data(args):
    """The DataConfig of the images evaluated: --data-list under the dataset's evaluation protocol."""
    return data_config(args, args.data_list, eval_full_res=args.eval_full_res, full_resolution=args.full_resolution)


class PredictionWriter:
    """--save-output-images: a palette PNG <save-dir>/<id>.png per image in the dataset's colours, and
    montage.png with the first few images (image | ground truth | prediction over the image)."""

    def __init__(self, save_dir, dataset, palette, montage_size=8):
        self.save_dir, self.dataset, self.palette, self.montage_size = save_dir, dataset, palette, montage_size
        self.kept = []

    def __call__(self, index, name, prediction):
        path = os.path.join(self.save_dir, name + ".png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image = Image.fromarray(prediction.astype(np.uint8), mode="P")
        image.putpalette(self.palette.flatten().tolist())
        with reported_writes(path):
            image.save(path)
        if len(self.kept) < self.montage_size:
            self.kept.append((index, prediction))

    def write_montage(self):
        if self.kept:
            path = os.path.join(self.save_dir, "montage.png")
            with reported_writes(path):
                save_rgb(path, montage_of_predictions(self.dataset, self.palette, self.kept))


def main(argv=None):
    args = parse_args(argv)
    env = init_environment(args.device, args.gpu)
    if args.num_workers is None:
        args.num_workers = options.eval_num_workers(env.device)
    spec = get_dataset(args.dataset)
    dataset = uint8_batches(spec.build_val(evaluation_data(args)))
    fusion = MLMTFusion(args.mlmt_file, len(dataset), args.num_classes, args.mlmt_fusion) if args.with_mlmt else None
    config = model_config(args)
    model = build_segmenter(config.backbone, config.num_classes, config.model, **config.options)
    load_exact(model, read_state_dict(args.restore_from), args.restore_from)
    if args.fold_bn:
        model = fold_batch_norms(model)
    model.to(env.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        os.makedirs(args.save_dir, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--save-dir {args.save_dir} cannot be created: {exc.strerror or exc}") from None
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                        collate_fn=eval_collate, pin_memory=env.device.type == "cuda")
    writer = PredictionWriter(args.save_dir, dataset, spec.palette) if args.save_output_images else None
    start = time.perf_counter()
    confusion = evaluate(model, loader, args.num_classes, env.device, Precision(args.amp, env.device),
                         args.channels_last, fusion, writer, mode=eval_mode(args))
    seconds = time.perf_counter() - start
    if writer is not None:
        writer.write_montage()
    lines = format_iou_table(confusion, spec.class_names(args.num_classes, args.data_dir))
    print("\n".join(lines))
    atomic_write_bytes(os.path.join(args.save_dir, "result.txt"), ("\n".join(lines) + "\n").encode(),
                       advice="free some space and run again")
    print(f"evaluated {len(dataset)} images in {seconds:.1f} s ({1000 * seconds / max(1, len(dataset)):.0f} ms "
          f"per image, loading included)")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
