"""PASCAL-Context, 60 classes (59 + background), in the original's training and evaluation pipelines.

Project layout under --data-dir (default ./data/pcontext_dataset/):

    JPEGImages/<id>.jpg                 the VOC 2010 images
    SegmentationClassContext/<id>.png   single-channel class indices 0..59 (0 = background)
    train.txt, val.txt                  ids, one per line (4,996 / 5,104 in the standard split);
                                        the line number is the index the split files refer to

Convert the annotations you have into it once with

    python -m data.context prepare --data-dir ./data/pcontext_dataset/

which accepts (a) this layout already present (e.g. converted by another toolbox): used as is;
(b) the official full-label release: trainval/<id>.mat (trainval.tar.gz from the PASCAL-Context
site), a `LabelMap` of the 459-class ids, with the train/val id lists at <root>/train.txt and
<root>/val.txt (or --train-ids / --val-ids); (c) the original's mask caches train.pth / val.pth
(torch-saved dicts id -> PIL mask), read without unpickling arbitrary objects; the lists are then
written in the caches' order, so that the original authors' splits/pc/split_0.pkl selects the same
images as for them (with (b), that holds only if your lists are in the Detail API's order).

Labels. Label k is the position of the original category id in the sorted list of the 60 ids
below; any other id becomes background (0), as in the masks the original trained on. Background is
a class like the others and nothing is ignored: the matching flag is `--ignore-label -1` (no pixel
has that value; padding is background 0).

Training (the original's): horizontal flip (p = 1/2); the short side resized to a random integer in
[252, 1010] (PIL bilinear / nearest); padded right and bottom to the crop (image 0, mask 0); random
crop of --input-size (321,321); Gaussian blur of radius U[0, 1) with p = 1/2; RGB / 255, minus the
mean of --context-train-mean, divided by the ImageNet std. Evaluation: short side 512, centre crop
512x512 (only that crop is scored), ImageNet mean in RGB order.

Modules: this one is the dataset (items, the registry entry) and the command line; the labels and
the layout checks are data/context_layout.py; the conversion is data/context_prepare.py, which reads
the .mat LabelMaps and the original's mask caches through data/context_masks.py. Imports run that
way only: none of those three imports this module.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageFilter
from torch.utils.data import Dataset

from data.classes import generic_class_names, voc_palette
from data.context_layout import CONTEXT_CLASSES, IMAGE_DIR, MASK_DIR, NUM_CLASSES, check_prepared, read_ids
from data.context_prepare import prepare
from data.spec import DatasetSpec
from data.transforms import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, compact_label, context_train_normalization
from utils.errors import ArgumentParser, UserError

CONTEXT_IGNORE_LABEL = -1  # nothing is ignored: every pixel, background included, is a class
BASE_SIZE = 505                                  # the original's base size: short side in [252, 1010]
SHORT_SIDE_RANGE = (int(BASE_SIZE * 0.5), int(BASE_SIZE * 2.0))
EVAL_SIZE = 512                                  # short side and centre crop in evaluation
DEFAULT_DATA_DIR = "./data/pcontext_dataset/"
FLIP_LEFT_RIGHT = getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT  # Image.Transpose: Pillow >= 9.1


def context_palette(n=256):
    return voc_palette(n)


def class_names(num_classes, data_dir=None):
    return CONTEXT_CLASSES if num_classes == NUM_CLASSES else generic_class_names(num_classes)


# --------------------------------------------------------------------------------------------
# The datasets

def open_rgb(path):
    try:
        img = Image.open(path)  # not `with`: closing the image would drop its pixels; load() closes the file
        img.load()
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {path} (corrupt or truncated: {exc})") from None
    return img if img.mode == "RGB" else img.convert("RGB")


def open_mask(path):
    """A 0..59 mask PNG as a PIL 'L' image (palette PNGs: their indices), values checked."""
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise UserError(f"label {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read label {path} (corrupt or truncated: {exc})") from None
    if img.mode == "P":
        img = Image.frombytes("L", img.size, img.tobytes())
    elif img.mode != "L":
        raise UserError(f"label {path} has mode {img.mode}: expected a single-channel 0..59 PNG "
                        f"(run `python -m data.context prepare`)")
    counts = np.asarray(img.histogram()[:256])
    if counts[NUM_CLASSES:].any():
        values = (np.flatnonzero(counts[NUM_CLASSES:]) + NUM_CLASSES)[:5].tolist()
        raise UserError(f"label {path} has values {values} > {NUM_CLASSES - 1}: PASCAL-Context masks "
                        f"hold 0..{NUM_CLASSES - 1} with background 0 (59-class masks with 255 are not "
                        f"accepted; convert the annotations with `python -m data.context prepare`)")
    return img


def normalization_table(mean, std):
    """(3, 256) float32: /255 then (x - mean) / std per channel, in float32 like ToTensor + Normalize."""
    return (np.arange(256, dtype=np.float32)[None, :] / np.float32(255) - np.asarray(mean, np.float32)[:, None]) \
        / np.asarray(std, np.float32)[:, None]


def to_normalized_tensor(rgb, mean, std):
    """uint8 HxWx3 -> float32 3xHxW: /255 then (x - mean) / std, in float32 like ToTensor + Normalize.

    Each output depends on one byte only, so the 256 values per channel are computed with those
    float32 operations once and looked up: the same floats as per pixel, several times faster."""
    table = normalization_table(mean, std)
    out = np.empty((3,) + rgb.shape[:2], np.float32)
    for channel in range(3):
        np.take(table[channel], rgb[:, :, channel], out=out[channel])
    return out


def scaled_size(width, height, short):
    """(w, h) of the original's training rescale: the short side becomes `short`, the long side
    long * short / short_before in floating point, truncated (not rounded); an image that is not
    taller than wide (a square included) takes the landscape branch. See docs/original.md,
    "PASCAL-Context"."""
    if height > width:
        return short, int(1.0 * height * short / width)
    return int(1.0 * width * short / height), short


def eval_size(width, height):
    """(w, h) of the original's evaluation resize: the short side becomes 512, the long side is
    truncated as in training, but the branch is `if w > h` (a square takes the portrait branch; the
    same size either way). With the crop offset rounded by Python's round() (half to even), it
    decides which pixels are scored."""
    if width > height:
        return int(1.0 * width * EVAL_SIZE / height), EVAL_SIZE
    return EVAL_SIZE, int(1.0 * height * EVAL_SIZE / width)


class ContextSegmentation(Dataset):
    """Items: (image float32 3xHxW, label int64 HxW (0..59), size int64 [h, w], id, index).

    train=True: the original's random pipeline (see the module docstring), `size` = the image's
    original (h, w); an item may be (index, key), the key seeding all of that sample's randomness.
    train=False: short side 512, centre 512x512 crop; `size` = (512, 512), the scored region.
    `uint8_eval` (train=False): the image stays uint8 RGB, normalised on the device by the evaluator
    (normalization_tables()).
    """
    uint8_eval = False

    def __init__(self, root, split="train", list_path=None, train=True, crop_size=(321, 321),
                 mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB, list_flag="--data-list", check_files=True):
        list_path = check_prepared(root, split, list_path, list_flag)
        self.root, self.train = root, train
        self.ids = read_ids(list_path, list_flag)
        self.crop_h, self.crop_w = crop_size
        self.mean, self.std = tuple(mean), tuple(std)
        for name in self.ids if check_files else ():
            image, mask = self.image_path(name), self.label_path(name)
            if not os.path.isfile(image):
                raise UserError(f"image {image} (listed in {list_path}) does not exist")
            if not os.path.isfile(mask):
                raise UserError(f"label {mask} for image {image} (listed in {list_path}) does not exist")

    def image_path(self, name):
        return os.path.join(self.root, IMAGE_DIR, name + ".jpg")

    def label_path(self, name):
        return os.path.join(self.root, MASK_DIR, name + ".png")

    def __len__(self):
        return len(self.ids)

    def _read(self, name):
        image, mask = open_rgb(self.image_path(name)), open_mask(self.label_path(name))
        if image.size != mask.size:
            raise UserError(f"label {self.label_path(name)} is {mask.size[0]}x{mask.size[1]} but its image "
                            f"{self.image_path(name)} is {image.size[0]}x{image.size[1]}")
        return image, mask

    def __getitem__(self, item):
        index, key = item if isinstance(item, tuple) else (item, None)
        name = self.ids[index]
        if not self.train:
            rgb, label = self._eval_pair(index)
            size = np.array(label.shape, np.int64)
            if self.uint8_eval:
                return np.ascontiguousarray(rgb), compact_label(label), size, name, index
            return to_normalized_tensor(rgb, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB), label, size, name, index
        rng = np.random.default_rng(key if key is not None else np.random.randint(0, 2**31 - 1))
        image, mask = self._read(name)
        size = np.array((image.size[1], image.size[0]), np.int64)
        if rng.random() < 0.5:
            image, mask = image.transpose(FLIP_LEFT_RIGHT), mask.transpose(FLIP_LEFT_RIGHT)
        short = int(rng.integers(SHORT_SIDE_RANGE[0], SHORT_SIDE_RANGE[1] + 1))
        out_size = scaled_size(image.size[0], image.size[1], short)
        rgb = np.asarray(image.resize(out_size, Image.BILINEAR))
        label = np.asarray(mask.resize(out_size, Image.NEAREST))
        pad_h, pad_w = max(self.crop_h - label.shape[0], 0), max(self.crop_w - label.shape[1], 0)
        if pad_h or pad_w:  # image black, mask background: nothing is ignored in Context
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)))
            label = np.pad(label, ((0, pad_h), (0, pad_w)))
        left = int(rng.integers(0, label.shape[1] - self.crop_w + 1))
        top = int(rng.integers(0, label.shape[0] - self.crop_h + 1))
        rgb = rgb[top:top + self.crop_h, left:left + self.crop_w]
        label = label[top:top + self.crop_h, left:left + self.crop_w]
        if rng.random() < 0.5:
            blurred = Image.fromarray(np.ascontiguousarray(rgb)).filter(ImageFilter.GaussianBlur(radius=rng.random()))
            rgb = np.asarray(blurred)
        return to_normalized_tensor(rgb, self.mean, self.std), label.astype(np.int64), size, name, index

    @staticmethod
    def normalization_tables():
        """(tables, sources, pad) of the evaluation images: output channel c is tables[c][rgb[..., c]]."""
        return normalization_table(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB), (0, 1, 2), 0.0

    def _eval_pair(self, index):
        image, mask = self._read(self.ids[index])
        out_size = eval_size(*image.size)
        image, mask = image.resize(out_size, Image.BILINEAR), mask.resize(out_size, Image.NEAREST)
        left, top = int(round((out_size[0] - EVAL_SIZE) / 2.0)), int(round((out_size[1] - EVAL_SIZE) / 2.0))
        box = (left, top, left + EVAL_SIZE, top + EVAL_SIZE)
        return np.asarray(image.crop(box)), np.asarray(mask.crop(box)).astype(np.int64)

    def label_indices(self, name):
        """The mask of `name` as class indices 0..59 (for `python -m data.check`)."""
        return np.asarray(open_mask(self.label_path(name))).astype(np.int64)

    def display(self, index):
        """(RGB uint8 512x512x3, label int64 512x512): the scored crop, for montages."""
        rgb, label = self._eval_pair(index)
        return np.ascontiguousarray(rgb), label


def build_train(config):
    mean, std = context_train_normalization(config.context_train_mean)
    return ContextSegmentation(config.data_dir, "train", config.data_list, train=True,
                               crop_size=tuple(config.input_size), mean=mean, std=std, check_files=config.check_files)


def build_val(config):
    return ContextSegmentation(config.data_dir, "val", config.data_list, train=False, check_files=config.check_files)


SPEC = DatasetSpec(
    name="pascal_context",
    default_data_dir=DEFAULT_DATA_DIR,
    num_classes=NUM_CLASSES,
    ignore_label=CONTEXT_IGNORE_LABEL,
    palette=context_palette(),
    class_names=class_names,
    build_train=build_train,
    build_val=build_val,
)


def main(argv=None):
    parser = ArgumentParser(prog="python -m data.context", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="convert the annotations once into the project layout")
    prep.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the dataset root (default: %(default)s)")
    prep.add_argument("--from", dest="source", default=None,
                      help="folder with train.pth / val.pth or <id>.mat files (directly or in trainval/), "
                           "if not in --data-dir")
    prep.add_argument("--train-ids", default=None, help="train id list for .mat files (default: <data-dir>/train.txt)")
    prep.add_argument("--val-ids", default=None, help="val id list for .mat files (default: <data-dir>/val.txt)")
    prep.add_argument("--images", default=None,
                      help="your VOC2010 JPEGImages folder, linked as <data-dir>/JPEGImages if that is missing")
    prep.add_argument("--force", action="store_true", help="rewrite masks that already exist")
    args = parser.parse_args(argv)
    prepare(args.data_dir, args.source, args.train_ids, args.val_ids, args.images, args.force)


if __name__ == "__main__":
    from utils.errors import run_cli
    run_cli(main, sys.argv[1:])
