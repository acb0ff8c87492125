"""s4GAN (Mittal et al., TPAMI 2021, Sec. 3.1): a segmenter S and an image-level discriminator D.

S learns from cross-entropy on the labeled images, feature matching against D, and self-training on
the unlabeled images that D finds realistic; D learns to tell ground-truth maps from predicted ones.
The whole objective, term by term: methods/s4gan.py. Everything around it (data, resume, snapshots):
engine/run.py.

    python train_s4GAN.py --dataset pascal_voc --checkpoint-dir ./checkpoints/voc_semi_0_125 \
                          --labeled-ratio 0.125 --ignore-label 255 --num-classes 21
"""
import sys

from engine import options
from engine.run import TrainingRun
from methods.s4gan import S4GANStep, add_s4gan_arguments
from utils.errors import run_cli
from utils.optim import discriminator_optimizer, segmenter_optimizer


def get_args_parser():
    parser = options.train_parser("s4GAN semi-supervised segmentation: DeepLabv2 + image-level discriminator.",
                                  batch_size=8, split_id=None, checkpoint_dir="./checkpoints/voc_semi_0_125/")
    add_s4gan_arguments(parser)
    parser.add_argument("--unlabeled-list", default=None,
                        help="[new] ids of extra images (<data-dir>/JPEGImages/<id>.jpg) that have no label PNG; "
                             "they join the unlabeled pool")
    return parser


def parse_args(argv=None):
    return options.check_train_args(get_args_parser().parse_args(argv), "train_s4GAN")


def main(argv=None):
    args = parse_args(argv)
    with TrainingRun(args, S4GANStep.streams, split_file="train_voc_split.pkl") as run:
        model_without_ddp = run.segmenter()
        model_d_without_ddp = run.discriminator()
        model = run.distribute(model_without_ddp, sync_bn=args.sync_bn)
        model_d = run.distribute(model_d_without_ddp)
        optimizer = segmenter_optimizer(model_without_ddp, args.learning_rate, args.momentum, args.weight_decay,
                                        args.sgd_mode)
        optimizer_d = discriminator_optimizer(model_d, args.learning_rate_D, args.adam_mode)
        step = S4GANStep.from_args(args, model, model_d, optimizer, optimizer_d, run.precision, run.env.device)
        run.track(models={"model": model, "D": model_d}, optimizers={"S": optimizer, "D": optimizer_d},
                  base_lrs={"S": args.learning_rate, "D": args.learning_rate_D},
                  extras={"self_training": step.monitor})
        for i, batches in run.iterations():
            values = step(i, **batches)
            run.log(i, values)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
