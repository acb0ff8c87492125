"""The tables reproduce.py offers: methods, labeled fractions, the original README's flags per
dataset, and the paper's numbers."""
import os
from dataclasses import dataclass, field

from utils.errors import UserError
from experiments.scripts import ROOT

METHODS = {  # key: (label in tables, script)
    "baseline": ("DeepLabv2 baseline", "train_full.py"),
    "s4gan": ("s4GAN", "train_s4GAN.py"),
    "mlmt": ("s4GAN + MLMT", "train_mlmt.py"),
}
DEFAULT_BATCH = {"baseline": 10, "s4gan": 8}  # the trainers' defaults, the paper's batches
DEFAULT_STEPS = 40000
MLMT_EPOCHS = 100
COCO_WEIGHTS = "./pretrained_models/resnet101COCO-41f33a49.pth"
FULL = 1.0  # the "full" column: every training image labeled (no --labeled-ratio, no split)
SEED = 1234  # the trainers' default --random-seed; replicate k of a split-less run uses SEED + k

# The paper's numbers: {method: {fraction: (mIoU, tag)}}. They are secondary quotes of the paper
# (docs/reproducing.md, "The paper's numbers"); the tag says how well sourced each is: A = two agreeing sources or
# the first author himself, B = one secondary source, C = inferred. Cells nobody quotes are absent.
PAPER_VOC_IMAGENET = {
    "baseline": {0.02: (48.3, "B"), 0.05: (56.8, "B"), 0.125: (62.0, "B"), FULL: (70.7, "A")},
    "s4gan": {0.02: (58.1, "A"), 0.125: (65.4, "A")},
    "mlmt": {0.02: (60.4, "B"), 0.05: (62.9, "B"), 0.125: (67.3, "B"), FULL: (73.2, "B")},
}
PAPER_VOC_COCO = {
    "s4gan": {0.125: (69.8, "A")},
    "mlmt": {0.02: (63.3, "A"), 0.05: (67.2, "A"), 0.125: (71.4, "A"), FULL: (75.6, "A")},
}
PAPER_CONTEXT = {"mlmt": {0.125: (35.3, "B"), 0.25: (37.8, "B")}}
PAPER_CITYSCAPES = {
    "baseline": {0.125: (56.2, "B"), 0.25: (60.2, "B"), FULL: (66.0, "B")},
    "s4gan": {0.125: (59.3, "A"), 0.25: (61.9, "A"), FULL: (65.8, "A")},
}


@dataclass
class Table:
    title: str
    prefix: str            # the original's folder prefix: voc, pc, city
    ratios: tuple
    methods: tuple
    train_flags: list      # the dataset flags of the original README's training commands
    eval_flags: list       # ... of its evaluate.py command
    s4gan_flags: list = field(default_factory=list)  # its s4GAN command's own additions
    mlmt_flags: list = field(default_factory=list)
    split_dir: str = None  # splits/<dataset>: seeded_<k>.pkl; None: --split-id none --random-seed
    readme_snapshot: int = None  # the snapshot the original README evaluated
    num_train: int = None  # training images (MLMT iterations per epoch)
    crop: str = "321,321"
    paper: dict = field(default_factory=dict)
    notes: tuple = ()
    # today's protocol (docs/modern-protocol.md): {column: (label, labeled list, labeled count)}, the
    # column being count / num_train; the replicates of a column differ by --random-seed
    lists: dict = field(default_factory=dict)
    method_labels: dict = field(default_factory=dict)
    every_snapshot: bool = False  # also evaluate every snapshot, for the best one (selected on the evaluation set)

    def label(self, ratio):
        return self.lists[ratio][0] if ratio in self.lists else fraction_label(ratio)

    def method_label(self, method):
        return self.method_labels.get(method, METHODS[method][0])


def tables():
    """The tables `--table` offers. The flags are those of the original README's commands for each
    dataset (README.md, "Commands (as in the original README)"); docs/original.md lists what those
    commands did differently from their text (lost flags, the evaluated snapshot)."""
    voc = dict(title="PASCAL VOC 2012 val, DeepLabv2 ResNet-101, ImageNet initialisation", prefix="voc",
               ratios=(0.02, 0.05, 0.125, FULL),
               methods=("baseline", "s4gan", "mlmt"), split_dir="splits/voc", readme_snapshot=30000, num_train=10582,
               train_flags=["--dataset", "pascal_voc", "--ignore-label", "255", "--num-classes", "21"],
               eval_flags=["--dataset", "pascal_voc", "--num-classes", "21"])
    return {
        "voc": Table(**voc, paper=PAPER_VOC_IMAGENET),
        "voc_coco": Table(**{**voc, "title": voc["title"].replace("ImageNet", "ImageNet + COCO")}, paper=PAPER_VOC_COCO,
                          notes=("The s4GAN + MLMT numbers are well sourced [A]; that they are the COCO-initialised "
                                 "ones is inferred [C].",)),
        "context": Table(title="PASCAL-Context val, DeepLabv2 ResNet-101", prefix="pc", ratios=(0.125, 0.25, FULL),
                         methods=("baseline", "s4gan", "mlmt"), split_dir="splits/pc", readme_snapshot=40000,
                         num_train=4996,
                         train_flags=["--dataset", "pascal_context", "--ignore-label", "-1", "--num-classes", "60"],
                         eval_flags=["--dataset", "pascal_context", "--num-classes", "60"],
                         mlmt_flags=["--dataset", "pascal_context", "--num-classes", "60"], paper=PAPER_CONTEXT,
                         notes=("The original README's --num-steps 60000 for Context never reached the script (a "
                                "missing backslash, docs/original.md): 40,000 steps ran, as here.",)),
        "cityscapes": Table(title="Cityscapes val (half resolution), DeepLabv2 ResNet-101", prefix="city",
                            ratios=(0.125, 0.25, FULL), methods=("baseline", "s4gan"), split_dir="splits/city",
                            readme_snapshot=30000, num_train=2975, crop="256,512",
                            train_flags=["--dataset", "cityscapes", "--ignore-label", "250", "--num-classes", "19",
                                         "--input-size", "256,512"],
                            s4gan_flags=["--threshold-st", "0.7", "--learning-rate-D", "1e-5"],
                            eval_flags=["--dataset", "cityscapes", "--num-classes", "19"], paper=PAPER_CITYSCAPES),
        **modern_tables(),
        "folder": Table(title="your VOC-layout folder (--dataset folder)", prefix="folder", ratios=(0.125, 0.25, FULL),
                        methods=("baseline", "s4gan", "mlmt"), train_flags=["--dataset", "folder"],
                        eval_flags=["--dataset", "folder"], mlmt_flags=["--dataset", "folder"]),
    }


# Today's protocol: DeepLabv3+ ResNet-101 (output stride 16), the bugs of the original corrected, batch 8,
# SGD weight decay 1e-4 and the poly schedule; the learning rates, crops and evaluation of UniMatch's
# configs (configs/pascal.yaml, configs/cityscapes.yaml). Sources and differences: docs/modern-protocol.md.
MODERN_FLAGS = ["--model", "deeplabv3p", "--backbone", "resnet101", "--fidelity", "fixed", "--batch-size", "8",
                "--weight-decay", "1e-4"]
MODERN_SUPERVISED = "DeepLabv3+ supervised (labeled only)"


def list_columns(folder, names, num_train):
    """{count / num_train: (label, ./splits/<folder>/<name>.txt, count)} of shipped split lists."""
    columns = {}
    for name in names:
        path = f"./splits/{folder}/{name}.txt"
        with open(os.path.join(ROOT, path)) as f:
            count = sum(1 for line in f if line.strip())
        label = name if name.isdigit() else f"1/{name.split('_')[1]} ({count})"
        columns[count / num_train] = (label, path, count)
    return columns


def modern_tables():
    voc_train = ["--dataset", "pascal_voc", "--ignore-label", "255", "--num-classes", "21", *MODERN_FLAGS,
                 "--learning-rate", "0.001", "--input-size", "321,321", "--random-scale", "--random-mirror"]
    voc_eval = ["--dataset", "pascal_voc", "--num-classes", "21", "--eval-mode", "whole"]
    voc = dict(prefix="voc", methods=("baseline", "s4gan", "mlmt"), num_train=10582, crop="321,321",
               train_flags=voc_train, eval_flags=voc_eval, every_snapshot=True,
               method_labels={"baseline": MODERN_SUPERVISED})
    classic = list_columns("voc/classic", ("92", "183", "366", "732", "1464"), 10582)
    blended = list_columns("voc/blended_u2pl", ("1_16", "1_8", "1_4", "1_2"), 10582)
    city = list_columns("city/u2pl", ("1_16", "1_8", "1_4", "1_2"), 2975)
    not_the_paper = "Today's protocol, not the paper's: these numbers are not comparable with the paper's tables."
    return {
        "voc-classic": Table(title="PASCAL VOC 2012 val, classic splits (labels from the 1,464 fine images), "
                                   "DeepLabv3+ ResNet-101, whole-image evaluation", ratios=tuple(sorted(classic)),
                             lists=classic, notes=(not_the_paper,), **voc),
        "voc-blended": Table(title="PASCAL VOC 2012 val, blended splits of train_aug (U2PL's), DeepLabv3+ "
                                   "ResNet-101, whole-image evaluation", ratios=tuple(sorted(blended)),
                             lists=blended, notes=(not_the_paper,), **voc),
        "cityscapes-modern": Table(
            title="Cityscapes val at 2048x1024, DeepLabv3+ ResNet-101, sliding-window evaluation", prefix="city",
            ratios=tuple(sorted(city)), lists=city, methods=("baseline", "s4gan"), num_train=2975, crop="801,801",
            train_flags=["--dataset", "cityscapes", "--ignore-label", "250", "--num-classes", "19", *MODERN_FLAGS,
                         "--learning-rate", "0.005", "--input-size", "801,801", "--full-resolution"],
            s4gan_flags=["--threshold-st", "0.7", "--learning-rate-D", "1e-5"],
            eval_flags=["--dataset", "cityscapes", "--num-classes", "19", "--full-resolution", "--eval-mode", "sliding",
                        "--eval-window", "801,801"],
            every_snapshot=True, method_labels={"baseline": MODERN_SUPERVISED},
            notes=(not_the_paper, "No s4GAN + MLMT row: train_mlmt.py does not read Cityscapes labels (the paper "
                                  "has no Cityscapes MLMT result either).")),
    }


def mlmt_available():
    """The MLMT rows exist once its trainer is in the repository."""
    return os.path.isfile(os.path.join(ROOT, METHODS["mlmt"][1]))


def fraction_label(ratio):
    if ratio >= FULL:
        return "full"
    inverse = 1 / ratio
    return f"1/{round(inverse)}" if abs(inverse - round(inverse)) < 1e-6 else f"{ratio:g}"


def parse_ratio(text):
    text = text.strip().lower()
    try:
        value = FULL if text in ("full", "all") else (1 / float(text[2:]) if text.startswith("1/") else float(text))
    except (ValueError, ZeroDivisionError):
        raise UserError(f"--ratios: {text!r} is not a fraction (0.125, 1/8 or full)") from None
    if not 0 < value <= 1:
        raise UserError(f"--ratios: {text} is not in (0, 1]")
    return value
