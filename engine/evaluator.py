"""Single-scale evaluation with the original's protocol (docs/original.md, "Evaluation"): the dataset
gives each image at its evaluation size (VOC: padded to 505x505) with its labels at the resolution
that is scored; the logits are upsampled bilinearly (align_corners=True) to the labels' size, the
padding is cut off, and the argmax is scored (label values outside [0, C) are not counted)."""
import argparse
import json
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from data import get_dataset
from utils.tensors import upsample
from model import canonical_model_name
from utils.checkpoint import atomic_write_bytes
from utils.distributed import bare
from utils.errors import UserError
from utils.metrics import confusion_matrix, format_iou_table, mean_iou
from utils.seeding import init_worker
from utils.visualize import colorize, montage, overlay

MLMT_THRESHOLD = 0.2  # MLMT probabilities >= 0.2 mean "class present", as the original


def adopt_training_flags(checkpoint, args):
    """Read the args.json that this project's trainers write beside their checkpoints: --model,
    --backbone and --num-classes not given are taken from it, and every model flag given must agree
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
    for name in ("model", "backbone", "aspp_branches", "num_classes", "wrn_width_mult"):
        if name in trained and trained[name] != getattr(args, name):
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {getattr(args, name)} but the run that wrote {checkpoint} used "
                            f"{flag} {trained[name]} ({path}); pass {flag} {trained[name]}")


def eval_collate(samples):
    """Batch samples by padded size: a list of (images, labels, sizes, names, indices) groups, so that
    images of different sizes are never padded further (results equal batch-1 evaluation)."""
    groups = {}
    for sample in samples:
        groups.setdefault(sample[0].shape, []).append(sample)
    out = []
    for members in groups.values():
        images, labels, sizes, names, indices = zip(*members)
        out.append((torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels)),
                    torch.from_numpy(np.stack(sizes)), list(names), torch.as_tensor(indices)))
    return out


class MLMTFusion:
    """Class-presence gating from the MLMT branch (`--with-mlmt`).

    multiply (original): the upsampled raw logits of absent classes are multiplied by 0, so an
    'absent' class can still win where every remaining logit is negative; mask: set to -inf.
    """

    def __init__(self, path, num_images, num_classes, mode="multiply"):
        try:
            table = np.loadtxt(path, ndmin=2)
        except OSError:
            raise UserError(f"--mlmt-file {path} does not exist: give an output_ema_raw_<epoch>.txt that "
                            f"train_mlmt.py wrote (in ./mlmt_output/<exp-name>/)") from None
        except ValueError as exc:
            raise UserError(f"--mlmt-file {path} is not a table of numbers ({exc})") from None
        if table.shape[0] != num_images or table.shape[1] < num_classes:
            raise UserError(f"--mlmt-file {path} has {table.shape[0]} rows x {table.shape[1]} columns; "
                            f"expected one row per image of the list ({num_images}) and {num_classes} columns")
        self.present = torch.from_numpy(table[:, :num_classes] >= MLMT_THRESHOLD)
        self.mode = mode

    def __call__(self, logits, indices):
        present = self.present[indices.cpu()].to(logits.device)[:, :, None, None]
        if self.mode == "multiply":
            return logits * present.to(logits.dtype)
        return logits.masked_fill(~present, float("-inf"))


def within_sizes(sizes, height, width):
    """(B, height, width) bool: True inside each image's (h, w) = sizes[b], False in its padding."""
    rows = torch.arange(height, device=sizes.device)[None, :, None] < sizes[:, 0, None, None]
    return rows & (torch.arange(width, device=sizes.device)[None, None, :] < sizes[:, 1, None, None])


def base_dataset(dataset):
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def uint8_batches(dataset):
    """Let the evaluation dataset give uint8 images (a quarter of float32's bytes to pin and copy),
    which evaluate() normalises on the device to the same floats; datasets without the tables keep
    their float items. Returns the dataset."""
    base = base_dataset(dataset)
    if hasattr(base, "normalization_tables"):
        base.uint8_eval = True
    return dataset


class DeviceNormalizer:
    """uint8 RGB batches (B, H, W, 3) -> the dataset's float32 images (B, 3, H, W): a look-up in the
    dataset's per-channel tables (the very floats its float items hold: no arithmetic on the device),
    and the padding outside each image's `size` set to the dataset's padding value. The result has
    channels-last strides (the look-up's natural layout)."""

    def __init__(self, dataset, device):
        tables, sources, self.pad = base_dataset(dataset).normalization_tables()
        self.table = torch.from_numpy(np.ascontiguousarray(tables, np.float32)).reshape(-1).to(device)
        self.sources = list(sources)
        self.offsets = torch.arange(3, device=device) * 256

    def __call__(self, images, sizes):
        out = self.table[images[..., self.sources].long() + self.offsets]
        inside = within_sizes(sizes, *out.shape[1:3])
        return out.masked_fill(~inside[..., None], self.pad).permute(0, 3, 1, 2)  # VOC: its padding to 505x505


@torch.no_grad()
def evaluate(model, loader, num_classes, device, precision=None, channels_last=False, fusion=None,
             on_prediction=None):
    """Confusion matrix (C x C, rows = ground truth) over the loader, accumulated on `device`."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    normalizer = None
    for groups in loader:
        for images, labels, sizes, names, indices in groups:
            images = images.to(device, non_blocking=True)
            sizes = sizes.to(device)
            if images.dtype == torch.uint8:
                normalizer = normalizer or DeviceNormalizer(loader.dataset, device)
                images = normalizer(images, sizes)
                if not channels_last:
                    images = images.contiguous()
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if precision is not None:
                with precision.autocast():
                    logits = model(images)
            else:
                logits = model(images)
            logits = upsample(logits.float(), labels.shape[-2:])
            if fusion is not None:
                logits = fusion(logits, indices)
            pred = logits.argmax(1)
            labels = labels.to(device, non_blocking=True).long()
            scored = torch.where(within_sizes(sizes, *pred.shape[1:]), labels, -1)  # padding is not scored
            confusion += confusion_matrix(scored, pred, num_classes)
            if on_prediction is not None:
                pred_cpu, sizes_cpu = pred.cpu().numpy(), sizes.cpu().numpy()
                for k, name in enumerate(names):
                    h, w = sizes_cpu[k]
                    on_prediction(int(indices[k]), name, pred_cpu[k, :h, :w])
    return confusion.cpu()


class Validator:
    """Validation during training: the dataset's evaluation protocol on its validation list (`--val-list`,
    default the dataset's), on the images `images(count)` chooses (default: all). Every process
    validates the same images, so all get the same number; the model goes back to train mode
    afterwards. The loader draws from its own generator, never from the global one that dropout
    uses: validating does not change the training's random numbers."""

    def __init__(self, args, env, precision, images=None):
        spec = get_dataset(args.dataset)
        self.dataset = uint8_batches(validation_dataset(args))
        if images is not None:
            self.dataset = Subset(self.dataset, images(len(self.dataset)))
        # the training's worker set-up: a stop signal to the job leaves the decision to the main process
        self.loader = DataLoader(self.dataset, batch_size=1, num_workers=args.num_workers, collate_fn=eval_collate,
                                 pin_memory=env.device.type == "cuda", generator=torch.Generator(),
                                 worker_init_fn=init_worker)
        self.num_classes, self.device, self.precision = args.num_classes, env.device, precision
        self.channels_last = args.channels_last
        self.class_names = spec.class_names(args.num_classes, args.data_dir)

    def __call__(self, model):
        confusion = evaluate(model, self.loader, self.num_classes, self.device, self.precision, self.channels_last)
        model.train()
        return confusion

    @staticmethod
    def miou(confusion):
        return mean_iou(confusion)

    def write_result(self, confusion, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write_bytes(path, ("\n".join(format_iou_table(confusion, self.class_names)) + "\n").encode())


def montage_of_predictions(dataset, palette, predictions):
    """Rows of image | ground truth | prediction over the image, for (dataset index, prediction) pairs."""
    rows = []
    for index, prediction in predictions:
        image, truth = dataset.display(index)
        rows.append([image, colorize(truth, palette), overlay(image, prediction, palette)])
    return montage(rows, ["image", "ground truth", "prediction"], nearest_columns=(1,))


def validation_dataset(args):
    """The dataset's evaluation set for --val-list (default: its validation split)."""
    return get_dataset(args.dataset).build_val(argparse.Namespace(**{**vars(args), "data_list": args.val_list}))


@torch.no_grad()
def prediction_montage(model, dataset, palette, device, count=4):
    """The montage of the first `count` images of `dataset`, predicted by `model` (put back in train
    mode afterwards)."""
    model = bare(model)
    predictions = []
    for collated in DataLoader(Subset(dataset, range(min(count, len(dataset)))), batch_size=1, collate_fn=eval_collate,
                               generator=torch.Generator()):  # not the global generator: dropout's
        for images, labels, sizes, names, indices in collated:
            model.eval()
            logits = upsample(model(images.to(device)).float(), labels.shape[-2:])
            h, w = sizes[0].tolist()
            predictions.append((int(indices[0]), logits.argmax(1)[0, :h, :w].cpu().numpy()))
    model.train()
    return montage_of_predictions(dataset, palette, predictions)
