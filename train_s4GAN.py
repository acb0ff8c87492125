"""s4GAN (Mittal et al., TPAMI 2021, Sec. 3.1): a segmenter S and an image-level discriminator D.

S learns from cross-entropy on the labeled images, feature matching against D, and self-training on
the unlabeled images that D finds realistic; D learns to tell ground-truth maps from predicted ones.
The whole objective, term by term: methods/s4gan.py. The loop is below; what it calls (data, resume,
snapshots, signals): engine/run.py.

    python train_s4GAN.py --dataset pascal_voc --checkpoint-dir ./checkpoints/voc_semi_0_125 \
                          --labeled-ratio 0.125 --ignore-label 255 --num-classes 21
"""
import sys

from engine import options
from engine.config import run_config, segmentation_config
from engine.run import TrainingRun, original_snapshot_due
from engine.validation import PeriodicValidation
from methods.s4gan import S4GANStep, add_s4gan_arguments
from utils.errors import run_cli
from utils.optim import discriminator_optimizer, segmenter_optimizer


def get_args_parser():
    parser = options.train_parser("s4GAN semi-supervised segmentation: DeepLabv2 + image-level discriminator.",
                                  batch_size=8, split_id=None, checkpoint_dir="./checkpoints/voc_semi_0_125/")
    add_s4gan_arguments(parser)
    options.add_unlabeled_list_flag(parser)
    return parser


def parse_args(argv=None):
    return options.check_train_args(get_args_parser().parse_args(argv), "train_s4GAN")


def main(argv=None):
    args = parse_args(argv)
    train(args, run_config(args), segmentation_config(args, unlabeled_list=args.unlabeled_list))


def train(args, config, segmentation, validate=None):
    """The s4GAN run. train_s4GAN_wrn38.py gives its own configuration (logs in --out, the unlabeled
    batch size, whole batches only) and validation during training (a ValidationConfig)."""
    with TrainingRun(args, config, S4GANStep.streams, segmentation=segmentation,
                     split_file="train_voc_split.pkl") as run:
        model_without_ddp = run.segmenter()
        model_d_without_ddp = run.discriminator(args.restore_from_D)
        model = run.distribute(model_without_ddp, sync_bn=args.sync_bn)
        model_d = run.distribute(model_d_without_ddp)
        optim = segmentation.optim
        optimizer = segmenter_optimizer(model_without_ddp, optim.learning_rate, optim.momentum, optim.weight_decay,
                                        optim.sgd_mode, say=run.say)
        optimizer_d = discriminator_optimizer(model_d, args.learning_rate_D, args.adam_mode)
        step = S4GANStep(model, model_d, optimizer, optimizer_d, run.precision, num_classes=args.num_classes,
                         ignore_label=args.ignore_label, input_size=args.input_size, lambda_fm=args.lambda_fm,
                         lambda_st=args.lambda_st, threshold_st=args.threshold_st, d_real_norm=args.d_real_norm,
                         device=run.env.device, channels_last=args.channels_last)
        validation = PeriodicValidation(validate, run, args.num_steps) if validate else None
        extras = {"best": validation.best} if validation else {}
        run.track(models={"model": model, "D": model_d}, optimizers={"S": optimizer, "D": optimizer_d},
                  base_lrs={"S": optim.learning_rate, "D": args.learning_rate_D},
                  extras={**extras, "self_training": step.monitor})

        run.begin(args.num_steps)
        for i in range(run.start, args.num_steps):
            run.set_poly_learning_rates(i)
            values = step(i, **run.next_batches(i))
            if validation and validation.due(i):
                values["val_miou"] = validation(model_without_ddp)
            run.log(i, values, force="val_miou" in values)
            if original_snapshot_due(i, args.save_pred_every, args.num_steps):
                run.save_snapshot(i, note=step.monitor.snapshot_warning())  # is self-training acting?
            run.stop_if_requested(i)
        run.finish()


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
