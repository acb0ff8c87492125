"""Class names and colour palettes."""
import numpy as np

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def voc_palette(n=256):
    """The PASCAL VOC bit-interleaved colour map, (n, 3) uint8; entry 255 is painted white here."""
    palette = np.zeros((n, 3), np.uint8)
    for index in range(n):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[index] = (r, g, b)
    if n > 255:
        palette[255] = (255, 255, 255)
    return palette


def generic_class_names(num_classes):
    return tuple(f"class_{i}" for i in range(num_classes))
