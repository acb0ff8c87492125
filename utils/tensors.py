"""Tensor helpers shared by the training steps and the evaluator."""
import torch
import torch.nn.functional as F


def upsample(logits, size):
    """Bilinear upsampling with align_corners=True, as every S output in the original."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def images_to_device(images, device, channels_last=False):
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def labels_to_device(labels, device):
    return labels.to(device, non_blocking=True).long()


def set_requires_grad(module, flag):
    for p in module.parameters():
        p.requires_grad_(flag)
