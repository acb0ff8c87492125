"""MLMT's two views of an unlabeled batch made on the training device (`train_mlmt.py
--augment-on-device`), from the resized uint8 images and each item's draws (methods.mlmt.labels.view_draws,
the same random numbers the CPU pipeline draws for that item).

The CPU pipeline applies torchvision's PIL operations, each rounding to uint8; here the same
operations act on float tensors of values 0..255 and round after each one as PIL does, with the
same factors, order and flips. What is not promised is equality with PIL: its grey levels are
integer ITU-R 601-2 sums, its hue a byte in its own HSV, its Gaussian blur three box blurs; here
they are computed in float32 (hue exactly, the blur as a 13-tap Gaussian of standard deviation the
radius). The student views differ from the CPU ones by one or two grey levels on average (tested;
the teacher views, flips only, are the same); the distribution of the augmentation is the same.
The batch-level work replaces about 6 ms of PIL per image in the loader workers.
"""
import torch

from methods.mlmt.labels import JITTER_ORDER

GREY = (0.299, 0.587, 0.114)  # PIL's "L" conversion
BLUR_TAPS = 6  # each side: 3 x the largest radius (2.0)


def quantize(x):
    return x.round().clamp(0.0, 255.0)


def per_image(values):
    return values.view(-1, 1, 1, 1)


def grey(x):
    weights = torch.tensor(GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return quantize((x * weights).sum(1, keepdim=True))


def blend(image, degenerate, factor):
    """PIL's Image.blend(degenerate, image, factor), as ImageEnhance uses it."""
    return quantize(degenerate + factor * (image - degenerate))


def adjust_brightness(x, factor):
    return blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x, factor):
    mean = torch.floor(grey(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    return blend(x, mean.expand_as(x), factor)


def adjust_saturation(x, factor):
    return blend(x, grey(x).expand_as(x), factor)


def adjust_hue(x, shift):
    """Rotate the hue by `shift` turns (per image), keeping saturation and value (HSV)."""
    r, g, b = x.unbind(1)
    value, _ = x.max(1)
    chroma = value - x.min(1)[0]
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(value == r, ((g - b) / safe) % 6,
                      torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    hue = (hue + shift.view(-1, 1, 1)) % 1.0
    n = 5 - 2 * torch.arange(3, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # R, G, B
    k = (n + hue[:, None] * 6) % 6
    # the standard HSV -> RGB: v - c * clamp(min(k, 4 - k), 0, 1) for k = (n + 6h) mod 6, n = 5, 3, 1
    return quantize(value[:, None] - chroma[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1))


ADJUST = {"brightness": adjust_brightness, "contrast": adjust_contrast, "saturation": adjust_saturation,
          "hue": lambda x, shift: adjust_hue(x, shift.view(-1))}


def color_jitter(x, draws):
    """Each image's four adjustments, in its own order: at each of the four positions every
    adjustment is computed for the batch and kept for the images that have it there."""
    order = draws[:, 5:9].long()
    for position in range(len(JITTER_ORDER)):
        for k, name in enumerate(JITTER_ORDER):
            chosen = per_image(order[:, position] == k)
            x = torch.where(chosen, ADJUST[name](x, per_image(draws[:, 1 + k])), x)
    return x


def flip(x, flags):
    return torch.where(per_image(flags > 0.5), x.flip(-1), x)


def gaussian_blur(x, radius):
    """Separable Gaussian of standard deviation `radius` (per image), edges repeated."""
    offsets = torch.arange(-BLUR_TAPS, BLUR_TAPS + 1, device=x.device, dtype=x.dtype)
    weights = torch.exp(-offsets[None, :] ** 2 / (2 * radius[:, None] ** 2))
    weights = weights / weights.sum(1, keepdim=True)  # (B, taps)
    for dim in (-1, -2):
        size = x.shape[dim]
        padded = torch.cat([x.narrow(dim, 0, 1).expand_as(x.narrow(dim, 0, BLUR_TAPS)), x,
                            x.narrow(dim, size - 1, 1).expand_as(x.narrow(dim, 0, BLUR_TAPS))], dim)
        out = torch.zeros_like(x)
        for tap in range(2 * BLUR_TAPS + 1):
            out += per_image(weights[:, tap]) * padded.narrow(dim, tap, size)
        x = out
    return quantize(x)


@torch.no_grad()
def unlabeled_views(images, draws):
    """uint8 (B, 3, H, W) resized images and their (B, 11) draws, on one device -> (teacher view,
    student view), uint8 (B, 3, H, W) each."""
    draws = draws.to(torch.float32)
    x = images.float()
    teacher = flip(x, draws[:, 0])
    student = gaussian_blur(flip(color_jitter(x, draws), draws[:, 9]), draws[:, 10])
    return teacher.to(torch.uint8), student.to(torch.uint8)
