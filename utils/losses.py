"""Losses shared by every trainer (the s4GAN-specific terms are in methods/s4gan.py)."""
import torch
import torch.nn.functional as F


def masked_cross_entropy(logits, target, ignore_label):
    """Mean pixel cross-entropy over pixels whose label is >= 0 and != ignore_label.

    Returns 0 (with a gradient path) when no pixel is valid, where the original returned NaN.
    """
    valid = (target >= 0) & (target != ignore_label)
    target = torch.where(valid, target, torch.full_like(target, -100))
    total = F.cross_entropy(logits.float(), target, ignore_index=-100, reduction="sum")
    return total / valid.sum().clamp(min=1)


def one_hot(labels, num_classes):
    """(B,H,W) class indices -> (B,C,H,W) float one-hot; labels outside [0, C) give all-zero vectors."""
    valid = (labels >= 0) & (labels < num_classes)
    index = torch.where(valid, labels, torch.zeros_like(labels))
    out = torch.zeros(labels.shape[0], num_classes, *labels.shape[1:], device=labels.device)
    out.scatter_(1, index.unsqueeze(1), valid.unsqueeze(1).float())
    return out

