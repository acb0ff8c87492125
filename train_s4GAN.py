"""s4GAN semi-supervised segmentation: DeepLabv2 S and an image-level discriminator D.

    python train_s4GAN.py --dataset pascal_voc --checkpoint-dir ./checkpoints/voc_semi_0_125 \
                          --labeled-ratio 0.125 --ignore-label 255 --num-classes 21
"""
import sys

import torch

from engine import options, setup
from engine.s4gan import S4GANStep
from engine.trainer import TrainingRun
from utils.errors import run_cli


def main(argv=None):
    args = options.check_train_args(options.s4gan_parser().parse_args(argv), "train_s4GAN")
    run = TrainingRun(args, ["labeled", "unlabeled", "real"])
    model = setup.make_segmenter(args, run.env, run.say, restore=run.resume is None).train()
    model_d = setup.make_discriminator(args, run.env, run.say).train()
    segmenter, model = setup.prepare_module(model, args, run.env, args.sync_bn)
    discriminator, model_d = setup.prepare_module(model_d, args, run.env)
    optimizer = setup.make_segmenter_optimizer(model, args)
    optimizer_d = torch.optim.Adam(model_d.parameters(), lr=args.learning_rate_D, betas=(0.9, 0.99))
    step = S4GANStep(segmenter, discriminator, model_d, optimizer, optimizer_d, run.precision,
                     num_classes=args.num_classes, ignore_label=args.ignore_label, input_size=args.input_size,
                     lambda_fm=args.lambda_fm, lambda_st=args.lambda_st, threshold_st=args.threshold_st,
                     device=run.env.device, d_real_norm=args.d_real_norm, channels_last=args.channels_last)
    run.train(step, {"model": model, "D": model_d}, {"S": optimizer, "D": optimizer_d},
              [(optimizer, args.learning_rate, [1, 10]), (optimizer_d, args.learning_rate_D, None)])


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
