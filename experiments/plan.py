"""The plan: the runs of a table (one training command and one evaluation each), in order, and the
state of each on disk."""
import os
import shlex
import sys
from dataclasses import dataclass

from utils.errors import UserError
from experiments.scripts import ROOT, command_line, flag_value
from experiments import catalog
from experiments.catalog import (COCO_WEIGHTS, DEFAULT_BATCH, DEFAULT_STEPS, FULL, METHODS, MLMT_EPOCHS, SEED, Table,
                                 fraction_label, parse_ratio, tables)

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
    label: str = ""        # the column's label
    method_text: str = ""  # the method's name in this table
    more: list = ()        # [(evaluation command, its result.txt)] of the other snapshots (tables that report the best)

    @property
    def gpus(self):
        return int(self.launcher[1].split("=")[1]) if self.launcher else 1

    def describe(self):
        return f"{self.method_text or METHODS[self.method][0]}, {self.label or fraction_label(self.ratio)}, split {self.split}"

    @property
    def evaluations(self):
        """[(evaluation command, result.txt)]: the evaluated snapshot's first."""
        return [(self.evaluate, self.result), *self.more]

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
    ratios = [choose_column(table, r) for r in args.ratios.split(",")] if args.ratios else list(table.ratios)
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


def choose_column(table, text):
    """A --ratios entry: a fraction, or for a table of split lists a column by its list (92, 1_16, 1/16)."""
    if not table.lists:
        return parse_ratio(text)
    wanted = text.strip().replace("/", "_")
    for ratio, (label, path, count) in table.lists.items():
        if wanted in (os.path.splitext(os.path.basename(path))[0], str(count)):
            return ratio
    raise UserError(f"--ratios: {text!r} is not a column of this table "
                    f"({', '.join(label for label, _, _ in table.lists.values())})")


def choose_methods(args, table):
    methods = [m for m in table.methods if m != "mlmt" or catalog.mlmt_available()]
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


def column_tag(table, ratio):
    """A column in names: its list's name for today's tables (92, 1_16), else ratio_tag."""
    if table is not None and ratio in table.lists:
        return os.path.splitext(os.path.basename(table.lists[ratio][1]))[0]
    return ratio_tag(ratio)


def run_name(method, ratio, split, table=None):
    return f"{method}_{column_tag(table, ratio)}_s{split}"  # s4gan_0_125_s0, s4gan_92_s0


def other_snapshots(c, folder):
    """[(iteration, result.txt)] of the snapshots other than the evaluated one, for tables that report
    the best snapshot too: every --save-pred-every (5000) iterations."""
    if not c.table.every_snapshot:
        return []
    every = int(flag_value([*c.train, *c.train_extra], "--save-pred-every", 5000))
    return [(i, os.path.join(folder, f"eval_VOC_{i}", "result.txt"))
            for i in range(every, c.steps + 1, every) if i != c.snapshot]


def segmentation_run(c, index, method, ratio, split, warnings):
    """A train_full.py / train_s4GAN.py run and the evaluation of its snapshot."""
    name = run_name(method, ratio, split, c.table)
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
    def evaluation(snapshot, result):
        return ["evaluate.py", *c.evaluate, "--restore-from", os.path.join(folder, f"VOC_{snapshot}.pth"),
                "--save-dir", os.path.dirname(result), *c.eval_extra]
    result = os.path.join(folder, f"eval_VOC_{c.snapshot}", "result.txt")
    more = [(evaluation(i, path), path) for i, path in other_snapshots(c, folder)]
    return Run(index, name, method, ratio, split, folder, train, os.path.join(folder, f"VOC_{c.steps}.pth"),
               evaluation(c.snapshot, result), result, iterations=c.steps, launcher=c.launcher,
               label=c.table.label(ratio), method_text=c.table.method_label(method), more=more)


def mlmt_run(c, index, method, ratio, split, warnings):
    """A train_mlmt.py run (the original README's flags) on the split of the s4GAN run of the same
    fraction, and the evaluation of that s4GAN snapshot fused with the MLMT output."""
    name = run_name(method, ratio, split, c.table)
    folder = os.path.join(c.root, name)
    _, mlmt_split = split_arguments(c.table, ratio, split)
    exp_name = f"{c.table.prefix}_semi_{column_tag(c.table, ratio)}_MLMT_s{split}"  # the original's voc_semi_0_125_MLMT
    ratio_flags = [] if ratio in c.table.lists else ["--labeled-ratio", f"{ratio:g}"]
    train = ["train_mlmt.py", "--batch-size-lab", "16", "--batch-size-unlab", "80", *ratio_flags,
             "--exp-name", exp_name, *mlmt_split, *c.mlmt, "--output-dir", folder, "--resume", "auto"]
    epochs = int(flag_value(train, "--num-epochs", MLMT_EPOCHS))
    output = os.path.join(folder, f"output_ema_raw_{epochs}.txt")  # written after the last epoch
    s4gan_folder = os.path.join(c.root, run_name("s4gan", ratio, split, c.table))
    s4gan = os.path.join(s4gan_folder, f"VOC_{c.snapshot}.pth")

    def evaluation(snapshot, result):
        return ["evaluate.py", *c.evaluate, "--restore-from", os.path.join(s4gan_folder, f"VOC_{snapshot}.pth"),
                "--save-dir", os.path.dirname(result), "--with-mlmt", "--mlmt-file", output, *c.eval_extra]
    result = os.path.join(folder, f"eval_VOC_{c.snapshot}", "result.txt")
    more = [(evaluation(i, path), path) for i, path in other_snapshots(c, folder)]
    labeled = c.table.lists[ratio][2] if ratio in c.table.lists else int(ratio * c.num_train) if c.num_train else 0
    iterations = epochs * -(-labeled // int(flag_value(train, "--batch-size-lab", 16)))  # epoch: the labeled images
    return Run(index, name, method, ratio, split, folder, train, output, evaluation(c.snapshot, result), result,
               needs=s4gan, iterations=iterations, label=c.table.label(ratio), method_text=c.table.method_label(method), more=more)


def split_arguments(table, ratio, split):
    """(training flags, MLMT flags) that select replicate `split` of a fraction. A fraction uses the
    shipped split splits/<dataset>/seeded_<k>.pkl (the same file for the baseline, s4GAN and MLMT);
    "full" has no split, so its replicates differ by --random-seed."""
    if ratio in table.lists:  # today's protocol: one published list; the replicates differ by their seed
        flags = ["--labeled-list", table.lists[ratio][1], "--random-seed", str(SEED + split)]
        return flags, flags
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
    if choice == "best":
        raise UserError("--eval-snapshot best: best.pth is the snapshot that scored best on the validation set, "
                        "the very images evaluate.py scores, so its number is selected on the evaluation set and is "
                        "no table's number; evaluate a fixed snapshot: final, readme or an iteration")
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
        return "done" if all(exists(result) for _, result in run.evaluations) else "trained"
    return "interrupted" if exists(os.path.join(run.folder, "latest.pth")) else "new"


STATE_TEXT = {"done": "done", "trained": "trained, not evaluated",
              "interrupted": "interrupted: resumes from latest.pth", "new": "not started"}
