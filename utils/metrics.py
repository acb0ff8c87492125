"""Confusion matrix and IoU exactly as the original's current formula (docs/original.md, "Evaluation")."""
import torch


def confusion_matrix(gt, pred, num_classes):
    """C x C counts, rows = ground truth, columns = prediction; gt outside [0, C) is not counted.

    Works on any device with bincount (no per-pixel Python loop). Returns int64.
    """
    gt = gt.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = (gt >= 0) & (gt < num_classes)
    codes = torch.where(keep, gt * num_classes + pred, num_classes * num_classes)  # extra bin: not counted
    counts = torch.bincount(codes, minlength=num_classes * num_classes + 1)[:-1]
    return counts.reshape(num_classes, num_classes)


def class_iou(confusion):
    """Per-class IoU = TP / (row + column - TP); NaN for a class never seen nor predicted."""
    m = torch.as_tensor(confusion, dtype=torch.float64)
    tp = m.diag()
    union = m.sum(0) + m.sum(1) - tp
    return tp / union  # 0/0 -> nan


def mean_iou(confusion):
    """The original's mIoU: sum of IoU over classes with true positives, divided by C."""
    m = torch.as_tensor(confusion, dtype=torch.float64)
    iou = class_iou(m)
    hit = m.diag() != 0
    return float(iou[hit].sum() / m.shape[0])


def format_iou_table(confusion, class_names):
    """Lines of `class  i name  IoU`, one per class (aligned with the class index), then `meanIOU:`."""
    iou = class_iou(confusion)
    lines = []
    for i, name in enumerate(class_names):
        value = iou[i].item()
        lines.append(f"class {i:2d} {name:14s} IU {value:.4f}" if value == value else f"class {i:2d} {name:14s} IU n/a")
    lines.append(f"meanIOU: {mean_iou(confusion)}")
    return lines
