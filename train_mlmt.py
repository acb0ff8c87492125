"""MLMT (Mittal et al., TPAMI 2021, Sec. 3.2): the multi-label mean teacher, an image classifier
trained semi-supervised whose class-presence probabilities `evaluate.py --with-mlmt` uses to remove
absent classes from the segmentation.

    python train_mlmt.py --batch-size-lab 16 --batch-size-unlab 80 --labeled-ratio 0.125 \
        --exp-name voc_semi_0_125_MLMT --pkl-file ./checkpoints/voc_semi_0_125/train_voc_split.pkl
    python evaluate.py --restore-from ./checkpoints/voc_semi_0_125/VOC_30000.pth \
        --with-mlmt --mlmt-file ./mlmt_output/voc_semi_0_125_MLMT/output_ema_raw_100.txt

The objective, term by term: methods/mlmt/objective.py; its data, networks and validation: the rest
of methods/mlmt/. The loop over epochs is below; what it calls (resume, signals, logs): engine/run.py.
Outputs in ./mlmt_output/<exp-name>/.
"""
import argparse
import functools
import os
import sys

import torch

from data import fill_dataset_defaults
from methods.mlmt.labels import NOT_CLASS_INDEX_PNGS, has_original_layout
from engine import options
from engine.config import run_config
from methods.mlmt import data as mlmt_data, networks as mlmt_networks
from engine.fidelity import apply_profile
from methods.mlmt.validation import MLMTValidator
from methods.mlmt.config import MLMTConfig
from methods.mlmt.objective import MLMTStep
from engine.run import TrainingRun
from model.classifier import BACKBONES, IMAGENET_FILES
from model.weights import PRETRAINED_DIR
from utils.errors import UserError, run_cli

OUTPUT_ROOT = "./mlmt_output"


def get_args_parser():
    p = options.parser("MLMT: the semi-supervised multi-label image classifier (student + EMA teacher) whose "
                       "outputs evaluate.py --with-mlmt fuses with the segmentation.")
    original = p.add_argument_group("the original's flags")
    original.add_argument("--lr", type=float, default=3e-2, help="SGD learning rate (Nesterov, momentum 0.9)")
    original.add_argument("--eta-min", type=float, default=1e-4, help="floor of the per-epoch cosine learning rate")
    original.add_argument("--weight-decay", type=float, default=1e-5, help="SGD weight decay")
    original.add_argument("--workers", dest="num_workers", type=int, default=argparse.SUPPRESS,
                          help="the original's name of --num-workers (the validation loader uses twice as many)")
    original.add_argument("--batch-size-lab", type=int, default=16, help="labeled images per iteration")
    original.add_argument("--batch-size-unlab", type=int, default=80, help="unlabeled images per iteration")
    original.add_argument("--batch-size-val", type=int, default=32, help="validation batch")
    original.add_argument("--num-epochs", type=int, default=100,
                          help="epochs (one epoch = one pass over the labeled images); also the cosine's length")
    original.add_argument("--burn-in-epochs", type=int, default=10,
                          help="the consistency weight is 0 up to and including this epoch (counted from 0)")
    original.add_argument("--evaluation-epochs", type=int, default=5,
                          help="validate and write the output files every this many epochs (0: never)")
    original.add_argument("--exp-name", default="default", help="outputs go to ./mlmt_output/<exp-name>/")
    original.add_argument("--cons-loss", default="cosine", choices=("cosine",),
                          help="consistency loss; only cosine exists (the original parsed this flag and ignored it)")
    original.add_argument("--pkl-file", default="./checkpoints/voc_semi_0_125/train_voc_split.pkl",
                          help="the split permutation that train_s4GAN.py wrote (labeled = its first "
                               "int(ratio*N) entries, as in the segmenter); 'none': seeded by --random-seed")
    original.add_argument("--w-cons", type=float, default=1.0, help="maximum weight of the consistency loss")
    original.add_argument("--ema-decay", type=float, default=0.999, help="maximum EMA decay of the teacher")
    original.add_argument("--labeled-ratio", type=float, default=None,
                          help="fraction of the training list labeled (default 0.125 unless --labeled-list is given)")
    original.add_argument("--verbose", action="store_true", help="a line per iteration (same as --log-every 1)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: the dataset's: 21 VOC, 60 Context; folder: classes.txt)")
    options.add_data_flags(p)
    options.add_labeled_list_flag(p)
    options.add_unlabeled_list_flag(p)
    p.add_argument("--val-list", default=None,
                   help="[new] validation ids, one per line; the output files have one row per line "
                        "(default: the dataset's, e.g. ./data/voc_list/val.txt)")
    p.add_argument("--data-layout", default="auto", choices=("auto", "dataset", "original"),
                   help="[new] dataset: images and label PNGs of --dataset, image-level labels derived from them; "
                        "original: <data-dir>/train/, val/, train_img.txt, train_label.txt, val_img.txt, val_label.txt "
                        "(background last); auto: original if <data-dir> holds train_img.txt and "
                        "train_label.txt and --data-list is not given")
    p.add_argument("--backbone", default="resnet101", choices=sorted(BACKBONES),
                   help="[new] the classifier's ResNet (the original: resnet101); smaller ones for CPU demos and tests")
    p.add_argument("--pretrained", default=None,
                   help=f"[new] ImageNet weights of the backbone (default {PRETRAINED_DIR}/resnet101-5d3b4d8f.pth, the "
                        f"segmenter's file; resnet50-19c8e357.pth / resnet18-5c106cde.pth for the small ones); "
                        f"a missing file: a warning and random initialisation; 'none': random initialisation")
    p.add_argument("--image-size", type=int, default=320, help="[new] images are resized to this square (original 320)")
    p.add_argument("--augment-on-device", action="store_true",
                   help="[new] make the unlabeled views (colour jitter, flips, blur) on the training device from "
                        "the same random draws, so the loaders only decode and resize; the views differ from "
                        "PIL's by rounding (methods/mlmt/views.py). Off: the original's PIL pipeline")
    options.add_fidelity_flag(p)
    p.add_argument("--output-roll", default=None, choices=("flat", "per-row"),
                   help="[new] moving the background column to the front of the output files: flat = the "
                        "original's np.roll over each flattened validation batch (column 0 of a row holds the "
                        "previous row's background), per-row = each row's own (default: from --fidelity)")
    p.add_argument("--unlabeled-restart", default=None, choices=("epoch", "exhausted"),
                   help="[new] epoch = the unlabeled images start a new shuffle at every epoch, as the original "
                        "(when an epoch is shorter than a pass over them, the end of each shuffle is never "
                        "used); exhausted = only when all were used (default: from --fidelity)")
    options.add_runtime_flags(p)
    options.add_seed_flag(p, "a --pkl-file none split", in_the_original=False)
    p.add_argument("--output-dir", default=None, help=f"[new] output folder (default {OUTPUT_ROOT}/<exp-name>/)")
    options.add_logging_flags(p, montage=False)
    options.add_resume_flags(p, "<output-dir>")
    options.add_speed_flags(p)
    return p


def parse_args(argv=None):
    args = get_args_parser().parse_args(argv)
    apply_profile(args, "train_mlmt")
    if args.dataset in NOT_CLASS_INDEX_PNGS:
        raise UserError(f"--dataset {args.dataset} is not supported by train_mlmt.py: {NOT_CLASS_INDEX_PNGS[args.dataset]}")
    fill_dataset_defaults(args)
    if args.num_classes < 2:
        raise UserError("--num-classes must be at least 2")
    if args.labeled_list and args.labeled_ratio is not None:
        raise UserError(f"--labeled-list {args.labeled_list} and --labeled-ratio {args.labeled_ratio} both say which "
                        f"images are labeled: give one")
    if args.labeled_ratio is None:
        args.labeled_ratio = None if args.labeled_list else 0.125
    if args.labeled_ratio is not None and not 0 < args.labeled_ratio <= 1:
        raise UserError(f"--labeled-ratio {args.labeled_ratio} must be in (0, 1]")
    for flag in ("batch_size_lab", "batch_size_unlab", "batch_size_val", "num_epochs", "log_every"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")
    for flag in ("burn_in_epochs", "evaluation_epochs", "num_workers"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag.replace('_', '-')} must be 0 or more")
    if not 0 <= args.ema_decay <= 1:
        raise UserError(f"--ema-decay {args.ema_decay} must be in [0, 1]")
    if args.image_size < 33:  # below, the last stage is 1x1 and BN fails on a batch of one image
        raise UserError(f"--image-size {args.image_size} is too small (at least 33)")
    if args.pkl_file is not None and args.pkl_file.lower() == "none":
        args.pkl_file = None
    if args.pretrained is None:
        args.pretrained = f"{PRETRAINED_DIR}/{IMAGENET_FILES[args.backbone]}"
    if args.data_layout == "auto":
        args.data_layout = "original" if args.data_list is None and has_original_layout(args.data_dir) else "dataset"
    elif args.data_layout == "original" and (args.data_list or args.val_list):
        raise UserError("--data-list / --val-list name the lists of --data-layout dataset; the original layout "
                        "reads <data-dir>/train_img.txt and val_img.txt")
    if args.verbose:
        args.log_every = 1
    args.output_dir = args.output_dir or os.path.join(OUTPUT_ROOT, args.exp_name)
    args.checkpoint_dir = args.output_dir  # where the run writes args.json, metrics.jsonl, latest.pth
    return args


def main(argv=None):
    args = parse_args(argv)
    config = MLMTConfig.from_flags(args)
    data = functools.partial(mlmt_data.make_data, config)
    with TrainingRun(args, run_config(args), MLMTStep.streams, data=data) as run:
        validator = MLMTValidator(config, run.env, run.precision, say=run.say)
        trunk = None if run.resume else mlmt_networks.imagenet_trunk(config)
        if trunk is not None:
            run.say(f"--pretrained {args.pretrained}: {len(trunk)} tensors into student and teacher")
        student_without_ddp = mlmt_networks.classifier(config, run.env.device, trunk)
        teacher = mlmt_networks.classifier(config, run.env.device, trunk, teacher=True)
        student = run.distribute(student_without_ddp)
        optimizer = torch.optim.SGD(student.parameters(), args.lr, momentum=0.9, weight_decay=args.weight_decay,
                                    nesterov=True)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.num_epochs, eta_min=args.eta_min)
        step = MLMTStep(student, teacher, optimizer, run.precision, num_epochs=args.num_epochs,
                        burn_in_epochs=args.burn_in_epochs, w_cons=args.w_cons, ema_decay=args.ema_decay,
                        device=run.env.device, channels_last=args.channels_last,
                        augment_on_device=args.augment_on_device)
        run.track(models={"model": student, "teacher": teacher}, optimizers={"SGD": optimizer},
                  extras={"scheduler": scheduler, "meters": step.meters})

        epoch_length = mlmt_data.epoch_length(run.streams["labeled"])  # one pass over the labeled images
        run.begin(args.num_epochs * epoch_length)
        for epoch in range(run.start // epoch_length, args.num_epochs):
            first, end = epoch * epoch_length, (epoch + 1) * epoch_length
            if args.unlabeled_restart == "epoch" and run.start <= first:  # not an epoch a resumed run is inside
                run.streams["unlabeled"].start_new_epoch()
            for i in range(max(first, run.start), end):
                values = step(i, epoch, **run.next_batches(i))
                run.log(i, values)
                if i < end - 1:  # at the epoch's end: after the end-of-epoch work
                    run.stop_if_requested(i)
            run.log_epoch(end - 1, epoch, step.end_epoch(epoch))
            scheduler.step()
            if args.evaluation_epochs and (epoch + 1) % args.evaluation_epochs == 0:
                values, table = validator(epoch + 1, {"val": student_without_ddp, "ema": teacher})
                run.log_epoch(end - 1, epoch, values, text=table)
            run.save_state(end)
            run.stop_if_requested(end - 1, after=f"epoch {epoch + 1}")
        run.say(f"done: {args.output_dir}")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
