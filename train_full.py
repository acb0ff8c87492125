"""Supervised DeepLabv2 baseline ("FSL"): cross-entropy on the labeled images only.

    python train_full.py --dataset pascal_voc --checkpoint-dir ./checkpoints/voc_full \
                         --ignore-label 255 --num-classes 21

The step is in methods/supervised.py; what the loop calls (data, resume, snapshots, signals) in engine/run.py.
"""
import sys

from engine import options
from engine.config import run_config, segmentation_config
from engine.run import TrainingRun, original_snapshot_due
from methods.supervised import SupervisedStep
from utils.errors import run_cli
from utils.optim import segmenter_optimizer


def get_args_parser():
    return options.train_parser("Supervised DeepLabv2 baseline (FSL).", batch_size=10,
                                  split_id="./splits/voc/split_0.pkl", checkpoint_dir="./checkpoints/voc_full/")


def parse_args(argv=None):
    return options.check_train_args(get_args_parser().parse_args(argv), "train_full")


def main(argv=None):
    args = parse_args(argv)
    segmentation = segmentation_config(args)
    optim = segmentation.optim
    with TrainingRun(args, run_config(args), SupervisedStep.streams, segmentation=segmentation,
                     split_file="split.pkl") as run:
        model_without_ddp = run.segmenter()
        model = run.distribute(model_without_ddp, sync_bn=args.sync_bn)
        optimizer = segmenter_optimizer(model_without_ddp, optim.learning_rate, optim.momentum, optim.weight_decay,
                                        optim.sgd_mode, say=run.say)
        run.track(models={"model": model}, optimizers={"S": optimizer}, base_lrs={"S": optim.learning_rate})
        step = SupervisedStep(model, optimizer, run.precision, input_size=args.input_size,
                              ignore_label=args.ignore_label, device=run.env.device, channels_last=args.channels_last)

        run.begin(args.num_steps)
        for i in range(run.start, args.num_steps):
            run.set_poly_learning_rates(i)
            values = step(i, **run.next_batches(i))
            run.log(i, values)
            if original_snapshot_due(i, args.save_pred_every, args.num_steps):
                run.save_snapshot(i)
            run.stop_if_requested(i)
        run.finish()


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
