"""The flag groups every script shares. Each script adds its own flags next to its code.

Every flag of the original scripts keeps its name, default and meaning (docs/original.md, "Flags");
flags marked [new] are additions. Dataset-dependent defaults (--data-dir, --data-list,
--num-classes, --ignore-label) are None here and filled from the --dataset entry.
"""
import argparse
import json
import os

from data import DATASETS, fill_dataset_defaults
from engine.eval_modes import MODES
from engine.fidelity import apply_profile
from model import SEGMENTERS, all_backbones, canonical_model_name, default_restore_from
from model.weights import PRETRAINED_DIR
from utils.errors import ArgumentParser, UserError


def label_value(text):
    """--ignore-label: the original parsed it as float; accept '255', '255.0', '-1'."""
    value = float(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text} is not a whole number")
    return int(value)


def input_size(text):
    """'H,W' (spaces allowed, as in the original's '321, 321')."""
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'height,width'") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"{text!r} is too small (at least 16,16)")
    return h, w


def available_cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_workers():
    """min(4, available cores): no oversubscription, no DataLoader warning on small machines."""
    return min(4, available_cores())


def parser(description):
    return ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_fidelity_flag(p):
    p.add_argument("--fidelity", default="original", choices=("original", "fixed"),
                   help="[new] original: reproduce the original code's numerics, quirks included; fixed: "
                        "correct every quirk (each quirk flag below overrides the profile)")


def add_seed_flag(p, split, in_the_original):
    text = f"seeds python, numpy, torch, the loaders and {split}"
    p.add_argument("--random-seed", type=int, default=1234,
                   help=f"{text} (the original ignored it)" if in_the_original else f"[new] {text}")


def add_logging_flags(p, montage):
    p.add_argument("--log-every", type=int, default=10,
                   help="[new] print and log to metrics.jsonl every this many iterations")
    p.add_argument("--tensorboard", action="store_true",
                   help="[new] also write the logged scalars" + (", and a prediction montage of the first validation "
                        "images at each snapshot," if montage else "") + " to TensorBoard (needs the optional "
                        "tensorboard package)")


def add_model_flags(p):
    p.add_argument("--model", default="deeplabv2", type=canonical_model_name, choices=sorted(SEGMENTERS),
                   help="segmenter ('DeepLab', the original trainers' default, means deeplabv2)")
    p.add_argument("--backbone", default=None, choices=all_backbones(),
                   help="[new] trunk of --model (default: its first: resnet101 for deeplabv2); resnet50/resnet18 "
                        "are smaller variants of the same design for CPU demos and tests")
    add_fidelity_flag(p)
    added = set()
    for entry in SEGMENTERS.values():  # each model's own flags
        for flag in entry.flags:
            if flag.name not in added:
                p.add_argument("--" + flag.name.replace("_", "-"), **flag.settings)
                added.add(flag.name)
    p.add_argument("--num-classes", type=int, default=None,
                   help="number of classes (default: the dataset's: 21 VOC, 60 Context, 19 Cityscapes; "
                        "folder: the lines of <data-dir>/classes.txt)")


def add_data_flags(p):
    p.add_argument("--dataset", default="pascal_voc", choices=sorted(DATASETS),
                   help="pascal_voc, or folder: any folder in the VOC layout with your own --num-classes")
    p.add_argument("--data-dir", default=None, help="dataset root (default: the dataset's, e.g. ./data/voc_dataset/)")
    p.add_argument("--data-list", default=None,
                   help="list of image ids, one per line (default: the dataset's, e.g. ./data/voc_list/train_aug.txt "
                        "for training and val.txt for evaluation)")
    p.add_argument("--ignore-label", type=label_value, default=None,
                   help="label value excluded from the loss and the metric (default: the dataset's: "
                        "255 VOC, -1 Context, 250 Cityscapes)")


def eval_num_workers(device):
    """Evaluation's one loader on a GPU: every available core but the main process's (up to 16), as
    the trainers' three loaders of 4 take 12; on a CPU the model needs the cores and decoding is a
    few percent of an image's time: one worker per 8 cores."""
    cores = available_cores()
    return min(16, max(1, cores - 1)) if device.type == "cuda" else cores // 8


def add_runtime_flags(p, evaluation=False):
    p.add_argument("--device", default="auto", help="[new] auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--gpu", type=int, default=0, help="CUDA device index when --device is auto or cuda")
    if evaluation:
        p.add_argument("--num-workers", type=int, default=None,
                       help="data-loading worker processes (default: on a GPU the available cores but one, up to "
                            "16; on a CPU one per 8 cores)")
    else:
        p.add_argument("--num-workers", type=int, default=default_num_workers(),
                       help="data-loading worker processes (default: min(4, available cores))")


def add_speed_flags(p):
    p.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"),
                   help="[new] mixed precision (autocast; fp16 adds a gradient scaler); off is bit-faithful")
    p.add_argument("--channels-last", action="store_true", help="[new] NHWC memory format (faster convs on GPUs)")


def add_eval_mode_flags(p):
    p.add_argument("--eval-mode", default="original", choices=MODES,
                   help="[new] original: the dataset's protocol as the original (VOC padded to 505x505), the default; "
                        "whole: each image whole, padded to a multiple of 32; center-crop: only the central "
                        "--eval-window predicted and scored; sliding: --eval-window windows every --eval-stride, "
                        "overlaps averaged (engine/eval_modes.py)")
    p.add_argument("--eval-window", type=input_size, default=None, help="[new] 'H,W' of center-crop and sliding")
    p.add_argument("--eval-stride", type=input_size, default=None,
                   help="[new] 'H,W' between sliding windows (default: two thirds of --eval-window)")


def check_eval_mode(args):
    if args.eval_mode in ("center-crop", "sliding") and args.eval_window is None:
        raise UserError(f"--eval-mode {args.eval_mode} needs --eval-window H,W")
    if args.eval_stride is not None and args.eval_mode != "sliding":
        raise UserError("--eval-stride is for --eval-mode sliding")


def add_resume_flags(p, folder):
    p.add_argument("--resume", default=None,
                   help=f"[new] 'auto': continue from {folder}/latest.pth (damaged or missing: from latest.prev.pth; "
                        f"neither: start fresh); or the path of a latest.pth")
    p.add_argument("--resume-with-other-flags", action="store_true",
                   help="[new] resume even where flags that change the computed numbers differ from the saved run's "
                        "(a warning names them; the run is then not bit-identical to an uninterrupted one)")


def add_labeled_list_flag(p):
    p.add_argument("--labeled-list", default=None,
                   help="[new] the labeled images, one per line (an id or 'JPEGImages/<id>.jpg SegmentationClass/"
                        "<id>.png'), e.g. splits/voc/classic/92.txt; the unlabeled ones: --unlabeled-list, else the "
                        "rest of the training list. Replaces --labeled-ratio and --split-id")


def add_unlabeled_list_flag(p):
    p.add_argument("--unlabeled-list", default=None,
                   help="[new] images for the unlabeled pool only, one per line (an id or the two-column form); "
                        "with --labeled-list the unlabeled pool is exactly these, otherwise they join it. Images "
                        "outside the training list need no label PNG (VOC layout)")


def add_full_resolution_flag(p):
    p.add_argument("--full-resolution", action="store_true",
                   help="[new] Cityscapes: train and evaluate on the 2048x1024 images and labels as they are "
                        "(today's protocol); default: the original's 1024x512 (docs/modern-protocol.md)")


def train_parser(description, *, batch_size, split_id, checkpoint_dir, input_size_default=(321, 321)):
    """The flags of every segmentation trainer; the script adds its method's own."""
    p = parser(description)
    add_model_flags(p)
    add_data_flags(p)
    add_runtime_flags(p)
    p.add_argument("--batch-size", type=int, default=batch_size, help="images per batch (per loader)")
    p.add_argument("--labeled-ratio", type=float, default=None,
                   help="fraction of the training list that is labeled; unset: every image is labeled "
                        "(and, for s4GAN, also used as unlabeled)")
    p.add_argument("--split-id", default=split_id,
                   help="pickled permutation of the training indices (labeled = its first "
                        "int(ratio*N) entries); unset or 'none': a permutation seeded by --random-seed")
    add_labeled_list_flag(p)
    add_full_resolution_flag(p)
    p.add_argument("--input-size", type=input_size, default=input_size_default,
                   help="training crop 'H,W'; logits are upsampled to it for the loss")
    p.add_argument("--learning-rate", type=float, default=2.5e-4,
                   help="base SGD learning rate of the segmenter; its head gets 10x")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    p.add_argument("--sgd-mode", default=None, choices=("legacy", "standard"),
                   help="[new] legacy: emulate PyTorch 0.4 SGD over the original's duplicated backbone "
                        "parameter list; standard: each tensor once (default: from --fidelity)")
    p.add_argument("--context-train-mean", default=None, choices=("reversed", "rgb"),
                   help="[new] PASCAL-Context training normalisation: reversed = the s4GAN trainer's BGR-ordered "
                        "ImageNet mean on RGB images, rgb = correct (default: from --fidelity and the script)")
    p.add_argument("--num-steps", type=int, default=40000, help="training iterations (also the poly horizon)")
    p.add_argument("--power", type=float, default=0.9, help="poly learning-rate exponent")
    p.add_argument("--random-mirror", action="store_true", help="random horizontal flips (VOC; off as in the original)")
    p.add_argument("--random-scale", action="store_true", help="random scaling 0.5-1.6 (VOC; off as in the original)")
    add_seed_flag(p, "the split", in_the_original=True)
    p.add_argument("--restore-from", default=None,
                   help="initial segmenter weights, copied where name and shape match; default "
                        f"{PRETRAINED_DIR}/<ImageNet file of --model and --backbone> "
                        "(resnet101-5d3b4d8f.pth for deeplabv2); 'none': random initialisation")
    p.add_argument("--init", default="original", choices=("original", "kaiming"),
                   help="[new] initialisation of the trunk's convs before --restore-from: original = N(0, 0.01) "
                        "as the original code; kaiming = He init, much better when training from scratch "
                        "(--restore-from none)")
    p.add_argument("--save-pred-every", type=int, default=5000, help="write VOC_<iter>.pth every this many iterations")
    p.add_argument("--checkpoint-dir", default=checkpoint_dir, help="output folder")
    p.add_argument("--val-list", default=None,
                   help="[new] validation list for the checks during training (default: the dataset's validation split)")
    add_logging_flags(p, montage=True)
    add_resume_flags(p, "<checkpoint-dir>")
    add_speed_flags(p)
    p.add_argument("--sync-bn", action="store_true",
                   help="[new] under torchrun on GPUs, share BN batch statistics across processes "
                        "(off: per-process statistics, as the original's DataParallel)")
    return p


def resolve_dataset_and_model(args):
    """Fill the dataset- and model-dependent defaults; check --backbone against --model."""
    entry = SEGMENTERS[args.model]
    if args.backbone is None:
        args.backbone = entry.backbones[0]
    elif args.backbone not in entry.backbones:
        raise UserError(f"--backbone {args.backbone} is not a backbone of --model {args.model} "
                        f"(choose from {', '.join(entry.backbones)})")
    given_ignore_label = args.ignore_label
    spec = fill_dataset_defaults(args)
    if getattr(args, "full_resolution", False) and args.dataset != "cityscapes":
        raise UserError(f"--full-resolution is a Cityscapes option (the training and evaluation resolution); "
                        f"--dataset {args.dataset} reads its images at their own size")
    if args.num_classes < 2:
        raise UserError("--num-classes must be at least 2")
    if given_ignore_label is not None and spec.ignore_label_fixed and given_ignore_label != spec.ignore_label:
        raise UserError(f"--ignore-label {args.ignore_label} does not match {args.dataset}, whose loader "
                        f"marks void and padding with {spec.ignore_label}")
    if args.num_workers is not None and args.num_workers < 0:  # None: evaluate.py's default, set once the device is known
        raise UserError("--num-workers must be 0 or more")
    return args


def check_min_batch(args, flag):
    """A batch-size flag against --model's smallest training batch."""
    need = SEGMENTERS[args.model].min_batch
    if getattr(args, flag) < need:
        raise UserError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: --model {args.model} needs at least "
                        f"{need} images per batch (the BatchNorm of its ASPP image pooling normalises over the "
                        f"batch, and cannot normalise one image)")


def check_train_args(args, script):
    """Cross-flag checks the parser cannot do; fills the profile's quirk flags and the defaults that
    depend on the dataset and the model (the ImageNet file of --restore-from)."""
    apply_profile(args, script)
    resolve_dataset_and_model(args)
    if args.labeled_ratio is not None and not 0 < args.labeled_ratio <= 1:
        raise UserError(f"--labeled-ratio {args.labeled_ratio} must be in (0, 1]")
    if args.labeled_list and args.labeled_ratio is not None:
        raise UserError(f"--labeled-list {args.labeled_list} and --labeled-ratio {args.labeled_ratio} both say which "
                        f"images are labeled: give one")
    for flag in ("batch_size", "num_steps", "save_pred_every", "log_every"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")
    check_min_batch(args, "batch_size")
    if args.restore_from is None:
        args.restore_from = default_restore_from(args.model, args.backbone)
    if isinstance(args.split_id, str) and args.split_id.lower() == "none":
        args.split_id = None
    return args


def adopt_training_flags(checkpoint, args):
    """Read the args.json that this project's trainers write beside their checkpoints: --model,
    --backbone and --num-classes not given are taken from it, and the flags of that model must agree
    with it (evaluating a 4-branch run with 2 branches, say, gives wrong numbers without any error)."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "args.json")
    if checkpoint.startswith(("http://", "https://")) or not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            trained = json.load(f)
    except (OSError, ValueError):
        return
    if "model" in trained:
        trained["model"] = canonical_model_name(trained["model"])
    for name in ("model", "backbone", "num_classes"):
        if getattr(args, name) is None and trained.get(name) is not None:
            setattr(args, name, trained[name])
    if "wrn_width_mult" in trained and args.wrn_width_mult == 1.0:
        args.wrn_width_mult = trained["wrn_width_mult"]
    entry = SEGMENTERS.get(canonical_model_name(args.model or "deeplabv2"))
    own = [flag.name for flag in entry.flags] if entry else []  # another model's flags do not matter
    for name in ("model", "backbone", *own, "num_classes"):
        if name in trained and trained[name] != getattr(args, name):
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {getattr(args, name)} but the run that wrote {checkpoint} used "
                            f"{flag} {trained[name]} ({path}); pass {flag} {trained[name]}")
