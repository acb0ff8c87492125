"""s4GAN with DeepLabv3+ on a WideResNet-38 trunk (the original's 2022 addition), with periodic validation.

The same method and loop as train_s4GAN.py (its `train`; the objective: methods/s4gan.py), another segmenter
(model/deeplabv3p.py), the unlabeled batch size as its own flag, incomplete batches dropped (the
ASPP image-pooling BN cannot normalise a single image), and the validation mIoU logged during
training (--val-protocol: by default the original's, after iterations 0, 200, 400, ...), the best
checkpoint kept as best.pth (chosen on the validation images: not a number to report;
engine/validation.py). This script keeps the original's name, flags and defaults.

    python train_s4GAN_wrn38.py --dataset cityscapes --checkpoint-dir ./checkpoints/city_semi_v3_wrn38_0_10 \
        --labeled-ratio 0.10 --ignore-label 250 --num-classes 19 --split-id ./splits/city/split_0.pkl \
        --input-size '256,512' --threshold-st 0.55 --learning-rate-D 1e-5 --learning-rate 1e-3 \
        --out results/city_semi_v3_wrn38_0_10
"""
import sys

import train_s4GAN
from engine import options
from engine.config import run_config, segmentation_config, validation_config
from methods.s4gan import add_s4gan_arguments
from utils.errors import UserError, run_cli


def get_args_parser():
    parser = options.train_parser("s4GAN with DeepLabv3+ on WideResNet-38, validated during training.",
                                  batch_size=8, split_id=None, checkpoint_dir="./checkpoints/voc_semi_0_125/")
    parser.set_defaults(model="deeplabv3p_wrn38", save_pred_every=1000)
    add_s4gan_arguments(parser)
    options.add_unlabeled_list_flag(parser)
    wrn = parser.add_argument_group("this trainer")
    wrn.add_argument("--batch-size-unlab", type=int, default=8, help="images per unlabeled batch")
    wrn.add_argument("--eta-min-factor", type=float, default=10,
                     help="accepted for compatibility: the original built a cosine schedule with this floor but "
                          "never stepped it; the poly schedule is what runs")
    wrn.add_argument("--out", default="result", help="folder for result.txt (the best validation) and metrics.jsonl")
    wrn.add_argument("--val-every", type=int, default=200, help="[new] validate every this many iterations")
    wrn.add_argument("--val-protocol", default=None, choices=("original", "all"),
                     help="[new] original: validate after iterations 0, N, 2N, ... (N = --val-every) on the first "
                          "image of each of the first --val-images validation batches (Cityscapes: batches of "
                          "--batch-size, so images 0, 8, 16, ...; otherwise batches of one), as the original; all: "
                          "after every N-th iteration and the last, on the first --val-images images "
                          "(default: from --fidelity)")
    options.add_eval_mode_flags(wrn)
    wrn.add_argument("--val-images", type=int, default=None,
                     help="[new] how many validation images are scored (default: 50 with --val-protocol original, "
                          "as the original; all of them with all); 0 = all")
    return parser


def parse_args(argv=None):
    args = options.check_train_args(get_args_parser().parse_args(argv), "train_s4GAN_wrn38")
    options.check_min_batch(args, "batch_size_unlab")
    options.check_eval_mode(args)
    for flag in ("batch_size_unlab", "val_every"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.val_images is None:
        args.val_images = 50 if args.val_protocol == "original" else 0
    if args.val_images < 0:
        raise UserError("--val-images must be 0 (all) or more")
    if args.amp == "fp16" and args.sgd_mode == "legacy":
        raise UserError("--amp fp16 cannot scale the original's repeated parameter lists (--sgd-mode legacy): "
                        "use --amp bf16, or --sgd-mode standard")
    return args


def main(argv=None):
    args = parse_args(argv)
    segmentation = segmentation_config(args, unlabeled_list=args.unlabeled_list,
                                       batch_sizes={"unlabeled": args.batch_size_unlab}, drop_last=True)
    train_s4GAN.train(args, run_config(args, log_dir=args.out), segmentation, validation_config(args))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
