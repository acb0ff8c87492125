"""PASCAL VOC 2012 (+SBD "SegmentationClassAug") in the original's layout and pipeline (docs/original.md,
"PASCAL VOC"), and `--dataset folder`: any dataset in the same layout.

<data-dir>/JPEGImages/<id>.jpg and <data-dir>/SegmentationClassAug/<id>.png, listed by id in a text
file (`--data-list`, one id per line; the line number is the index the split files refer to).

Write the lists for a fresh copy of the data with
    python -m data.voc make-lists --data-dir ./data/voc_dataset/
"""
import argparse
import os
import sys

import numpy as np
from torch.utils.data import Dataset

from data.classes import VOC_CLASSES, generic_class_names, voc_palette
from data.spec import DatasetSpec
from data.transforms import (check_label_values, compact_label, pad_bottom_right, random_crop, random_scale,
                             read_image_bgr, read_label)
from utils.errors import UserError
from utils.visualize import read_rgb

# The original's mean, BGR order, 0-255 scale (no division by a standard deviation).
VOC_MEAN_BGR = np.array((104.00698793, 116.66876762, 122.67891434), np.float32)
VOC_IGNORE_LABEL = 255
IMAGE_DIR, LABEL_DIR = "JPEGImages", "SegmentationClassAug"
DEFAULT_LISTS = {"train": "./data/voc_list/train_aug.txt", "val": "./data/voc_list/val.txt"}
# The original evaluates VOC by padding every image (all <= 500 px) to 505x505.
VOC_EVAL_SIZE = (505, 505)


def _list_id(entry):
    prefix = IMAGE_DIR + "/"
    return entry[len(prefix):-len(".jpg")] if entry.startswith(prefix) and entry.endswith(".jpg") else entry


def read_id_list(path, flag="--data-list"):
    if not os.path.isfile(path):
        if flag != "--data-list":
            raise UserError(f"{flag} {path} does not exist: give a text file of image ids, one per line")
        raise UserError(
            f"{flag} {path} does not exist: write the VOC lists with `python -m data.voc make-lists "
            f"--data-dir <your voc_dataset folder>` (train_aug = every id in SegmentationClassAug that "
            f"is not in val), or point {flag} at your own list")
    with open(path) as f:  # an id, or the two-column form of today's lists: JPEGImages/<id>.jpg SegmentationClass/...
        ids = [_list_id(line.split()[0]) for line in f if line.strip()]
    if not ids:
        raise UserError(f"{flag} {path} is empty")
    return ids


class VOCSegmentation(Dataset):
    """Items: (image float32 3xHxW RGB minus mean, label int64 HxW, (h, w) before padding, id, index).

    Training: optional random scale, pad (label 255) to the crop, random crop, optional mirror.
    `pad_only` (evaluation): pad to at least `crop_size` and never crop; crop_size None pads each
    image only to the next 8k+1 size (the sizes at which the stride-8 output aligns with the input).
    An item can be an index or (index, seed_key) as yielded by data.sampler: the key seeds that
    sample's augmentation, so a run is reproducible whatever the number of workers.
    `labeled=False` reads no label file (label all ignore), for images that have none.
    `uint8_eval` (evaluation only; engine/evaluator.py sets it): the image stays uint8 RGB HxWx3,
    padded with zero bytes, and normalization_tables() gives the floats the evaluator makes of it on
    the device, the same as the float items'.
    """
    uint8_eval = False

    def __init__(self, root, list_path, crop_size=(321, 321), scale=False, mirror=False,
                 num_classes=21, ignore_label=VOC_IGNORE_LABEL, mean=VOC_MEAN_BGR, pad_only=False,
                 labeled=True, ids=None, list_flag="--data-list", check_files=True):
        if not os.path.isdir(root):
            raise UserError(f"--data-dir {root} does not exist or is not a folder: give the folder that holds "
                            f"JPEGImages/ and SegmentationClassAug/ (docs/datasets.md)")
        self.root = root
        self.ids = list(ids) if ids is not None else read_id_list(list_path, list_flag)
        self.crop_h, self.crop_w = crop_size if crop_size is not None else (None, None)
        self.scale, self.mirror, self.pad_only, self.labeled = scale, mirror, pad_only, labeled
        self.num_classes, self.ignore_label = num_classes, ignore_label
        self.mean = np.asarray(mean, np.float32)
        if check_files:  # every listed file, up front: a missing one fails now, not hours in
            self._check_files(list_path)

    def image_path(self, name):
        return os.path.join(self.root, IMAGE_DIR, name + ".jpg")

    def label_path(self, name):
        return os.path.join(self.root, LABEL_DIR, name + ".png")

    def _check_files(self, list_path):
        for name in self.ids:
            paths = [self.image_path(name)] + ([self.label_path(name)] if self.labeled else [])
            for path in paths:
                if not os.path.isfile(path):
                    raise UserError(f"{path} (listed in {list_path}) does not exist")

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, item):
        index, key = item if isinstance(item, tuple) else (item, None)
        rng = np.random.default_rng(key if key is not None else np.random.randint(0, 2**31 - 1))
        name = self.ids[index]
        image = read_image_bgr(self.image_path(name))
        if self.labeled:
            label = read_label(self.label_path(name))
            if label.shape != image.shape[:2]:
                raise UserError(f"label {self.label_path(name)} is {label.shape[1]}x{label.shape[0]} "
                                f"but its image is {image.shape[1]}x{image.shape[0]}")
            check_label_values(label, self.num_classes, self.ignore_label, self.label_path(name))
        else:
            label = np.full(image.shape[:2], self.ignore_label, np.int64)
        size = np.array(label.shape, np.int64)
        if self.uint8_eval and self.pad_only:
            height, width = self._padded_size(label.shape)
            image, label = pad_bottom_right(image[:, :, ::-1], label, height, width, self.ignore_label)
            return np.ascontiguousarray(image), compact_label(label), size, name, index
        if self.scale:
            image, label = random_scale(image, label, rng)
        image = image.astype(np.float32) - self.mean
        height, width = self._padded_size(label.shape)
        image, label = pad_bottom_right(image, label, height, width, self.ignore_label)
        if not self.pad_only:
            image, label = random_crop(image, label, self.crop_h, self.crop_w, rng)
        image = image[:, :, ::-1].transpose(2, 0, 1)  # BGR -> RGB, HWC -> CHW
        if self.mirror and rng.random() < 0.5:
            image, label = image[:, :, ::-1], label[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(label), size, name, index

    def _padded_size(self, shape):
        if self.crop_h is None:  # the next 8k+1 sizes
            return tuple(8 * -(-(n - 1) // 8) + 1 for n in shape)
        return self.crop_h, self.crop_w

    def normalization_tables(self):
        """(tables, sources, pad): output channel c (RGB) of an image is tables[c][rgb[..., sources[c]]],
        the padding `pad`: uint8 minus the mean, in float32 as the float items compute it."""
        values = np.arange(256, dtype=np.float32)
        return np.stack([values - self.mean[2 - c] for c in range(3)]), (0, 1, 2), 0.0

    def label_indices(self, name):
        """The label of `name` as class indices, before any transform (for `python -m data.check`)."""
        return read_label(self.label_path(name))

    def display(self, index):
        """(RGB uint8 image, label) of item `index` as scored (before padding), for montages."""
        name = self.ids[index]
        return read_rgb(self.image_path(name)), read_label(self.label_path(name))


def _train(config):
    return VOCSegmentation(config.data_dir, config.data_list or DEFAULT_LISTS["train"], config.input_size,
                           config.random_scale, config.random_mirror, config.num_classes, config.ignore_label,
                           check_files=config.check_files)


def _unlabeled(config):
    return VOCSegmentation(config.data_dir, config.unlabeled_list, config.input_size, config.random_scale,
                           config.random_mirror, config.num_classes, config.ignore_label, labeled=False,
                           list_flag="--unlabeled-list")


def _val(config):
    return VOCSegmentation(config.data_dir, config.data_list or DEFAULT_LISTS["val"], VOC_EVAL_SIZE,
                           num_classes=config.num_classes, ignore_label=config.ignore_label, pad_only=True,
                           check_files=config.check_files)


def _folder_val(config):
    """Custom data: each image scored at its own size (padded to 8k+1), not padded to VOC's 505."""
    return VOCSegmentation(config.data_dir, config.data_list or DEFAULT_LISTS["val"], None,
                           num_classes=config.num_classes, ignore_label=config.ignore_label, pad_only=True,
                           check_files=config.check_files)


def _voc_names(num_classes, data_dir=None):
    return VOC_CLASSES if num_classes == len(VOC_CLASSES) else generic_class_names(num_classes)


def folder_classes(data_dir):
    """<data-dir>/classes.txt, one name per line (None if absent)."""
    path = os.path.join(data_dir or "", "classes.txt")
    if not data_dir or not os.path.isfile(path):
        return None
    with open(path) as f:
        return tuple(line.strip() for line in f if line.strip())


def _folder_names(num_classes, data_dir=None):
    """<data-dir>/classes.txt if it lists num_classes names, else class_<i>."""
    names = folder_classes(data_dir)
    return names if names and len(names) == num_classes else generic_class_names(num_classes)


SPEC = DatasetSpec("pascal_voc", "./data/voc_dataset/", len(VOC_CLASSES), VOC_IGNORE_LABEL, voc_palette(),
                   _voc_names, _train, _val, _unlabeled)
# num_classes 0: from <data-dir>/classes.txt, else --num-classes is required
FOLDER_SPEC = DatasetSpec("folder", "./data/voc_dataset/", 0, VOC_IGNORE_LABEL, voc_palette(), _folder_names,
                          _train, _folder_val, _unlabeled, ignore_label_fixed=False)
SPECS = (SPEC, FOLDER_SPEC)  # this module's registry entries (data/__init__.py)


def make_lists(data_dir, out_dir, val_ids_path=None):
    """Write train_aug.txt (sorted ids of SegmentationClassAug not in val) and val.txt."""
    label_dir = os.path.join(data_dir, LABEL_DIR)
    if not os.path.isdir(label_dir):
        raise UserError(f"--data-dir {data_dir} has no {LABEL_DIR}/ folder")
    candidates = [val_ids_path] if val_ids_path else [
        os.path.join(data_dir, "ImageSets", "Segmentation", "val.txt"),
        os.path.join(out_dir, "val.txt"),
    ]
    source = next((p for p in candidates if p and os.path.isfile(p)), None)
    if source is None:
        raise UserError("no VOC val id list found: pass --val-ids <VOC2012 ImageSets/Segmentation/val.txt>")
    val = read_id_list(source, "--val-ids")
    labeled = sorted(f[:-4] for f in os.listdir(label_dir) if f.endswith(".png"))
    val_set = set(val)
    train = [i for i in labeled if i not in val_set]
    os.makedirs(out_dir, exist_ok=True)
    for name, ids in (("train_aug.txt", train), ("val.txt", val)):
        with open(os.path.join(out_dir, name), "w") as f:
            f.writelines(i + "\n" for i in ids)
    return len(train), len(val)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data.voc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-lists", help="write train_aug.txt and val.txt for a VOC folder")
    mk.add_argument("--data-dir", default="./data/voc_dataset/", help="VOC root (default: %(default)s)")
    mk.add_argument("--out-dir", default="./data/voc_list/", help="where the lists go (default: %(default)s)")
    mk.add_argument("--val-ids", default=None,
                    help="VOC2012 val ids (default: <data-dir>/ImageSets/Segmentation/val.txt, "
                         "else an existing <out-dir>/val.txt)")
    args = parser.parse_args(argv)
    n_train, n_val = make_lists(args.data_dir, args.out_dir, args.val_ids)
    print(f"wrote {args.out_dir}: train_aug.txt ({n_train} ids), val.txt ({n_val} ids)")


if __name__ == "__main__":
    from utils.errors import run_cli
    run_cli(main, sys.argv[1:])
