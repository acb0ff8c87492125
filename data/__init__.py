"""Dataset registry: `--dataset` name -> its DatasetSpec (data/spec.py).

Each entry knows its default folder, classes, palette, ignore value and evaluation protocol, so the
scripts never branch on the dataset name. Adding a dataset is one module with a SPEC (a DatasetSpec
whose builders return datasets that fulfil SegmentationDataset, data/spec.py) plus its name in
DATASET_MODULES below (docs/extending.md, step by step; tests/test_contracts.py checks every entry).
"""
import importlib

from data.spec import (DatasetSpec, DeviceNormalized, Displayable, LabelFiles, SegmentationDataset, display_pair,
                       label_files, supports_uint8_eval)
from utils.errors import UserError

# DATASETS (name -> spec, built on first use) comes from __getattr__ below
__all__ = ["DatasetSpec", "DeviceNormalized", "Displayable", "LabelFiles", "SegmentationDataset", "display_pair",
           "label_files", "supports_uint8_eval", "DATASET_MODULES", "module_specs", "get_dataset",
           "fill_dataset_defaults"]

# the modules of the registry's entries: each has SPEC, a DatasetSpec, or SPECS, a tuple of them
DATASET_MODULES = ("data.voc", "data.context", "data.cityscapes")
_REGISTRY = {}


def module_specs(module):
    """A dataset module's entries: its SPECS, else its SPEC."""
    return tuple(getattr(module, "SPECS", None) or (module.SPEC,))


def _registry():
    """Name -> spec, built on first use: importing the package does not import the dataset modules,
    so that `python -m data.context` (or data.voc) runs its module once, as __main__ only."""
    if not _REGISTRY:
        specs = [spec for name in DATASET_MODULES for spec in module_specs(importlib.import_module(name))]
        _REGISTRY.update({spec.name: spec for spec in specs})
    return _REGISTRY


def __getattr__(name):
    if name == "DATASETS":
        return _registry()
    raise AttributeError(f"module 'data' has no attribute {name!r}")


def get_dataset(name):
    return _registry()[name]


def fill_dataset_defaults(args):
    """--data-dir, --num-classes and --ignore-label left unset (None) take the --dataset entry's values
    (a folder's number of classes: the lines of <data-dir>/classes.txt). Returns the entry."""
    spec = get_dataset(args.dataset)
    if args.data_dir is None:
        args.data_dir = spec.default_data_dir
    if args.num_classes is None:
        from data.voc import folder_classes
        args.num_classes = spec.num_classes or len(folder_classes(args.data_dir) or ())
        if not args.num_classes:
            raise UserError(f"--num-classes is required for --dataset {args.dataset} without "
                            f"{args.data_dir}/classes.txt")
    if args.ignore_label is None:
        args.ignore_label = spec.ignore_label
    return spec
