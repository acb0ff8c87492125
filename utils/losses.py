"""Loss terms of the s4GAN objective (spec section 4.2)."""
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


def feature_matching_loss(features_real, features_fake):
    """L1 distance (mean over channels) between the batch means of D's pooled features."""
    return (features_real.float().mean(0) - features_fake.float().mean(0)).abs().mean()


def self_training_loss(logits, d_prob, threshold):
    """Self-training on images whose D score is strictly above `threshold`.

    Each selected image is trained towards the argmax of its own logits (whole map, no pixel mask);
    the loss is the mean CE over the selected images' pixels, and 0 when none is selected.
    Returns (loss, number of selected images as a 0-d tensor). No host synchronisation.
    """
    selected = d_prob.reshape(-1) > threshold
    logits = logits.float()
    pseudo = logits.detach().argmax(1)
    per_pixel = F.cross_entropy(logits, pseudo, reduction="none")  # (B, H, W)
    weight = selected.to(per_pixel.dtype)[:, None, None]
    count = selected.sum()
    loss = (per_pixel * weight).sum() / (count * per_pixel[0].numel()).clamp(min=1)
    return loss, count


def one_hot(labels, num_classes):
    """(B,H,W) class indices -> (B,C,H,W) float one-hot; labels outside [0, C) give all-zero vectors."""
    valid = (labels >= 0) & (labels < num_classes)
    index = torch.where(valid, labels, torch.zeros_like(labels))
    out = torch.zeros(labels.shape[0], num_classes, *labels.shape[1:], device=labels.device)
    out.scatter_(1, index.unsqueeze(1), valid.unsqueeze(1).float())
    return out


def bce_on_probabilities(prob, target_value):
    """nn.BCELoss on D's sigmoid output against a constant target, always in float32.

    A NaN probability gives a NaN loss (for the caller's check) instead of BCE's range error."""
    prob = prob.float()
    finite = torch.isfinite(prob)
    safe = torch.where(finite, prob, torch.full_like(prob, 0.5))
    with torch.autocast(device_type=prob.device.type, enabled=False):
        loss = F.binary_cross_entropy(safe, torch.full_like(prob, float(target_value)))
    return torch.where(finite.all(), loss, torch.full_like(loss, float("nan")))
