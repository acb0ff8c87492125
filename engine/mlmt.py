"""The MLMT branch (Mittal et al., TPAMI 2021, Sec. 3.2): a multi-label mean teacher, the image
classifier whose class-presence probabilities `evaluate.py --with-mlmt` uses to remove absent
classes from the segmentation. This is the behaviour of the authors' code; its two quirks have
switches (PROFILES below).

One iteration (`MLMTStep`), in the original's order:

1. the student on the labeled batch; BCE between its sigmoid outputs and the multi-hot targets;
2. the teacher on the same labeled images (only for the accuracy printout; in train mode, so its BN
   statistics move, as in the original);
3. the student on the augmented view of an unlabeled batch, the teacher on the plain view (no
   gradient); consistency = mean over the batch of 1 - cos(student logits, teacher logits);
4. L = BCE + w(epoch) * consistency: w = 0 up to and including epoch --burn-in-epochs (counted from
   0), then min(--w-cons, 2 (epoch - burn-in) / --num-epochs);
5. an SGD step (Nesterov; the learning rate follows a cosine over the epochs, stepped per epoch);
6. the teacher's parameters (not its buffers) move to the EMA
   alpha * teacher + (1 - alpha) * student, alpha = min(1 - 1 / (step + 1), --ema-decay), where
   step counts the optimizer steps so far (1 after the first).

An epoch is one pass over the labeled images. Every --evaluation-epochs epochs both networks go
through the validation list (eval mode) and their sigmoid outputs are written as
output_{val,ema}_{raw,bin}_<epoch>.txt, background first (`reorder_output`).
"""
import io
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from data import get_dataset
from data.multilabel import (ALWAYS_PRESENT, ClassifierImages, ImageLabels, cache_path_for, default_list_candidates,
                             derive_labels, from_unit_order, missing_classes, normalize_images, read_original_split)
from data.sampler import BatchStream, SeededEpochSampler
from data.splits import load_permutation, seeded_permutation, split_indices
from engine.common import images_to_device, losses_to_floats
from engine.setup import STREAM_IDS
from model.classifier import IMAGENET_FILES, build_classifier, load_trunk, read_imagenet_weights
from model.weights import TORCHVISION_URL
from utils.checkpoint import atomic_write_bytes
from utils.distributed import broadcast_object
from utils.errors import UserError
from utils.seeding import init_worker

# The MLMT quirks of the original code, per --fidelity profile; each also has its own flag.
# output_roll: how the background column reaches the front of the output files (`reorder_output`).
# unlabeled_restart: the original re-created its unlabeled iterator at the start of every epoch, so
# when an epoch (a pass over the labeled images) is shorter than a pass over the unlabeled ones (at
# 1/8: 83 of 116 batches) the end of every unlabeled shuffle is never used; "exhausted" restarts
# only when the images run out.
PROFILES = {
    "original": {"output_roll": "flat", "unlabeled_restart": "epoch"},
    "fixed": {"output_roll": "per-row", "unlabeled_restart": "exhausted"},
}
BIN_THRESHOLD = 0.5  # the _bin_ files and the accuracy printout


def apply_profile(args):
    for name, value in PROFILES[args.fidelity].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return args


def warn(env, text):
    if env.is_main:
        print(f"warning: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the objective's pieces
def ema_alpha(global_step, decay):
    """The teacher's decay after optimizer step number `global_step` (1 for the first step)."""
    return min(1.0 - 1.0 / (global_step + 1), decay)


@torch.no_grad()
def update_ema(teacher, student, alpha):
    """teacher <- alpha * teacher + (1 - alpha) * student, parameters only (the teacher's BN
    statistics are its own, from its own forward passes)."""
    ema = list(teacher.parameters())
    torch._foreach_mul_(ema, alpha)
    torch._foreach_add_(ema, [p.detach() for p in student.parameters()], alpha=1.0 - alpha)


def consistency_weight(epoch, burn_in_epochs, num_epochs, w_cons):
    """0 up to and including epoch `burn_in_epochs` (epochs counted from 0), then a linear ramp
    of 2 / num_epochs per epoch, capped at w_cons (at 0.02 per epoch it reaches 1 at epoch 60)."""
    if epoch <= burn_in_epochs:
        return 0.0
    return min(w_cons, (epoch - burn_in_epochs) * 2 / num_epochs)


def cosine_consistency(student_logits, teacher_logits):
    """Mean over the batch of 1 - cos(student, teacher) on the raw logits; the teacher is a target."""
    target = torch.ones(student_logits.shape[0], device=student_logits.device)
    return F.cosine_embedding_loss(student_logits, teacher_logits.detach(), target)


def recall_accuracy(probs, targets, threshold=BIN_THRESHOLD):
    """The original's "Avg Acc": the mean of the recall of the positives and of the negatives, in %
    (outputs >= threshold count as positive). Returns (mean, negatives' recall, positives' recall);
    a recall without any example is NaN."""
    probs, targets = torch.as_tensor(probs), torch.as_tensor(targets)
    predicted, positive = probs >= threshold, targets > 0.5
    pos = (predicted & positive).sum() / positive.sum()
    neg = (~predicted & ~positive).sum() / (~positive).sum()
    pos, neg = 100.0 * float(pos), 100.0 * float(neg)
    return (pos + neg) / 2.0, neg, pos


def average_precision(scores, targets):
    """Per column: AP = sum over the distinct score thresholds of (R_k - R_{k-1}) * P_k, the
    non-interpolated average precision; NaN for a column without positives."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets) > 0.5
    out = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        positives = targets[:, c].sum()
        if positives == 0:
            continue
        order = np.argsort(-scores[:, c], kind="mergesort")
        ranked, hits = scores[order, c], targets[order, c]
        last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # the end of each group of ties
        tp, seen = np.cumsum(hits)[last], last + 1
        recall = tp / positives
        out[c] = float(np.sum(np.diff(np.r_[0.0, recall]) * (tp / seen)))
    return out


def reorder_output(probs, mode, batch_size):
    """The classifier's outputs (background last) -> the file's columns (background first).

    per-row: each row's last column moves to the front. flat (the original's np.roll without an
    axis, over each validation batch of `batch_size` rows): the whole batch shifts by one value,
    so column 0 of a row holds the previous row's background probability and the batch's first row
    gets its last row's. With background present in every VOC image, the shifted values are all
    close to 1, so the original's fusion hardly notices."""
    probs = np.asarray(probs)
    if mode == "per-row":
        return np.roll(probs, 1, axis=1)
    if mode != "flat":
        raise ValueError(f"unknown output order {mode!r}")
    return np.concatenate([np.roll(probs[k:k + batch_size], 1) for k in range(0, len(probs), batch_size)])


def output_paths(out_dir, tag, epoch):
    return (os.path.join(out_dir, f"output_{tag}_raw_{epoch}.txt"),
            os.path.join(out_dir, f"output_{tag}_bin_{epoch}.txt"))


def write_outputs(out_dir, tag, epoch, table):
    """output_<tag>_raw_<epoch>.txt (%f) and _bin_ (> 0.5 as 0/1), each replaced atomically."""
    raw_path, bin_path = output_paths(out_dir, tag, epoch)
    for path, values, fmt in ((raw_path, table, "%f"), (bin_path, (table > BIN_THRESHOLD).astype(np.int64), "%d")):
        buffer = io.BytesIO()
        np.savetxt(buffer, values, fmt=fmt)
        atomic_write_bytes(path, buffer.getvalue())
    return raw_path


class EpochMeters:
    """Running sums of one epoch's values (saved in latest.pth, so a resumed epoch reports the
    same means); accuracies without a defined value (NaN) are left out of their mean."""

    KEYS = ("loss", "loss_class", "loss_cons", "acc", "acc_mt")

    def __init__(self):
        self.reset()

    def reset(self):
        self.sums = {k: 0.0 for k in self.KEYS}
        self.counts = {k: 0 for k in self.KEYS}

    def add(self, values):
        for k in self.KEYS:
            if values[k] == values[k]:
                self.sums[k] += values[k]
                self.counts[k] += 1

    def means(self):
        return {k: self.sums[k] / self.counts[k] if self.counts[k] else float("nan") for k in self.KEYS}

    def state_dict(self):
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state):
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])


class MLMTStep:
    streams = ("labeled", "unlabeled")

    def __init__(self, student, teacher, optimizer, precision, *, num_epochs, burn_in_epochs, w_cons, ema_decay,
                 device, channels_last=False):
        self.student, self.teacher, self.optimizer, self.precision = student, teacher, optimizer, precision
        self.student_params = getattr(student, "module", student)  # the EMA reads the bare student
        self.num_epochs, self.burn_in_epochs, self.w_cons, self.ema_decay = num_epochs, burn_in_epochs, w_cons, ema_decay
        self.device, self.channels_last = device, channels_last
        self.meters = EpochMeters()

    def _images(self, uint8_views):
        return normalize_images(images_to_device(uint8_views, self.device, self.channels_last))

    def _forward(self, model, images):
        with self.precision.autocast():
            return model(images).float()

    def __call__(self, iteration, epoch, labeled, unlabeled):
        images = self._images(labeled[0])
        targets = labeled[1].to(self.device, non_blocking=True).float()
        plain, augmented = self._images(unlabeled[0]), self._images(unlabeled[1])
        self.optimizer.zero_grad(set_to_none=True)

        probs = torch.sigmoid(self._forward(self.student, images))
        with torch.no_grad():
            probs_mt = torch.sigmoid(self._forward(self.teacher, images))
        loss_class = F.binary_cross_entropy(probs, targets)

        student_logits = self._forward(self.student, augmented)
        with torch.no_grad():
            teacher_logits = self._forward(self.teacher, plain)
        loss_cons = cosine_consistency(student_logits, teacher_logits)

        w_cons = consistency_weight(epoch, self.burn_in_epochs, self.num_epochs, self.w_cons)
        loss = loss_class + w_cons * loss_cons
        values = losses_to_floats(iteration, {"loss": loss, "loss_class": loss_class, "loss_cons": loss_cons})
        self.precision.backward(loss)
        self.precision.step(self.optimizer)
        update_ema(self.teacher, self.student_params, ema_alpha(iteration + 1, self.ema_decay))

        values["w_cons"] = w_cons
        values["acc"] = recall_accuracy(probs.detach(), targets)[0]
        values["acc_mt"] = recall_accuracy(probs_mt, targets)[0]
        self.meters.add(values)
        return values

    def end_epoch(self, epoch):
        """The epoch's means (and its consistency weight and learning rate); resets the meters."""
        means = self.meters.means()
        self.meters.reset()
        summary = {f"epoch_{k}": round(v, 6) for k, v in means.items()}
        summary["w_cons"] = consistency_weight(epoch, self.burn_in_epochs, self.num_epochs, self.w_cons)
        summary["lr"] = self.optimizer.param_groups[0]["lr"]
        return summary


# ---------------------------------------------------------------- data
def load_split(args, env, split, say=print, everywhere=True):
    """One split's ImageLabels from --data-layout: the original's files, or derived from the
    label PNGs of --dataset: by the main process, then shared with the others (`everywhere`: every
    process calls this; else only the main process does)."""
    if args.data_layout == "original":
        return read_original_split(args.data_dir, split, args.num_classes)
    spec = get_dataset(args.dataset)
    view = _dataset_flags(args, split)
    dataset = (spec.build_train if split == "train" else spec.build_val)(view)
    label_paths = [dataset.label_path(name) for name in dataset.ids]
    labels = None
    if env.is_main or not everywhere:
        cache = cache_path_for(dataset, default_list_candidates(args.data_dir, view.data_list, split, dataset),
                               args.data_dir, split)
        labels = derive_labels(dataset.ids, label_paths, args.num_classes, args.ignore_label,
                               ALWAYS_PRESENT.get(args.dataset, ()), cache, args.num_workers, say)
    if everywhere:
        labels = broadcast_object(env, labels)
    return ImageLabels(dataset.ids, [dataset.image_path(name) for name in dataset.ids], labels,
                       f"the label PNGs of {args.dataset}")


def _dataset_flags(args, split):
    """The flags a registry dataset's builders read, for listing its images and labels only."""
    view = type(args)(**vars(args))
    view.data_list = args.data_list if split == "train" else args.val_list
    view.input_size, view.random_scale, view.random_mirror = (321, 321), False, False
    return view


def labeled_permutation(args, num_images, saved=None):
    """The permutation whose first int(ratio * N) entries are labeled: the segmentation trainers'
    rule (data.splits), so that --pkl-file <their train_voc_split.pkl> labels the same images."""
    if saved is not None:
        return np.asarray(saved, np.int64)
    if args.pkl_file is None:
        return seeded_permutation(num_images, args.random_seed)
    if not os.path.isfile(args.pkl_file):
        raise UserError(f"--pkl-file {args.pkl_file} does not exist: train_s4GAN.py writes it, as "
                        f"<its --checkpoint-dir>/train_voc_split.pkl (run it first, so that both branches label "
                        f"the same images), or pass a split file of splits/ (e.g. splits/voc/seeded_0.pkl, the "
                        f"one you gave train_s4GAN.py --split-id), or --pkl-file none (seeded by --random-seed)")
    return load_permutation(args.pkl_file, num_images, "--pkl-file")


def make_data(args, env, saved_split=None, say=print):
    """For TrainingRun(data=...): the training split, its permutation and the two streams
    (labeled: --batch-size-lab plain views; unlabeled: --batch-size-unlab view pairs)."""
    train = load_split(args, env, "train", say)
    perm = labeled_permutation(args, len(train), saved_split)
    labeled, unlabeled = split_indices(perm, args.labeled_ratio)
    note = ""
    if len(unlabeled) == 0:
        unlabeled, note = labeled, " (every image is labeled: the unlabeled stream reuses them)"
    if env.is_main:
        say(f"training images: {len(labeled)} labeled, {len(unlabeled)} unlabeled{note}; labels from {train.source}")
        absent = missing_classes(train.labels, labeled)
        if absent:
            names = get_dataset(args.dataset).class_names(args.num_classes, args.data_dir)
            warn(env, f"no labeled image contains {', '.join(repr(names[c]) for c in absent)}: the classifier learns "
                      f"to call {'it' if len(absent) == 1 else 'them'} absent, and --with-mlmt fusion then removes "
                      f"{'it' if len(absent) == 1 else 'them'} from every segmentation")
    pin = env.device.type == "cuda"
    streams = {}
    for name, pool, batch_size in (("labeled", labeled, args.batch_size_lab),
                                   ("unlabeled", unlabeled, args.batch_size_unlab)):
        sampler = SeededEpochSampler(pool, args.random_seed, STREAM_IDS[name], env.rank, env.world_size)
        streams[name] = BatchStream(ClassifierImages(train, name, args.image_size), sampler, batch_size,
                                    args.num_workers, pin_memory=pin, worker_init_fn=init_worker)
    return streams["labeled"].loader.dataset, perm, streams


def epoch_length(stream):
    """Batches per epoch of a stream on this process (the last one may be partial)."""
    per_process = -(-len(stream.sampler.indices) // stream.sampler.world_size)
    return -(-per_process // stream.batch_size)


# ---------------------------------------------------------------- models
def imagenet_trunk(args, env):
    """--pretrained's trunk weights, or None (random initialisation; a missing file is warned about)."""
    if args.pretrained.lower() == "none":
        return None
    state = read_imagenet_weights(args.pretrained, args.backbone)
    if state is None:
        name = IMAGENET_FILES[args.backbone]
        warn(env, f"--pretrained {args.pretrained} does not exist: student and teacher start from RANDOM "
                  f"initialisation, not ImageNet as in the paper (download {TORCHVISION_URL.format(name)} "
                  f"there, or pass --pretrained none to say that random is what you want)")
    return state


def classifier(args, device, trunk=None, teacher=False):
    """A ResNet classifier with --num-classes outputs in train mode (student and teacher both stay in
    train mode, as in the original). The teacher is built on its own (its head has its own random
    init, which the EMA washes out) and its parameters never get a gradient."""
    model = build_classifier(args.backbone, args.num_classes)
    if trunk is not None:
        load_trunk(model, trunk)
    model = model.to(device).train()
    if teacher:
        for p in model.parameters():
            p.requires_grad_(False)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
    return model


# ---------------------------------------------------------------- validation and the output files
@torch.no_grad()
def predict(model, loader, device, precision, channels_last=False):
    """Sigmoid outputs (N, C) float32, in unit order, over the loader, in eval mode."""
    was_training = model.training
    model.eval()
    outputs = []
    for images, _, _ in loader:
        images = normalize_images(images_to_device(images, device, channels_last))
        with precision.autocast():
            logits = model(images)
        outputs.append(torch.sigmoid(logits.float()).cpu())
    model.train(was_training)
    return torch.cat(outputs).numpy()


class Validator:
    """Every --evaluation-epochs epochs: both networks over the validation list; writes the output
    files and returns the accuracy and mean AP of each with a per-class AP table. Main process only."""

    def __init__(self, args, env, precision, say=print):
        self.args, self.env, self.precision = args, env, precision
        self.enabled = env.is_main
        if not self.enabled:
            return
        self.split = load_split(args, env, "val", say, everywhere=False)
        images = ClassifierImages(self.split, "val", args.image_size)
        self.loader = DataLoader(images, batch_size=args.batch_size_val, shuffle=False,
                                 num_workers=2 * args.num_workers, pin_memory=env.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(args.random_seed), worker_init_fn=init_worker)
        self.names = get_dataset(args.dataset).class_names(args.num_classes, args.data_dir)
        say(f"validation images: {len(self.split)}, labels from {self.split.source}")
        absent = missing_classes(self.split.labels)
        if absent:
            say(f"note: no validation image contains {', '.join(self.names[c] for c in absent)}: "
                f"no AP for {'it' if len(absent) == 1 else 'them'}")

    def __call__(self, epoch, models):
        """models: {"val": student, "ema": teacher} (file tags of the original). -> (values, text)."""
        if not self.enabled:
            return {}, ""
        values, aps, written = {}, {}, []
        for tag, model in models.items():
            probs = predict(model, self.loader, self.env.device, self.precision, self.args.channels_last)
            table = reorder_output(probs, self.args.output_roll, self.args.batch_size_val)
            written.append(write_outputs(self.args.output_dir, tag, epoch, table))
            probs = from_unit_order(probs)
            aps[tag] = average_precision(probs, self.split.labels)
            values[f"{tag}_acc"] = round(recall_accuracy(probs, self.split.labels)[0], 4)
            values[f"{tag}_mAP"] = round(100 * float(np.nanmean(aps[tag])), 4) if np.isfinite(aps[tag]).any() \
                else float("nan")
        return values, self._table(epoch, values, aps, written)

    def _table(self, epoch, values, aps, written):
        tags = list(aps)
        title = {"val": "student", "ema": "teacher"}
        lines = [f"epoch {epoch} validation, {len(self.split)} images: " + "  |  ".join(
            f"{title.get(t, t)}: avg acc {values[f'{t}_acc']:.2f}%  mAP {values[f'{t}_mAP']:.2f}" for t in tags),
            "  AP (%)" + " " * 18 + "".join(f"{title.get(t, t):>10}" for t in tags)]
        for c, name in enumerate(self.names):
            cells = "".join(f"{'-':>10}" if np.isnan(aps[t][c]) else f"{100 * aps[t][c]:10.2f}" for t in tags)
            lines.append(f"  {c:3d} {name:<20.20}{cells}")
        lines.append(f"  {'mean AP':<24}" + "".join(f"{values[f'{t}_mAP']:10.2f}" for t in tags))
        lines.append("  wrote " + ", ".join(written) + " (+ _bin_)")
        return "\n".join(lines)
