"""Small pieces shared by the training steps."""
import torch
import torch.nn.functional as F

from utils.errors import UserError


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


class NonFiniteLoss(UserError):
    pass


def losses_to_floats(iteration, losses):
    """One host sync per step: the loss values as floats; a NaN/Inf stops the run naming the term."""
    names = list(losses)
    values = torch.stack([losses[n].detach().float().reshape(()) for n in names]).tolist()
    for name, value in zip(names, values):
        if value != value or value in (float("inf"), float("-inf")):
            raise NonFiniteLoss(f"{name} is {value} at iteration {iteration}: stopping before this step "
                                f"is applied; checkpoints already written are kept (try a lower learning rate)")
    return dict(zip(names, values))
