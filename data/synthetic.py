"""A procedurally generated segmentation dataset in the exact VOC layout (for the demo and benchmarks).

    python -m data.synthetic --out ./data/synthetic

Scenes of five object classes on smooth greyish backgrounds. A class is told by its shape, its
texture and (ambiguously) its colour: each class has its own hue, but the hue ranges of neighbouring
classes overlap. Objects vary in
scale and rotation and occlude each other; label PNGs are VOC palette PNGs with a 255 (void) band
along object boundaries, as VOC outlines its objects. Writes JPEGImages/, SegmentationClassAug/,
lists/train_aug.txt, lists/val.txt and classes.txt.

write_rectangles: a smaller kind in the same layout, images of the sizes given (a few class rectangles
outlined with 255 on a flat background), for the tests' fixture (tests/voc_fixture.py) and the
benchmarks that need VOC's image sizes.
"""
import argparse
import os
import sys

import cv2
import numpy as np
from PIL import Image

from data.classes import voc_palette

CLASSES = ("background", "disc", "box", "triangle", "ring", "cross")


def _texture(kind, h, w, rng):
    """A [0, 1] pattern of one of several kinds (each object class has its own kind)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(5, 10)
    angle = rng.uniform(0, np.pi)
    if kind == "dots":
        return ((np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)) > 0.35).astype(np.float32)
    if kind == "stripes":
        u = xx * np.cos(angle) + yy * np.sin(angle)
        return (np.sin(u * 2 * np.pi / period) > 0).astype(np.float32)
    if kind == "checker":
        return ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    if kind == "waves":
        return 0.5 + 0.5 * np.sin((xx + 4 * np.sin(yy / period)) * 2 * np.pi / period)
    if kind == "grain":
        noise = rng.random((h // 4 + 1, w // 4 + 1)).astype(np.float32)
        return cv2.resize(noise, (w, h), interpolation=cv2.INTER_NEAREST)
    raise ValueError(kind)


OBJECT_TEXTURES = {1: "dots", 2: "stripes", 3: "checker", 4: "waves", 5: "grain"}


def _shape_mask(cls, h, w, rng):
    """A filled mask of class `cls` somewhere in an h x w image, random scale and rotation."""
    mask = np.zeros((h, w), np.uint8)
    size = rng.uniform(0.15, 0.45) * min(h, w)
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    angle = rng.uniform(0, 360)
    if cls == 1:
        cv2.ellipse(mask, (int(cx), int(cy)), (int(size / 2), int(size / 2 * rng.uniform(0.8, 1.0))), angle, 0, 360, 1, -1)
    elif cls == 2:
        box = ((cx, cy), (size, size * rng.uniform(0.6, 1.0)), angle)
        cv2.fillPoly(mask, [cv2.boxPoints(box).astype(np.int32)], 1)
    elif cls == 3:
        pts = [(cx + size / 1.6 * np.cos(np.radians(angle + k * 120)), cy + size / 1.6 * np.sin(np.radians(angle + k * 120)))
               for k in range(3)]
        cv2.fillPoly(mask, [np.array(pts, np.int32)], 1)
    elif cls == 4:
        cv2.circle(mask, (int(cx), int(cy)), int(size / 2), 1, -1)
        cv2.circle(mask, (int(cx), int(cy)), int(size / 4), 0, -1)
    elif cls == 5:
        arm = size / 2
        bar = size / 6
        for theta in (angle, angle + 90):
            box = ((cx, cy), (2 * arm, 2 * bar), theta)
            cv2.fillPoly(mask, [cv2.boxPoints(box).astype(np.int32)], 1)
    return mask.astype(bool)


def _smooth_field(h, w, rng, cells=4):
    """A smooth [0, 1] random field (bilinear upsampling of a coarse random grid)."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _object_colour(cls, rng):
    """BGR colour around the class's own hue; neighbouring classes' hues overlap (std 30 degrees)."""
    hue = (cls * 36 + rng.normal(0, 15)) % 180  # OpenCV hue units: 0..180 = 0..360 degrees
    hsv = np.uint8([[[hue, rng.integers(120, 256), rng.integers(130, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def make_scene(rng, max_size=160, min_size=96):
    """One (BGR uint8 image, label uint8) pair.

    The background is smooth and greyish (two muted colours blended by a low-frequency field). Each
    object has its class's shape and texture, in a colour drawn around its class's hue; the hue ranges
    of neighbouring classes overlap, so colour alone is ambiguous."""
    h, w = (int(rng.integers(min_size, max_size + 1)) for _ in range(2))
    c1, c2 = rng.uniform(60, 200, (2, 3)).astype(np.float32)
    c1, c2 = (c + (c.mean() - c) * 0.6 for c in (c1, c2))  # desaturate the background
    field = _smooth_field(h, w, rng)[..., None]
    image = c1 * field + c2 * (1 - field)
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, len(CLASSES)))
        mask = _shape_mask(cls, h, w, rng)
        if mask.sum() < 30:
            continue
        colour = _object_colour(cls, rng)
        pattern = _texture(OBJECT_TEXTURES[cls], h, w, rng)[..., None]
        image[mask] = (colour * (0.55 + 0.45 * pattern))[mask]
        label[mask] = cls  # later objects occlude earlier ones
    kernel = np.ones((3, 3), np.uint8)
    boundary = (cv2.dilate(label, kernel) != cv2.erode(label, kernel)) & (cv2.dilate(label, kernel) > 0)
    label[boundary] = 255
    image = image + rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_dataset(out, num_train=400, num_val=100, seed=0, max_size=160, min_size=96):
    """Write the dataset under `out`; returns the list of written ids per split."""
    for folder in ("JPEGImages", "SegmentationClassAug", "lists"):
        os.makedirs(os.path.join(out, folder), exist_ok=True)
    colours = voc_palette().flatten().tolist()
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in (("train_aug", num_train), ("val", num_val)):
        ids = []
        for k in range(count):
            name = f"{split}_{k:05d}"
            image, label = make_scene(rng, max_size, min_size)
            cv2.imwrite(os.path.join(out, "JPEGImages", name + ".jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            png = Image.fromarray(label, mode="P")
            png.putpalette(colours)
            png.save(os.path.join(out, "SegmentationClassAug", name + ".png"))
            ids.append(name)
        with open(os.path.join(out, "lists", f"{split}.txt"), "w") as f:
            f.writelines(i + "\n" for i in ids)
        written[split] = ids
    with open(os.path.join(out, "classes.txt"), "w") as f:
        f.writelines(c + "\n" for c in CLASSES)
    return written


def write_label(path, label, palette=False):
    """A label PNG: single-channel ('L'), or with the VOC palette ('P') if `palette`."""
    image = Image.fromarray(label.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        image.putpalette(voc_palette().flatten().tolist())
    image.save(path)


def write_rectangles(root, sizes_train, sizes_val, num_classes=21, palette=False, seed=0):
    """Write JPEGImages/, SegmentationClassAug/ and lists/{train_aug,val}.txt, one image per (h, w)
    of `sizes_train` / `sizes_val`; return the root.

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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data.synthetic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-train", type=int, default=400, help="training images (default: %(default)s)")
    parser.add_argument("--num-val", type=int, default=100, help="validation images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    parser.add_argument("--max-size", type=int, default=160, help="largest image side, <= 500 (default: %(default)s)")
    parser.add_argument("--min-size", type=int, default=96, help="smallest image side (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 16 <= args.min_size <= args.max_size <= 500:
        parser.error("need 16 <= --min-size <= --max-size <= 500")
    write_dataset(args.out, args.num_train, args.num_val, args.seed, args.max_size, args.min_size)
    print(f"wrote {args.out}: {args.num_train} training and {args.num_val} validation images, "
          f"{len(CLASSES)} classes ({', '.join(CLASSES)})")


if __name__ == "__main__":
    main(sys.argv[1:])
