"""Dataset registry: name -> how to build its training and validation sets.

Each entry knows its class names, palette, ignore value and evaluation protocol, so scripts never
branch on the dataset name.
"""
import os
from dataclasses import dataclass
from typing import Callable, Optional

from data.classes import VOC_CLASSES, generic_class_names, voc_palette
from data.voc import VOC_IGNORE_LABEL, VOCSegmentation

# The original evaluates VOC by padding every image (all <= 500 px) to 505x505.
VOC_EVAL_SIZE = (505, 505)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    build_train: Callable
    build_val: Callable
    build_unlabeled: Optional[Callable]  # images without label PNGs (--unlabeled-list), or None
    class_names: Callable  # (num_classes, data_dir) -> names
    ignore_label: Optional[int]  # the value the loader pads with; None: the --ignore-label flag


def _voc_train(data_dir, data_list, crop_size, scale, mirror, num_classes, ignore_label):
    return VOCSegmentation(data_dir, data_list, crop_size, scale, mirror, num_classes, ignore_label)


def _voc_unlabeled(data_dir, data_list, crop_size, scale, mirror, num_classes, ignore_label):
    return VOCSegmentation(data_dir, data_list, crop_size, scale, mirror, num_classes, ignore_label, labeled=False,
                           list_flag="--unlabeled-list")


def _voc_val(data_dir, data_list, num_classes, ignore_label):
    return VOCSegmentation(data_dir, data_list, VOC_EVAL_SIZE, num_classes=num_classes,
                           ignore_label=ignore_label, pad_only=True)


def _folder_val(data_dir, data_list, num_classes, ignore_label):
    """Custom data: each image scored at its own size (padded to 8k+1), not padded to VOC's 505."""
    return VOCSegmentation(data_dir, data_list, None, num_classes=num_classes, ignore_label=ignore_label,
                           pad_only=True)


def _voc_names(num_classes, data_dir=None):
    return VOC_CLASSES if num_classes == len(VOC_CLASSES) else generic_class_names(num_classes)


def _folder_names(num_classes, data_dir=None):
    """<data-dir>/classes.txt (one name per line) if it lists num_classes names, else class_<i>."""
    path = os.path.join(data_dir or "", "classes.txt")
    if data_dir and os.path.isfile(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) == num_classes:
            return tuple(names)
    return generic_class_names(num_classes)


DATASETS = {
    "pascal_voc": DatasetSpec("pascal_voc", _voc_train, _voc_val, _voc_unlabeled, _voc_names, VOC_IGNORE_LABEL),
    "folder": DatasetSpec("folder", _voc_train, _folder_val, _voc_unlabeled, _folder_names, None),
}


def get_dataset(name):
    return DATASETS[name]


def palette():
    return voc_palette()
