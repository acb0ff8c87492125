"""How an evaluation image's logits are computed (`--eval-mode`).

`original` (the default): the image as the dataset gives it (VOC: padded to 505x505), one forward
pass; the original's protocol, unchanged. The other modes, today's protocols, work on each image's
own region (the dataset's padding removed) and give logits at the image's resolution, which the
evaluator then scores as in `original`:
- `whole`: the region padded at the bottom and right with zeros (the normalised mean) to a multiple
  of 32 (the largest stride of the trunks here), one forward pass, the logits upsampled to the padded
  size and cut back to the region;
- `center-crop`: only the central `window` of the region is predicted, and only it is scored;
- `sliding`: windows of `window` every `stride` pixels over the region (padded up to one window where
  it is smaller; the last window of a row or column flush with the edge), each window's logits
  upsampled to the window, overlapping windows averaged.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from utils.tensors import upsample

MODES = ("original", "whole", "center-crop", "sliding")
MULTIPLE = 32


@dataclass(frozen=True)
class EvalMode:
    mode: str = "original"
    window: Optional[Tuple[int, int]] = None  # center-crop and sliding: (H, W)
    stride: Optional[Tuple[int, int]] = None  # sliding: (H, W) between window origins


def _forward(model, images, precision, channels_last):
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if precision is None:
        return model(images).float()
    with precision.autocast():
        return model(images).float()


def _padded_logits(model, region, size, precision, channels_last):
    """Logits (C, h, w) of `region` (3, h, w), padded with zeros to `size` (>= h, w) for the pass."""
    h, w = region.shape[1:]
    padded = F.pad(region, (0, size[1] - w, 0, size[0] - h))
    logits = _forward(model, padded[None], precision, channels_last)
    return upsample(logits, size)[0, :, :h, :w]


def _starts(length, window, stride):
    last = max(length - window, 0)
    return sorted(set(list(range(0, last, stride)) + [last]))


def region_logits(model, region, mode, precision=None, channels_last=False):
    """(logits (C, h, w), scored mask (h, w) or None) of one image region (3, h, w) under `mode`."""
    h, w = region.shape[1:]
    if mode.mode == "whole":
        size = (-(-h // MULTIPLE) * MULTIPLE, -(-w // MULTIPLE) * MULTIPLE)
        return _padded_logits(model, region, size, precision, channels_last), None
    wh, ww = mode.window
    if mode.mode == "center-crop":
        ch, cw = min(wh, h), min(ww, w)
        top, left = (h - ch) // 2, (w - cw) // 2
        crop_logits = _padded_logits(model, region[:, top:top + ch, left:left + cw], (ch, cw), precision,
                                     channels_last)
        logits = crop_logits.new_zeros((crop_logits.shape[0], h, w))
        logits[:, top:top + ch, left:left + cw] = crop_logits
        mask = torch.zeros((h, w), dtype=torch.bool, device=region.device)
        mask[top:top + ch, left:left + cw] = True
        return logits, mask
    if mode.mode != "sliding":
        raise ValueError(f"unknown evaluation mode {mode.mode!r}")
    ph, pw = max(h, wh), max(w, ww)
    padded = F.pad(region, (0, pw - w, 0, ph - h))
    total, count = None, torch.zeros((ph, pw), device=region.device)
    for top in _starts(ph, wh, mode.stride[0]):
        for left in _starts(pw, ww, mode.stride[1]):
            window = padded[None, :, top:top + wh, left:left + ww]
            logits = upsample(_forward(model, window, precision, channels_last), (wh, ww))[0]
            if total is None:
                total = logits.new_zeros((logits.shape[0], ph, pw))
            total[:, top:top + wh, left:left + ww] += logits
            count[top:top + wh, left:left + ww] += 1
    return (total / count)[:, :h, :w], None


def canvas_logits(model, images, regions, mode, precision=None, channels_last=False):
    """Logits (B, C, H, W) on the images' canvas (the dataset's padded size), each image's region
    [h, w] filled by `region_logits`, and the scored masks (B, H, W) (None: the whole region)."""
    logits, masks = [], []
    for image, (h, w) in zip(images, regions.tolist()):
        region, mask = region_logits(model, image[:, :h, :w], mode, precision, channels_last)
        canvas = region.new_zeros((region.shape[0], *image.shape[1:]))
        canvas[:, :h, :w] = region
        logits.append(canvas)
        if mask is not None:
            masks.append(F.pad(mask, (0, image.shape[2] - w, 0, image.shape[1] - h)))
    return torch.stack(logits), (torch.stack(masks) if masks else None)
