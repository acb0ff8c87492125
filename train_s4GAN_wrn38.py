"""s4GAN with DeepLabv3+ on a WideResNet-38 trunk (the original's 2022 addition), with periodic validation.

The same method as train_s4GAN.py (the objective: methods/s4gan.py), another segmenter
(model/deeplabv3p.py), the unlabeled batch size as its own flag, incomplete batches dropped (the
ASPP image-pooling BN cannot normalise a single image), and the validation mIoU logged during
training (--val-protocol: by default the original's, after iterations 0, 200, 400, ...), the best
checkpoint kept as best.pth (chosen on the validation images: not a number to report).

    python train_s4GAN_wrn38.py --dataset cityscapes --checkpoint-dir ./checkpoints/city_semi_v3_wrn38_0_10 \
        --labeled-ratio 0.10 --ignore-label 250 --num-classes 19 --split-id ./splits/city/split_0.pkl \
        --input-size '256,512' --threshold-st 0.55 --learning-rate-D 1e-5 --learning-rate 1e-3 \
        --out results/city_semi_v3_wrn38_0_10
"""
import os
import sys

from engine import options
from engine.evaluator import Validator
from engine.run import BestCheckpoint, TrainingRun
from methods.s4gan import S4GANStep, add_s4gan_arguments
from utils.errors import UserError, run_cli
from utils.optim import discriminator_optimizer, segmenter_optimizer


def get_args_parser():
    parser = options.train_parser("s4GAN with DeepLabv3+ on WideResNet-38, validated during training.",
                                  batch_size=8, split_id=None, checkpoint_dir="./checkpoints/voc_semi_0_125/")
    parser.set_defaults(model="deeplabv3p_wrn38", save_pred_every=1000)
    add_s4gan_arguments(parser)
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
    wrn.add_argument("--val-images", type=int, default=None,
                     help="[new] how many validation images are scored (default: 50 with --val-protocol original, "
                          "as the original; all of them with all); 0 = all")
    return parser


def parse_args(argv=None):
    args = options.check_train_args(get_args_parser().parse_args(argv), "train_s4GAN_wrn38")
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
    with TrainingRun(args, S4GANStep.streams, split_file="train_voc_split.pkl", log_dir=args.out,
                     batch_sizes={"unlabeled": args.batch_size_unlab}, drop_last=True) as run:
        model_without_ddp = run.segmenter()
        model_d_without_ddp = run.discriminator()
        model = run.distribute(model_without_ddp, sync_bn=args.sync_bn)
        model_d = run.distribute(model_d_without_ddp)
        optimizer = segmenter_optimizer(model_without_ddp, args.learning_rate, args.momentum, args.weight_decay,
                                        args.sgd_mode)
        optimizer_d = discriminator_optimizer(model_d, args.learning_rate_D, args.adam_mode)
        best = BestCheckpoint(os.path.join(args.checkpoint_dir, "best.pth"), run.env)
        step = S4GANStep.from_args(args, model, model_d, optimizer, optimizer_d, run.precision, run.env.device)
        run.track(models={"model": model, "D": model_d}, optimizers={"S": optimizer, "D": optimizer_d},
                  base_lrs={"S": args.learning_rate, "D": args.learning_rate_D},
                  extras={"best": best, "self_training": step.monitor})
        validator = Validator(args, run.env, run.precision, images=validation_images(args))
        for i, batches in run.iterations():
            values = step(i, **batches)
            if validates_after(i, args):
                confusion = validator(model_without_ddp)
                values["val_miou"] = validator.miou(confusion)
                if best.update(values["val_miou"], model_without_ddp) and run.env.is_main:
                    validator.write_result(confusion, os.path.join(args.out, "result.txt"))
            run.log(i, values, force="val_miou" in values)


def validates_after(i, args):
    """The original validated after iteration i when i % 200 == 0, iteration 0 included; `all`:
    after every --val-every-th iteration and after the last."""
    if args.val_protocol == "original":
        return i % args.val_every == 0
    return (i + 1) % args.val_every == 0 or i + 1 == args.num_steps


def validation_images(args):
    """Which validation images are scored (a function of their number), see --val-protocol. The
    original ran its first 50 validation batches and scored the first image of each; the model is in
    eval mode, so scoring those images alone gives the same predictions."""
    stride = args.batch_size if args.val_protocol == "original" and args.dataset == "cityscapes" else 1

    def choose(count):
        wanted = args.val_images or count
        return list(range(0, count, stride))[:wanted]
    return choose


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
