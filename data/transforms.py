"""Image and label reading and the VOC-style joint transforms (docs/original.md, "PASCAL VOC"), on numpy arrays."""

import cv2
import numpy as np
from PIL import Image

from utils.errors import UserError

# Reading a truncated JPEG, OpenCV fills the missing part with grey and only warns; a complete
# JPEG ends with the EOI marker, so look for it near the end of the file.
_JPEG_EOI = b"\xff\xd9"


def read_image_bgr(path):
    """Read an image with OpenCV as BGR uint8 (H, W, 3); a clear error if missing or corrupt."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UserError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if path.lower().endswith((".jpg", ".jpeg")) and _JPEG_EOI not in data[-1024:]:
        raise UserError(f"image {path} is truncated or not a JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot decode image {path} (corrupt or not an image)")
    return image


def read_label(path):
    """Read a label PNG as class indices (H, W) int64.

    Single-channel index PNGs (SegmentationClassAug) and palette PNGs (VOC SegmentationClass) both
    store the class index per pixel; it is read as is, never converted to luminance.
    """
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise UserError(f"label {path} has mode {img.mode}: expected a single-channel "
                                f"index PNG or a palette PNG")
            label = np.array(img)
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"label {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read label {path} (corrupt or truncated: {exc})") from None
    return label.astype(np.int64)


def check_label_values(label, num_classes, ignore_label, path):
    bad = (label < 0) | ((label >= num_classes) & (label != ignore_label))
    if bad.any():
        values = np.unique(label[bad])[:5].tolist()
        raise UserError(f"label {path} has values {values} outside [0, {num_classes}) that are not "
                        f"the ignore label {ignore_label} (check --num-classes)")


def compact_label(label):
    """An evaluation label as uint8 when its values allow (a quarter of int64's bytes to move to the
    GPU); the evaluator widens it again."""
    return label.astype(np.uint8) if label.size and 0 <= label.min() and label.max() <= 255 else label


def random_scale(image, label, rng):
    """One factor from {0.5, 0.6, ..., 1.6}: bilinear for the image, nearest for the label."""
    f = 0.5 + rng.integers(0, 12) / 10.0
    image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label.astype(np.int32), None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    return image, label.astype(np.int64)


def pad_bottom_right(image, label, height, width, label_value):
    """Pad to at least (height, width): image with 0 (after mean subtraction: the mean colour)."""
    h, w = label.shape
    ph, pw = max(height - h, 0), max(width - w, 0)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0.0)
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=label_value)
    return image, label


def random_crop(image, label, height, width, rng):
    h, w = label.shape
    top = int(rng.integers(0, h - height + 1))
    left = int(rng.integers(0, w - width + 1))
    return image[top:top + height, left:left + width], label[top:top + height, left:left + width]




# PASCAL-Context images are normalised as tensors in [0, 1] (docs/original.md, "PASCAL-Context"). The original s4GAN trainer
# passes the ImageNet mean in reversed (BGR) order for RGB images; its train_full and the
# evaluation use the right order. The standard deviation is in RGB order everywhere.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def context_train_normalization(mode):
    """(mean, std) for Context training: mode 'reversed' (original s4GAN trainer) or 'rgb'."""
    if mode not in ("reversed", "rgb"):
        raise ValueError(f"unknown Context mean mode {mode!r}")
    mean = IMAGENET_MEAN_RGB[::-1] if mode == "reversed" else IMAGENET_MEAN_RGB
    return mean, IMAGENET_STD_RGB
