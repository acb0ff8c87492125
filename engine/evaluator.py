"""Single-scale evaluation with the original's protocol (docs/original.md, "Evaluation"): the dataset
gives each image at its evaluation size (VOC: padded to 505x505) with its labels at the resolution
that is scored; the logits are upsampled bilinearly (align_corners=True) to the labels' size, the
padding is cut off, and the argmax is scored (label values outside [0, C) are not counted)."""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from data import display_pair, get_dataset, supports_uint8_eval
from engine.eval_modes import canvas_logits
from utils.distributed import bare
from utils.metrics import confusion_matrix
from utils.tensors import upsample
from utils.visualize import colorize, montage, overlay


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
    if supports_uint8_eval(base):
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
             on_prediction=None, mode=None):
    """Confusion matrix (C x C, rows = ground truth) over the loader, accumulated on `device`; `mode`:
    an EvalMode (engine/eval_modes.py), None for the original's protocol."""
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
            inside = None
            if mode is not None and mode.mode != "original":
                regions = image_regions(sizes, images.shape[-2:], labels.shape[-2:])
                logits, inside = canvas_logits(model, images, regions, mode, precision, channels_last)
                if inside is not None:  # center-crop: only the predicted window is scored
                    inside = F.interpolate(inside[:, None].float(), size=labels.shape[-2:], mode="nearest")[:, 0] > 0
            else:
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
            scored_region = within_sizes(sizes, *pred.shape[1:])  # padding is not scored
            if inside is not None:
                scored_region &= inside
            scored = torch.where(scored_region, labels, -1)
            confusion += confusion_matrix(scored, pred, num_classes)
            if on_prediction is not None:
                pred_cpu, sizes_cpu = pred.cpu().numpy(), sizes.cpu().numpy()
                for k, name in enumerate(names):
                    h, w = sizes_cpu[k]
                    on_prediction(int(indices[k]), name, pred_cpu[k, :h, :w])
    return confusion.cpu()


def image_regions(sizes, image_size, label_size):
    """Each image's region (h, w) on its canvas, from the scored sizes at the labels' resolution."""
    scale = torch.tensor([image_size[0] / label_size[0], image_size[1] / label_size[1]], device=sizes.device)
    return torch.round(sizes * scale).long()


def montage_of_predictions(dataset, palette, predictions):
    """Rows of image | ground truth | prediction over the image, for (dataset index, prediction) pairs."""
    rows = []
    for index, prediction in predictions:
        image, truth = display_pair(dataset, index)
        rows.append([image, colorize(truth, palette), overlay(image, prediction, palette)])
    return montage(rows, ["image", "ground truth", "prediction"], nearest_columns=(1,))


def validation_dataset(data):
    """The evaluation set of a DataConfig: its dataset's protocol on its list (None: the validation split)."""
    return get_dataset(data.dataset).build_val(data)


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
