"""MLMT's validation: every --evaluation-epochs epochs, student and teacher over the validation list,
their outputs written in the original's files (background first), accuracy and per-class AP."""
import io
import os

import numpy as np
import torch
from torch.utils.data import DataLoader

from data import get_dataset
from methods.mlmt.labels import ClassifierImages, from_unit_order, missing_classes, normalize_images
from methods.mlmt.data import load_split
from methods.mlmt.objective import BIN_THRESHOLD, recall_accuracy
from utils.checkpoint import atomic_write_bytes
from utils.seeding import init_worker
from utils.tensors import images_to_device


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


class MLMTValidator:
    """Every --evaluation-epochs epochs: both networks over the validation list; writes the output
    files and returns the accuracy and mean AP of each with a per-class AP table. Main process only."""

    def __init__(self, config, env, precision, say=print):
        self.config, self.env, self.precision = config, env, precision
        self.enabled = env.is_main
        if not self.enabled:
            return
        self.split = load_split(config, env, "val", say, everywhere=False)
        images = ClassifierImages(self.split, "val", config.image_size)
        self.loader = DataLoader(images, batch_size=config.batch_size_val, shuffle=False,
                                 num_workers=2 * config.num_workers, pin_memory=env.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(config.random_seed), worker_init_fn=init_worker)
        self.names = get_dataset(config.dataset).class_names(config.num_classes, config.data_dir)
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
            probs = predict(model, self.loader, self.env.device, self.precision, self.config.channels_last)
            table = reorder_output(probs, self.config.output_roll, self.config.batch_size_val)
            written.append(write_outputs(self.config.output_dir, tag, epoch, table))
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
