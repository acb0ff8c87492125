"""The paper's tables as sweeps of the ordinary scripts (reproduce.py): the plan, running it, job
scripts for clusters, the speed estimate, and the Markdown table and plot built from result files.

A table is methods x labeled fractions x splits. One run = one training command and one
evaluation. "s4GAN + MLMT" trains the MLMT classifier and evaluates the s4GAN run of the same
fraction and split with `evaluate.py --with-mlmt`. This module only builds command lines, runs them
as subprocesses and reads the files they write: it adds no training code.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

from utils.errors import UserError
from utils.experiments import ROOT, command_line, mean_std, read_miou, run_command

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
# (the README's "Paper numbers"); the tag says how well sourced each is: A = two agreeing sources or
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
        "folder": Table(title="your VOC-layout folder (--dataset folder)", prefix="folder", ratios=(0.125, 0.25, FULL),
                        methods=("baseline", "s4gan", "mlmt"), train_flags=["--dataset", "folder"],
                        eval_flags=["--dataset", "folder"], mlmt_flags=["--dataset", "folder"]),
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
    except ValueError:
        raise UserError(f"--ratios: {text!r} is not a fraction (0.125, 1/8 or full)") from None
    if not 0 < value <= 1:
        raise UserError(f"--ratios: {text} is not in (0, 1]")
    return value


def flag_value(argv, flag, default=None):
    """The value of the last `flag VALUE` in argv (argparse's rule: the last one wins)."""
    values = [argv[k + 1] for k, a in enumerate(argv[:-1]) if a == flag]
    return values[-1] if values else default


# ---------------------------------------------------------------------------------------------
# The plan

@dataclass
class Run:
    index: int             # its number in the plan and its Slurm array index
    name: str
    method: str
    ratio: float
    split: int
    folder: str
    train: list            # the training command: script and flags
    trained: str           # the file a finished training leaves (VOC_<steps>.pth, MLMT's last output)
    evaluate: list         # the evaluation command
    result: str            # its result.txt
    needs: str = None      # MLMT: the s4GAN snapshot its evaluation fuses with
    iterations: int = 0
    launcher: tuple = ()   # ("torchrun", "--nproc_per_node=N"): how the training command is started

    @property
    def gpus(self):
        return int(self.launcher[1].split("=")[1]) if self.launcher else 1

    def describe(self):
        return f"{METHODS[self.method][0]}, {fraction_label(self.ratio)}, split {self.split}"

    def train_text(self):
        return shlex.join([*self.launcher, *self.train]) if self.launcher else command_line(self.train)

    def eval_text(self):
        return command_line(self.evaluate)

    def train_argv(self):
        """What runs: the same command with this interpreter (torchrun through its module)."""
        launch = ["-m", "torch.distributed.run", *self.launcher[1:]] if self.launcher else []
        return [sys.executable, *launch, *self.train]


@dataclass
class Plan:
    key: str
    table: Table
    runs: list
    root: str
    results_dir: str
    snapshot: int
    steps: int
    snapshot_note: str
    warnings: list
    collect_command: str = ""

    @property
    def methods(self):
        return list(dict.fromkeys(r.method for r in self.runs))

    @property
    def ratios(self):
        return sorted(set(r.ratio for r in self.runs))

    @property
    def markdown_path(self):
        return os.path.join(self.results_dir, f"{self.key}.md")

    @property
    def png_path(self):
        return os.path.join(self.results_dir, f"{self.key}.png")


@dataclass
class _Settings:
    """What every run of a plan shares."""
    table: Table
    root: str
    train: list            # flags of every segmentation training command (before its split)
    train_extra: list      # after its split: what followed `--`
    evaluate: list         # flags of every evaluation (before its checkpoint)
    eval_extra: list       # after it: --eval-flags
    mlmt: list
    steps: int
    snapshot: int
    launcher: tuple
    gpus: int
    num_train: int


def build_plan(args, train_extra=()):
    """The runs of `args.table` narrowed by --ratios/--splits/--methods; `train_extra` (what follows
    `--`) goes to every segmentation training command. Runs are ordered fraction, split, method, so
    that an MLMT run comes after the s4GAN run whose snapshot it evaluates."""
    key = args.table + ("_coco" if args.init == "coco" else "")
    if args.init == "coco" and args.table != "voc":
        raise UserError("--init coco exists for --table voc only (the paper's COCO-initialised table)")
    table = tables()[key]
    if args.table == "folder":
        if not args.data_dir:
            raise UserError("--table folder needs --data-dir (a VOC-layout folder with lists/train_aug.txt, val.txt)")
        table.title = f"{args.data_dir} (--dataset folder)"
    ratios = [parse_ratio(r) for r in args.ratios.split(",")] if args.ratios else list(table.ratios)
    try:
        splits = [int(s) for s in args.splits.split(",")]
    except ValueError:
        raise UserError(f"--splits {args.splits}: split numbers, e.g. 0,1,2") from None
    methods = choose_methods(args, table)

    train, evaluate, mlmt = list(table.train_flags), list(table.eval_flags), list(table.mlmt_flags)
    if args.data_dir:
        for flags in (train, evaluate, mlmt):
            flags += ["--data-dir", args.data_dir]
    if args.table == "folder":
        train_list, val_list = (os.path.join(args.data_dir, "lists", f) for f in ("train_aug.txt", "val.txt"))
        train += ["--data-list", train_list]
        evaluate += ["--data-list", val_list]
        mlmt += ["--data-list", train_list, "--val-list", val_list]
    if args.init == "coco":
        train += ["--restore-from", COCO_WEIGHTS]
    if args.steps:
        train += ["--num-steps", str(args.steps)]
    steps = int(flag_value([*train, *train_extra], "--num-steps", DEFAULT_STEPS))
    snapshot, note = choose_snapshot(args.eval_snapshot, steps, table)
    num_train = table.num_train or count_lines(at_root(os.path.join(args.data_dir or "", "lists", "train_aug.txt")))
    settings = _Settings(table, args.out or os.path.join(".", "checkpoints", "reproduce", key), train,
                         list(train_extra), evaluate, shlex.split(args.eval_flags or ""),
                         mlmt + shlex.split(args.mlmt_flags or ""), steps, snapshot,
                         ("torchrun", f"--nproc_per_node={args.gpus}") if args.launcher == "torchrun" else (),
                         args.gpus, num_train)
    runs, warnings = [], []
    for ratio in ratios:
        for split in splits:
            for method in methods:
                make = mlmt_run if method == "mlmt" else segmentation_run
                runs.append(make(settings, len(runs), method, ratio, split, warnings))
    return Plan(key, table, runs, settings.root, args.results_dir, snapshot, steps, note, warnings)


def choose_methods(args, table):
    methods = [m for m in table.methods if m != "mlmt" or mlmt_available()]
    if not args.methods:
        return methods
    wanted = [m.strip().lower().replace("s4gan+mlmt", "mlmt") for m in args.methods.split(",")]
    for m in wanted:
        if m not in table.methods:
            raise UserError(f"--methods: {m!r} is not a method of --table {args.table} ({', '.join(table.methods)})")
        if m not in methods:
            raise UserError(f"--methods mlmt: {METHODS['mlmt'][1]} is not in the repository")
    return [m for m in methods if m in wanted]


def ratio_tag(ratio):
    """0.125 -> 0_125 (as the original's folder names voc_semi_0_125), 1 -> full."""
    return "full" if ratio >= FULL else f"{ratio:g}".replace(".", "_")


def run_name(method, ratio, split):
    return f"{method}_{ratio_tag(ratio)}_s{split}"


def segmentation_run(c, index, method, ratio, split, warnings):
    """A train_full.py / train_s4GAN.py run and the evaluation of its snapshot."""
    name = run_name(method, ratio, split)
    folder = os.path.join(c.root, name)
    split_flags, _ = split_arguments(c.table, ratio, split)
    ratio_flags = split_flags[:2] if ratio < FULL else []
    # the original README's order: dataset, output folder, fraction, the other flags, split, method flags
    train = [METHODS[method][1], *c.train[:2], "--checkpoint-dir", folder, *ratio_flags, *c.train[2:],
             *split_flags[len(ratio_flags):], *(c.table.s4gan_flags if method == "s4gan" else [])]
    if c.launcher and c.gpus > 1 and "--batch-size" not in c.train_extra:
        total = DEFAULT_BATCH[method]  # keep the paper's total batch: --batch-size is per process
        if total % c.gpus and not any(w.startswith(method) for w in warnings):
            warnings.append(f"{method}: a batch of {total} does not split over {c.gpus} GPUs: {total // c.gpus} "
                            f"per GPU ({total // c.gpus * c.gpus} in all)")
        train += ["--batch-size", str(max(1, total // c.gpus))]
    train += [*c.train_extra, "--resume", "auto"]
    result = os.path.join(folder, f"eval_VOC_{c.snapshot}", "result.txt")
    evaluate = ["evaluate.py", *c.evaluate, "--restore-from", os.path.join(folder, f"VOC_{c.snapshot}.pth"),
                "--save-dir", os.path.dirname(result), *c.eval_extra]
    return Run(index, name, method, ratio, split, folder, train, os.path.join(folder, f"VOC_{c.steps}.pth"),
               evaluate, result, iterations=c.steps, launcher=c.launcher)


def mlmt_run(c, index, method, ratio, split, warnings):
    """A train_mlmt.py run (the original README's flags) on the split of the s4GAN run of the same
    fraction, and the evaluation of that s4GAN snapshot fused with the MLMT output."""
    name = run_name(method, ratio, split)
    folder = os.path.join(c.root, name)
    _, mlmt_split = split_arguments(c.table, ratio, split)
    exp_name = f"{c.table.prefix}_semi_{ratio_tag(ratio)}_MLMT_s{split}"  # the original's voc_semi_0_125_MLMT
    train = ["train_mlmt.py", "--batch-size-lab", "16", "--batch-size-unlab", "80", "--labeled-ratio", f"{ratio:g}",
             "--exp-name", exp_name, *mlmt_split, *c.mlmt, "--output-dir", folder, "--resume", "auto"]
    epochs = int(flag_value(train, "--num-epochs", MLMT_EPOCHS))
    output = os.path.join(folder, f"output_ema_raw_{epochs}.txt")  # written after the last epoch
    s4gan = os.path.join(c.root, run_name("s4gan", ratio, split), f"VOC_{c.snapshot}.pth")
    result = os.path.join(folder, f"eval_VOC_{c.snapshot}", "result.txt")
    evaluate = ["evaluate.py", *c.evaluate, "--restore-from", s4gan, "--save-dir", os.path.dirname(result),
                "--with-mlmt", "--mlmt-file", output, *c.eval_extra]
    labeled = int(ratio * c.num_train) if c.num_train else 0
    iterations = epochs * -(-labeled // int(flag_value(train, "--batch-size-lab", 16)))  # epoch: the labeled images
    return Run(index, name, method, ratio, split, folder, train, output, evaluate, result, needs=s4gan,
               iterations=iterations)


def split_arguments(table, ratio, split):
    """(training flags, MLMT flags) that select replicate `split` of a fraction. A fraction uses the
    shipped split splits/<dataset>/seeded_<k>.pkl (the same file for the baseline, s4GAN and MLMT);
    "full" has no split, so its replicates differ by --random-seed."""
    if ratio >= FULL:
        seed = ["--random-seed", str(SEED + split)]
        return seed, ["--pkl-file", "none", *seed]
    if table.split_dir is None:  # a folder of your own: a permutation seeded by --random-seed
        seed = ["--random-seed", str(SEED + split)]
        return ["--labeled-ratio", f"{ratio:g}", "--split-id", "none", *seed], ["--pkl-file", "none", *seed]
    path = f"./{table.split_dir}/seeded_{split}.pkl"
    if not os.path.isfile(os.path.join(ROOT, path)):
        raise UserError(f"--splits {split}: {path} does not exist (shipped: seeded_0, 1, 2)")
    return ["--labeled-ratio", f"{ratio:g}", "--split-id", path], ["--pkl-file", path]


def choose_snapshot(choice, steps, table):
    """(iteration of the evaluated snapshot, a sentence saying which and why)."""
    readme = table.readme_snapshot
    original = (f"; the original README evaluated VOC_{readme}.pth of its 40,000-step runs: --eval-snapshot readme"
                if readme and readme != DEFAULT_STEPS else "")
    if choice in (None, "final"):
        return steps, f"VOC_{steps}.pth, the final snapshot{original}"
    if choice == "readme":
        if readme is None:
            raise UserError("--eval-snapshot readme: this table has no README command to follow")
        if readme > steps:
            raise UserError(f"--eval-snapshot readme: VOC_{readme}.pth is beyond the {steps} training steps")
        return readme, f"VOC_{readme}.pth, the snapshot the original README evaluated"
    try:
        snapshot = int(choice)
    except ValueError:
        raise UserError(f"--eval-snapshot {choice}: final, readme or an iteration") from None
    if not 0 < snapshot <= steps:
        raise UserError(f"--eval-snapshot {snapshot} is not within the {steps} training steps")
    return snapshot, f"VOC_{snapshot}.pth (--eval-snapshot; a multiple of --save-pred-every, default 5000)"


def count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def at_root(path):
    """A path of the plan as the commands see it: they run in the project root."""
    return os.path.join(ROOT, path)


def exists(path):
    return os.path.isfile(at_root(path))


def state(run):
    """done (trained and evaluated), trained (evaluation missing), interrupted (latest.pth, no
    final snapshot: resumed with --resume auto) or new."""
    if exists(run.trained):
        return "done" if exists(run.result) else "trained"
    return "interrupted" if exists(os.path.join(run.folder, "latest.pth")) else "new"


STATE_TEXT = {"done": "done", "trained": "trained, not evaluated",
              "interrupted": "interrupted: resumes from latest.pth", "new": "not started"}


# ---------------------------------------------------------------------------------------------
# Speed: seconds per iteration from benchmarks/RESULTS.md, a calibration, or the command line

def device_name():
    """This machine's first GPU (nvidia-smi), else CPU: which benchmark rows apply."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20).stdout.strip().splitlines()
            if out:
                return out[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return "CPU"


def workload(kind, argv, table):
    """(configuration that must match a measurement, images forwarded per iteration, pixels per image)."""
    amp, channels_last = flag_value(argv, "--amp", "off"), "--channels-last" in argv
    if kind == "mlmt":
        size = int(flag_value(argv, "--image-size", 320))
        lab, unlab = int(flag_value(argv, "--batch-size-lab", 16)), int(flag_value(argv, "--batch-size-unlab", 80))
        config = ("mlmt", flag_value(argv, "--backbone", "resnet101"), amp, channels_last)
        return config, lab + 2 * unlab, size * size  # both views of an unlabeled image are forwarded
    h, w = (int(v) for v in flag_value(argv, "--input-size", table.crop).split(","))
    batch = int(flag_value(argv, "--batch-size", DEFAULT_BATCH[kind]))
    config = ("s4gan" if kind == "s4gan" else "full", flag_value(argv, "--backbone", "resnet101"), amp, channels_last)
    return config, batch * (3 if kind == "s4gan" else 1), h * w  # s4GAN: labeled, unlabeled and real batches


def benchmark_rows(path):
    """Training-speed rows of a benchmarks/RESULTS.md: each table row with the command printed
    above it and the device text (the section heading, or a paragraph starting CPU:/GPU:)."""
    try:
        text = open(path).read()
    except OSError:
        return []
    rows, device, command, header = [], "", "", None
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines or lines[0].startswith("```"):
            continue
        if lines[0].startswith("#"):
            if lines[0].startswith("## "):
                device, command = lines[0][3:], ""
            continue
        if lines[0].startswith("|"):
            for line in lines:
                cells = [c.strip() for c in line.strip("|").split("|")]
                if "s / iter" in cells:
                    header = cells
                elif header and len(cells) == len(header) and not set(line) <= set("|-: "):
                    rows.append({"device": device, "command": command, **dict(zip(header, cells))})
            header = None
            continue
        paragraph = " ".join(lines)
        if re.match(r"(\*\*)?(CPU|GPU)\b", paragraph):
            device = paragraph
        commands = re.findall(r"`([^`]*bench_(?:train|mlmt)\.py[^`]*)`", paragraph)
        if commands:
            command = commands[-1]
    # a torch.compile row measures what the trainers do not run
    return [r for r in rows if r["command"] and "images / s" in r and r.get("compile", "no") == "no"]


def measured_workload(row):
    """The (configuration, images per iteration, pixels) of a benchmark row: from its own cells where
    the table has them (model, batch, crop / image; the GPU check's tables), else from its command."""
    argv = shlex.split(row["command"])
    amp = row.get("amp", "off")
    channels_last = row.get("channels-last", "no") in ("yes", "on", "True")
    model = row.get("model", "")
    if "bench_mlmt.py" in row["command"] or "batch lab + unlab" in row:
        size = int(row.get("image") or flag_value(argv, "--image-size", 64))
        if "batch lab + unlab" in row:  # "16 + 80 x 2 views"
            lab, unlab = (int(v) for v in re.findall(r"\d+", row["batch lab + unlab"])[:2])
        else:
            lab, unlab = int(flag_value(argv, "--batch-size-lab", 4)), int(flag_value(argv, "--batch-size-unlab", 20))
        backbone = model.split()[0] if model else flag_value(argv, "--backbone", "resnet18")
        return ("mlmt", backbone, amp, channels_last), lab + 2 * unlab, size * size
    crop = (row.get("crop") or flag_value(argv, "--crop", "97")).replace("x", ",").split(",")
    h, w = int(crop[0]), int(crop[-1])
    mode = row.get("mode", "s4gan")
    batch = int(re.match(r"\d+", row["batch"]).group()) if "batch" in row else int(flag_value(argv, "--batch-size", 2))
    backbone = model.rsplit("-", 1)[-1] if model else flag_value(argv, "--backbone", "resnet18")  # deeplabv2-resnet101
    config = (mode, backbone, amp, channels_last)
    return config, batch * (3 if mode == "s4gan" else 1), h * w


def estimate_speeds(plan, device, sec_per_iter=None):
    """{kind: (seconds per iteration, where it comes from)} for the kinds of run in the plan.

    In order: --sec-per-iter; <root>/calibration.json written by --calibrate for the same
    configuration; a benchmarks/RESULTS.md row of this device, model, precision and memory format,
    scaled to the run's images per iteration and pixels (a rough figure: speed is not linear in
    the batch on a GPU). A training iteration of the baseline costs about one s4GAN batch, so
    either row serves the other when only one is measured."""
    speeds = {}
    try:
        given = {k: float(v) for k, v in (item.split("=") for item in sec_per_iter.split(","))} if sec_per_iter else {}
    except ValueError:
        raise UserError(f"--sec-per-iter {sec_per_iter}: METHOD=SECONDS,..., e.g. baseline=0.4,s4gan=0.9") from None
    calibration = {}
    if exists(os.path.join(plan.root, "calibration.json")):
        with open(at_root(os.path.join(plan.root, "calibration.json"))) as f:
            calibration = json.load(f)
    rows = benchmark_rows(os.path.join(ROOT, "benchmarks", "RESULTS.md"))
    for kind in plan.methods:
        run = next(r for r in plan.runs if r.method == kind)
        config, images, pixels = workload(kind, run.train, plan.table)
        if kind in given:
            speeds[kind] = (given[kind], "--sec-per-iter")
            continue
        measured = calibration.get(kind)
        if measured and measured["config"] == [*config, images, pixels]:
            speeds[kind] = (measured["sec_per_iter"], f"--calibrate on {measured['device']}")
            continue
        best = None
        for row in rows:
            if device.lower() not in row["device"].lower() and not (device == "CPU" and "CPU" in row["device"]):
                continue
            row_config, row_images, row_pixels = measured_workload(row)
            same_kind = row_config[0] == config[0] or {row_config[0], config[0]} == {"s4gan", "full"}
            if same_kind and row_config[1:] == config[1:]:
                rate = float(row["images / s"]) * row_pixels / pixels  # images/s at the run's image size
                exact = row_config[0] == config[0]
                if best is None or (exact, row_images) > best[0]:
                    best = ((exact, row_images), images / rate, row)
        if best:
            row = best[2]
            (mode, backbone, _, _), row_images, row_pixels = measured_workload(row)
            where = row["device"].replace("*", "").split(",")[0]
            speeds[kind] = (best[1], f"benchmarks/RESULTS.md ({where}: {backbone} {mode}, {row_images} images of "
                                     f"{row_pixels} pixels per iteration at {row['images / s']} images/s; scaled to "
                                     f"{images} images of {pixels} pixels)")
    return speeds


def calibrate(plan, device):
    """Time a few iterations of each kind of run at its real configuration with the benchmarks'
    scripts; write <root>/calibration.json, which later plans read."""
    out = {}
    for kind in plan.methods:
        run = next(r for r in plan.runs if r.method == kind)
        config, images, pixels = workload(kind, run.train, plan.table)
        a = run.train
        if kind == "mlmt":
            bench = ["benchmarks/bench_mlmt.py", "--backbone", config[1], "--image-size",
                     flag_value(a, "--image-size", "320"), "--batch-size-lab", flag_value(a, "--batch-size-lab", "16"),
                     "--batch-size-unlab", flag_value(a, "--batch-size-unlab", "80")]
        else:
            bench = ["benchmarks/bench_train.py", "--mode", config[0], "--backbone", config[1], "--crop",
                     flag_value(a, "--input-size", plan.table.crop), "--batch-size",
                     flag_value(a, "--batch-size", str(DEFAULT_BATCH[kind]))]
        bench += ["--amp", config[2], "--channels-last", "on" if config[3] else "off", "--iters", "3", "--warmup", "1",
                  "--num-workers", flag_value(a, "--num-workers", "4")]
        print("$ " + command_line(bench), flush=True)
        proc = subprocess.run([sys.executable, *bench], cwd=ROOT, capture_output=True, text=True)
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines or "sec_per_iter" not in lines[-1]:
            raise UserError(f"--calibrate: {bench[0]} failed: {(proc.stderr or str(lines))[-300:]}")
        out[kind] = {"config": [*config, images, pixels], "sec_per_iter": lines[-1]["sec_per_iter"],
                     "device": lines[-1]["device"]}
        print(f"{kind}: {out[kind]['sec_per_iter']} s / iteration on {out[kind]['device']}", flush=True)
    os.makedirs(at_root(plan.root), exist_ok=True)
    with open(at_root(os.path.join(plan.root, "calibration.json")), "w") as f:
        json.dump(out, f, indent=1)


def run_hours(run, speeds):
    """Estimated wall-clock hours of a run's training (None if unknown); device-hours are that times
    its GPUs, as the seconds per iteration are those of one process with its share of the batch."""
    speed = speeds.get(run.method)
    return run.iterations * speed[0] / 3600 if speed and run.iterations else None


# ---------------------------------------------------------------------------------------------
# Showing the plan

def _hours(hours):
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.2g}" if hours < 1 else f"{hours:.1f}"


def describe(plan, speeds, device):
    t = plan.table
    methods = ", ".join(f"{METHODS[m][0]} ({METHODS[m][1]})" for m in plan.methods)
    splits = sorted(set(r.split for r in plan.runs))
    how = (f"--split-id ./{t.split_dir}/seeded_<k>.pkl" if t.split_dir else "--split-id none --random-seed 1234+k")
    lines = [f"Table {plan.key}: {t.title}", f"  methods   {methods}",
             f"  labeled   {', '.join(fraction_label(r) for r in plan.ratios)}; splits "
             f"{', '.join(map(str, splits))}: {how} (full: --random-seed 1234+k)",
             f"  steps     {plan.steps} per segmentation run; evaluated: {plan.snapshot_note}",
             f"  output    {plan.root}/<run>/; tables {plan.markdown_path}, {plan.png_path}"]
    if "mlmt" in plan.methods:
        lines.append("  MLMT      trains the classifier, then evaluates the s4GAN run of the same fraction and split "
                     "with --with-mlmt")
    lines += [f"  note      {n}" for n in t.notes] + [f"  warning   {w}" for w in plan.warnings]
    for kind in plan.methods:
        if kind in speeds:
            sec, source = speeds[kind]
            lines.append(f"  speed     {METHODS[kind][0]}: {sec:.3g} s / iteration from {source}")
        else:
            lines.append(f"  speed     {METHODS[kind][0]}: no measurement for {device} (--calibrate on the machine "
                         f"that will train, --bench-device, or --sec-per-iter {kind}=SECONDS)")
    lines.append(f"\n{len(plan.runs)} runs (the number is the Slurm array index):")
    for run in plan.runs:
        hours = run_hours(run, speeds)
        cost = f"{run.iterations} iterations" + (f", about {_hours(hours)} h" if hours is not None else "")
        lines.append(f"#{run.index:<3d} {run.name}  ({run.describe()}; {cost}; {STATE_TEXT[state(run)]})")
        lines.append(f"     {run.train_text()}")
        lines.append(f"     {run.eval_text()}")
    hours = [run_hours(r, speeds) for r in plan.runs]
    known = [h * r.gpus for h, r in zip(hours, plan.runs) if h is not None]
    total = f"about {_hours(sum(known))} device-hours of training on {device}" if known else "not estimated"
    if known and len(known) < len(hours):
        total += f" ({len(hours) - len(known)} runs not estimated)"
    lines.append(f"\nEstimate: {total}; evaluations not counted (minutes each).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Running the plan, one run after another

STOPPED = {130, 143, -2, -15}  # a run ended by Ctrl-C or SIGTERM: the sweep stops as well


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def execute(plan, speeds):
    """Run every run that is not done; returns the names of the failed runs with why, and whether
    the sweep was stopped by a signal."""
    failures, durations, start = [], [], time.time()
    pending = [r for r in plan.runs if state(r) != "done"]
    for run in plan.runs:
        current = state(run)
        left = [r for r in pending if r.index >= run.index]
        if durations:
            remaining = f"about {_hms(sum(durations) / len(durations) * len(left))} left"
        else:
            hours = [run_hours(r, speeds) for r in left]
            remaining = (f"about {_hms(3600 * sum(hours))} left (estimate)" if left and None not in hours
                         else "remaining time unknown yet")
        action = {"done": "done, skipped", "trained": "evaluating", "interrupted": "resuming from latest.pth",
                  "new": "training"}[current]
        print(f"\n=== [{run.index + 1}/{len(plan.runs)}] {run.name} ({run.describe()}): {action} | "
              f"{len(left)} to do | elapsed {_hms(time.time() - start)}, {remaining}", flush=True)
        if current == "done":
            continue
        t0 = time.time()
        try:
            error = _one_run(run, current)
        except KeyboardInterrupt:  # Ctrl-C between two commands (during one, the command handles it)
            error = "stopped"
        if error == "stopped":
            print(f"\nstopped during {run.name}: run the same command again to continue (finished runs are "
                  f"skipped, this one resumes from its latest.pth)", flush=True)
            return failures, True
        if error:
            failures.append(f"{run.name}: {error}")
            print(f"FAILED {run.name}: {error}; going on with the others", flush=True)
        else:
            durations.append(time.time() - t0)
    return failures, False


def _one_run(run, current):
    if current in ("new", "interrupted"):
        print("$ " + run.train_text(), flush=True)
        code = run_command(run.train_argv())
        if code in STOPPED:
            return "stopped"
        if code != 0:
            return f"training exited with status {code}"
        if not exists(run.trained):
            return f"training ended without writing {run.trained}"
    if run.needs and not exists(run.needs):
        return f"its evaluation needs {run.needs}, which the s4GAN run of the same fraction and split writes"
    print("$ " + run.eval_text(), flush=True)
    code = run_command([sys.executable, *run.evaluate])
    if code in STOPPED:
        return "stopped"
    if code != 0:
        return f"evaluation exited with status {code}"
    if read_miou(at_root(run.result)) is None:
        return f"the evaluation wrote no mIoU to {run.result}"
    return None


# ---------------------------------------------------------------------------------------------
# Job scripts

def _task_lines(run):
    q = shlex.quote
    lines = [f"  {run.index})  # {run.name}: {run.describe()}",
             f"    [ -f {q(run.trained)} ] || {run.train_text()}"]
    if run.needs:
        message = f"{run.name}: {run.needs} is missing: when the s4GAN run has finished, run this task again"
        lines.append(f"    [ -f {q(run.needs)} ] || {{ echo {q(message)} >&2; exit 3; }}")
    lines += [f"    [ -f {q(run.result)} ] || {run.eval_text()}", "    ;;"]
    return lines


def job_script(plan, kind, speeds):
    """A bash script whose task K (Slurm: $SLURM_ARRAY_TASK_ID; shell: the argument) is run K of the
    plan: its training (skipped when its final file exists, else --resume auto) then its evaluation."""
    n = len(plan.runs)
    last = n - 1
    hours = [h for h in (run_hours(r, speeds) for r in plan.runs) if h is not None]
    longest = f" The longest training is estimated at {_hours(max(hours))} h." if hours else ""
    head = ["#!/bin/bash", f"# {n} runs of table {plan.key} ({plan.table.title}), written by reproduce.py."]
    if kind == "slurm":
        head += ["# Submit with `sbatch <this file>`: array task K is run #K of the plan. A task that was",
                 "# preempted or stopped resumes when submitted again (`sbatch --array=K <this file>`): finished",
                 "# steps are skipped and training continues from latest.pth (--resume auto).",
                 f"#{longest} Add --time, --partition or --account for your cluster; s4GAN reads three",
                 "# loaders of 4 workers each.",
                 f"#SBATCH --job-name=reproduce_{plan.key}", f"#SBATCH --array=0-{last}",
                 f"#SBATCH --gres=gpu:{max(r.gpus for r in plan.runs)}", "#SBATCH --cpus-per-task=12",
                 f"#SBATCH --output={os.path.normpath(at_root(os.path.join(plan.root, 'slurm')))}/%x_%A_%a.out"]
    else:
        head += ["# `bash <this file>` runs them all, one after another (a failed run does not stop the",
                 "# others; exit status 1 at the end); `bash <this file> K [K ...]` runs the runs numbered K",
                 "# (from 0), e.g. one per machine. Running a run again resumes it: finished steps are skipped.",
                 f"#{longest}"]
    head += [f"# When all runs are done: {plan.collect_command}", "set -euo pipefail",
             'script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"', f"cd {shlex.quote(ROOT)}", "",
             "task() {", '  case "$1" in']
    body = [line for run in plan.runs for line in _task_lines(run)]
    tail = [f'  *) echo "no run $1 in this plan (0-{last})" >&2; exit 2 ;;', "  esac", "}", ""]
    if kind == "slurm":
        tail += ['task "${SLURM_ARRAY_TASK_ID:?run this file with sbatch, or set SLURM_ARRAY_TASK_ID}"']
    else:
        tail += ['if [ "$#" -gt 0 ]; then', '  for k in "$@"; do task "$k"; done', "else", "  status=0",
                 f"  for k in $(seq 0 {last}); do",
                 '    bash "$script" "$k" || { echo "run $k failed" >&2; status=1; }',
                 "  done", '  exit "$status"', "fi"]
    return "\n".join(head + body + tail) + "\n"


def write_job_script(plan, kind, path, speeds):
    path = at_root(path or os.path.join(plan.root, f"{plan.key}.{'slurm' if kind == 'slurm' else 'sh'}"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "slurm":
        os.makedirs(at_root(os.path.join(plan.root, "slurm")), exist_ok=True)  # Slurm does not create it
    with open(path, "w") as f:
        f.write(job_script(plan, kind, speeds))
    os.chmod(path, 0o755)
    return path


# ---------------------------------------------------------------------------------------------
# Collecting: the Markdown table and the plot, from the runs' result.txt files alone

def cells(plan):
    """{(method, ratio): (mean %, std %, n)} over the evaluated splits, and {run name: mIoU % or None}."""
    per_run = {}
    for run in plan.runs:
        miou = read_miou(at_root(run.result)) if exists(run.trained) else None
        per_run[run.name] = None if miou is None else 100 * miou
    out = {}
    for method in plan.methods:
        for ratio in plan.ratios:
            values = [per_run[r.name] for r in plan.runs if (r.method, r.ratio) == (method, ratio)
                      and per_run[r.name] is not None]
            out[(method, ratio)] = mean_std(values)
    return out, per_run


def _number(value, digits=1):
    return "–" if value != value else f"{value:.{digits}f}"


def markdown(plan, table_cells, per_run):
    t = plan.table
    legend = (" Paper: the paper's number as quoted by later papers and the first author, with how well it is "
              "sourced (A: two agreeing sources or the first author; B: one secondary source; C: inferred); – where "
              "none is quoted. Δ = ours − paper." if t.paper else "")
    lines = [f"# {t.title}: mIoU (%)", "",
             f"Each cell: mean ± sample standard deviation over the splits evaluated (n); evaluated snapshot "
             f"`VOC_{plan.snapshot}.pth` of {plan.steps}-step runs.{legend}", ""]
    lines += [f"Note: {n}" for n in t.notes] + ([""] if t.notes else [])
    lines += ["| method | labeled | ours | n | paper | Δ |", "|---|---|---|---|---|---|"]
    for method in plan.methods:
        for ratio in plan.ratios:
            mean, std, n = table_cells[(method, ratio)]
            ours = "not run yet" if n == 0 else (_number(mean) if n == 1 else f"{_number(mean)} ± {_number(std)}")
            paper = t.paper.get(method, {}).get(ratio)
            paper_text = f"{paper[0]:.1f} [{paper[1]}]" if paper else "–"
            delta = f"{mean - paper[0]:+.1f}" if paper and n else "–"
            lines.append(f"| {METHODS[method][0]} | {fraction_label(ratio)} | {ours} | {n} | {paper_text} | {delta} |")
    lines += ["", "Runs (`reproduce.py --collect` with the same table flags rebuilds this file from their result.txt):",
              "", "| run | method | labeled | split | mIoU | result |", "|---|---|---|---|---|---|"]
    for run in plan.runs:
        value = per_run[run.name]
        lines.append(f"| {run.name} | {METHODS[run.method][0]} | {fraction_label(run.ratio)} | {run.split} | "
                     f"{'–' if value is None else f'{value:.2f}'} | `{run.result}` |")
    return "\n".join(lines) + "\n"


def plot(plan, table_cells, path):
    """mIoU against the labeled fraction (log scale): one line per method with error bars (std over
    splits), the paper's numbers as hollow markers of the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for k, method in enumerate(plan.methods):
        colour, label = f"C{k}", METHODS[method][0]
        points = [(r, *table_cells[(method, r)][:2]) for r in plan.ratios if table_cells[(method, r)][2]]
        if points:
            x, mean, std = zip(*points)
            ax.errorbar(x, mean, yerr=[0 if s != s else s for s in std], color=colour, marker="o", capsize=4,
                        label=f"{label} (ours)")
        paper = sorted(plan.table.paper.get(method, {}).items())
        if paper:
            ax.plot([r for r, _ in paper], [v for _, (v, _) in paper], linestyle="none", marker="o", markersize=10,
                    markerfacecolor="none", markeredgecolor=colour, markeredgewidth=1.5, label=f"{label} (paper)")
    ratios = sorted(set(plan.ratios) | {r for m in plan.methods for r in plan.table.paper.get(m, {})})
    ax.set_xscale("log")
    ax.set_xticks(ratios)
    ax.set_xticklabels([fraction_label(r) for r in ratios])
    ax.minorticks_off()
    ax.set_xlabel("labeled fraction of the training images (log scale)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(plan.table.title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def collect(plan):
    """Write results/<table>.md and .png from the runs' result files; returns the Markdown."""
    table_cells, per_run = cells(plan)
    text = markdown(plan, table_cells, per_run)
    os.makedirs(at_root(plan.results_dir), exist_ok=True)
    with open(at_root(plan.markdown_path), "w") as f:
        f.write(text)
    plot(plan, table_cells, at_root(plan.png_path))
    return text
