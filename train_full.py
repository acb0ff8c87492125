"""Supervised DeepLabv2 baseline ("FSL"): cross-entropy on the labeled images only.

    python train_full.py --dataset pascal_voc --checkpoint-dir ./checkpoints/voc_full \
                         --ignore-label 255 --num-classes 21
"""
import sys

from engine import options, setup
from engine.supervised import SupervisedStep
from engine.trainer import TrainingRun
from utils.errors import run_cli


def main(argv=None):
    args = options.check_train_args(options.full_parser().parse_args(argv), "train_full")
    run = TrainingRun(args, ["labeled"])
    model = setup.make_segmenter(args, run.env, run.say, restore=run.resume is None).train()
    segmenter, model = setup.prepare_module(model, args, run.env, args.sync_bn)
    optimizer = setup.make_segmenter_optimizer(model, args)
    step = SupervisedStep(segmenter, optimizer, run.precision, input_size=args.input_size,
                          ignore_label=args.ignore_label, device=run.env.device, channels_last=args.channels_last)
    run.train(step, {"model": model}, {"S": optimizer}, [(optimizer, args.learning_rate, [1, 10])])


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
