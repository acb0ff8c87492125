"""Tiny datasets in the real VOC on-disk layout, built by the tests themselves."""
import os

import cv2
import numpy as np
from PIL import Image

from data.classes import voc_palette


def write_label(path, label, palette=False):
    image = Image.fromarray(label.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        image.putpalette(voc_palette().flatten().tolist())
    image.save(path)


def make_voc(root, sizes_train=((60, 80), (75, 50), (48, 64), (90, 70), (64, 64), (50, 90)),
             sizes_val=((70, 60), (55, 85), (64, 48)), num_classes=21, palette=False, seed=0):
    """Write JPEGImages/, SegmentationClassAug/ and lists/{train_aug,val}.txt; return the root.

    Each image holds a few class rectangles outlined with 255 (void), like VOC's object borders;
    the colour of a rectangle depends on its class so that a model can learn something.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "SegmentationClassAug"), exist_ok=True)
    os.makedirs(os.path.join(root, "lists"), exist_ok=True)
    colours = rng.integers(0, 256, (num_classes, 3))
    for split, sizes in (("train_aug", sizes_train), ("val", sizes_val)):
        ids = []
        for k, (h, w) in enumerate(sizes):
            name = f"2007_{split}_{k:03d}"
            label = np.zeros((h, w), np.uint8)
            image = np.tile(colours[0], (h, w, 1)).astype(np.float64)
            for _ in range(2):
                c = int(rng.integers(1, num_classes))
                y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
                y1, x1 = y0 + int(rng.integers(8, h // 2)), x0 + int(rng.integers(8, w // 2))
                label[y0:y1, x0:x1] = 255
                label[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = c
                image[y0:y1, x0:x1] = colours[c]
            image += rng.normal(0, 10, image.shape)
            cv2.imwrite(os.path.join(root, "JPEGImages", name + ".jpg"), np.clip(image, 0, 255).astype(np.uint8))
            write_label(os.path.join(root, "SegmentationClassAug", name + ".png"), label, palette)
            ids.append(name)
        with open(os.path.join(root, "lists", f"{split}.txt"), "w") as f:
            f.writelines(i + "\n" for i in ids)
    return root
