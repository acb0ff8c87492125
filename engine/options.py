"""Command-line flags. Every flag of the original scripts keeps its name, default and meaning
(spec section 2); flags marked [new] are additions."""
import argparse

from data import DATASETS
from engine.fidelity import apply_profile
from model import SEGMENTERS
from model.weights import IMAGENET_WEIGHTS, PRETRAINED_DIR
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


def _parser(description):
    return ArgumentParser(description=description,
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_model_flags(p):
    p.add_argument("--model", default="DeepLab", help="kept for compatibility; unused (always DeepLabv2)")
    p.add_argument("--backbone", default="resnet101", choices=sorted(SEGMENTERS),
                   help="[new] DeepLabv2 trunk; resnet50/resnet18 are smaller variants of the same design "
                        "for CPU demos and tests")
    p.add_argument("--fidelity", default="original", choices=("original", "fixed"),
                   help="[new] original: reproduce the original code's numerics, quirks included; fixed: "
                        "correct every quirk (each quirk flag below overrides the profile)")
    p.add_argument("--aspp-branches", type=int, default=None, choices=(2, 4),
                   help="[new] classifier branches summed: 2 = original (d=6,12 only), 4 = all "
                        "(default: from --fidelity)")
    p.add_argument("--num-classes", type=int, default=21,
                   help="number of classes: 21 (VOC), 60 (Context), 19 (Cityscapes)")


def add_runtime_flags(p):
    p.add_argument("--device", default="auto", help="[new] auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--gpu", type=int, default=0, help="CUDA device index when --device is auto or cuda")
    p.add_argument("--num-workers", type=int, default=4, help="data-loading worker processes")


def add_data_flags(p, data_list):
    p.add_argument("--dataset", default="pascal_voc", choices=sorted(DATASETS),
                   help="pascal_voc, or folder: any folder in the VOC layout with your own --num-classes")
    p.add_argument("--data-dir", default="./data/voc_dataset/",
                   help="dataset root holding JPEGImages/ and SegmentationClassAug/")
    p.add_argument("--data-list", default=data_list, help="list of image ids, one per line")
    p.add_argument("--ignore-label", type=label_value, default=255,
                   help="label value excluded from the loss and the metric: 255 (VOC), -1 (Context), 250 (Cityscapes)")


def _train_parser(description, batch_size, input_size_default, split_id_default):
    p = _parser(description)
    add_model_flags(p)
    add_data_flags(p, "./data/voc_list/train_aug.txt")
    add_runtime_flags(p)
    p.add_argument("--batch-size", type=int, default=batch_size, help="images per batch (per loader)")
    p.add_argument("--labeled-ratio", type=float, default=None,
                   help="fraction of the training list that is labeled; unset: every image is labeled "
                        "(and, for s4GAN, also used as unlabeled)")
    p.add_argument("--split-id", default=split_id_default,
                   help="pickled permutation of the training indices (labeled = its first "
                        "int(ratio*N) entries); unset or 'none': a permutation seeded by --random-seed")
    p.add_argument("--input-size", type=input_size, default=input_size_default,
                   help="training crop 'H,W'; logits are upsampled to it for the loss")
    p.add_argument("--learning-rate", type=float, default=2.5e-4,
                   help="base SGD learning rate of the segmenter; the classifier gets 10x")
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
    p.add_argument("--random-seed", type=int, default=1234,
                   help="seeds python, numpy, torch, the loaders and the split (the original ignored it)")
    p.add_argument("--restore-from", default=None,
                   help="initial segmenter weights, copied where name and shape match; default "
                        f"{PRETRAINED_DIR}/<ImageNet file of --backbone> "
                        f"({IMAGENET_WEIGHTS['resnet101']} for resnet101); 'none': random initialisation")
    p.add_argument("--init", default="original", choices=("original", "kaiming"),
                   help="[new] initialisation of the trunk's convs before --restore-from: original = N(0, 0.01) "
                        "as the original code; kaiming = He init, much better when training from scratch "
                        "(--restore-from none)")
    p.add_argument("--save-pred-every", type=int, default=5000, help="write VOC_<iter>.pth every this many iterations")
    p.add_argument("--checkpoint-dir", default="./checkpoints/voc_semi_0_125/", help="output folder")
    p.add_argument("--log-every", type=int, default=10, help="[new] print and log to metrics.jsonl every this many iterations")
    p.add_argument("--resume", default=None,
                   help="[new] 'auto': continue from <checkpoint-dir>/latest.pth if present (else start fresh); "
                        "or the path of a latest.pth")
    add_speed_flags(p)
    add_distributed_flags(p)
    return p


def add_speed_flags(p):
    p.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"),
                   help="[new] mixed precision (autocast; fp16 adds a gradient scaler); off is bit-faithful")
    p.add_argument("--channels-last", action="store_true", help="[new] NHWC memory format (faster convs on GPUs)")


def add_distributed_flags(p):
    p.add_argument("--sync-bn", action="store_true",
                   help="[new] under torchrun on GPUs, share BN batch statistics across processes "
                        "(off: per-process statistics, as the original's DataParallel)")


def full_parser():
    return _train_parser("Supervised DeepLabv2 baseline (FSL).", 10, (321, 321), "./splits/voc/split_0.pkl")


def s4gan_parser():
    p = _train_parser("s4GAN semi-supervised segmentation: DeepLabv2 + image-level discriminator.",
                      8, (321, 321), None)
    p.add_argument("--learning-rate-D", type=float, default=1e-4, help="Adam learning rate of the discriminator")
    p.add_argument("--lambda-fm", type=float, default=0.1, help="weight of the feature-matching loss")
    p.add_argument("--lambda-st", type=float, default=1.0, help="weight of the self-training loss")
    p.add_argument("--threshold-st", type=float, default=0.6,
                   help="D score above which an unlabeled image is self-trained (0.6 VOC/Context, 0.7 Cityscapes)")
    p.add_argument("--restore-from-D", default=None, help="initial discriminator weights")
    p.add_argument("--unlabeled-list", default=None,
                   help="[new] ids of extra images (<data-dir>/JPEGImages/<id>.jpg) that have no label PNG; "
                        "they join the unlabeled pool")
    p.add_argument("--d-real-norm", default=None, choices=("labeled", "own"),
                   help="[new] scale the image of D's real input by the labeled CE batch's range (labeled, "
                        "original) or by its own (default: from --fidelity)")
    return p


def check_train_args(args, script):
    """Cross-flag checks the parser cannot do; fills the profile's quirk flags and the
    backbone-dependent --restore-from default."""
    apply_profile(args, script)
    if args.labeled_ratio is not None and not 0 < args.labeled_ratio <= 1:
        raise UserError(f"--labeled-ratio {args.labeled_ratio} must be in (0, 1]")
    for flag in ("batch_size", "num_steps", "save_pred_every", "log_every"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.num_workers < 0:
        raise UserError("--num-workers must be 0 or more")
    if args.num_classes < 2:
        raise UserError("--num-classes must be at least 2")
    if args.restore_from is None:
        args.restore_from = f"{PRETRAINED_DIR}/{IMAGENET_WEIGHTS[args.backbone]}"
    if isinstance(args.split_id, str) and args.split_id.lower() == "none":
        args.split_id = None
    return args


def evaluate_parser():
    p = _parser("Evaluate a segmenter checkpoint (single scale, the original's protocol).")
    add_model_flags(p)
    add_data_flags(p, "./data/voc_list/val.txt")
    add_runtime_flags(p)
    p.add_argument("--restore-from", default="", help="checkpoint to evaluate (file or http(s) URL)")
    p.add_argument("--save-dir", default="results", help="folder for result.txt and the predicted PNGs")
    p.add_argument("--with-mlmt", action="store_true", help="suppress classes the MLMT branch calls absent")
    p.add_argument("--mlmt-fusion", default=None, choices=("multiply", "mask"),
                   help="[new] multiply: absent classes' logits x 0 (original); mask: set to -inf "
                        "(default: from --fidelity)")
    p.add_argument("--mlmt-file", default="./mlmt_output/output_ema_p_1_0_voc_5.txt",
                   help="MLMT class probabilities, one row per val image in list order, background first")
    p.add_argument("--save-output-images", action="store_true", help="write palette PNGs <save-dir>/<id>.png")
    p.add_argument("--batch-size", type=int, default=1, help="[new] images per forward pass")
    add_speed_flags(p)
    return p


def check_evaluate_args(args):
    apply_profile(args, "evaluate")
    if not args.restore_from:
        raise UserError("--restore-from is required: the checkpoint to evaluate")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.num_workers < 0:
        raise UserError("--num-workers must be 0 or more")
    return args
