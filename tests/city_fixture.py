"""Tiny Cityscapes datasets in both accepted on-disk layouts, built by the tests themselves."""
import os

import numpy as np
from PIL import Image

from data.cityscapes import VALID_LABEL_IDS, VOID_LABEL_IDS

# Every labelId an 8-bit labelIds PNG can hold for Cityscapes: 0..33 and 255 (the table's -1).
ALL_LABEL_BYTES = tuple(sorted({i % 256 for i in VALID_LABEL_IDS + VOID_LABEL_IDS}))
CITIES = {"train": {"aachen": 2, "bochum": 1}, "val": {"frankfurt": 2, "lindau": 1}}


def label_dir(root, layout, split):
    base = os.path.join(root, "gtFine_trainvaltest", "gtFine") if layout == "original" else os.path.join(root, "gtFine")
    return os.path.join(base, split)


def make_city(root, layout="original", size=(64, 128), cities=CITIES, seed=0):
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png and labelIds PNGs in the chosen layout.

    The first label of every split holds stripes of every labelId (valid, void and 255); the others
    random rectangles of labelIds. Returns the root."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, per_city in cities.items():
        first = True
        for city, count in per_city.items():
            os.makedirs(os.path.join(root, "leftImg8bit", split, city), exist_ok=True)
            os.makedirs(os.path.join(label_dir(root, layout, split), city), exist_ok=True)
            for k in range(count):
                frame = f"{city}_{k:06d}_000019"
                if first:
                    label = np.array(ALL_LABEL_BYTES, np.uint8)[np.arange(w) * len(ALL_LABEL_BYTES) // w]
                    label = np.tile(label, (h, 1))
                    first = False
                else:
                    label = np.full((h, w), 7, np.uint8)
                    for _ in range(4):
                        y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
                        label[y0:y0 + int(rng.integers(4, h // 2)), x0:x0 + int(rng.integers(4, w // 2))] = \
                            rng.choice(ALL_LABEL_BYTES)
                image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(image).save(os.path.join(root, "leftImg8bit", split, city, frame + "_leftImg8bit.png"))
                Image.fromarray(label).save(os.path.join(label_dir(root, layout, split), city,
                                                         frame + "_gtFine_labelIds.png"))
    return root
