"""Dataset registry: `--dataset` name -> its DatasetSpec (data/spec.py).

Each entry knows its default folder, classes, palette, ignore value and evaluation protocol, so the
scripts never branch on the dataset name. Adding a dataset is one module with a SPEC plus one line here.
"""
from data.spec import DatasetSpec  # noqa: F401  (re-exported for dataset modules and tests)
from utils.errors import UserError

_REGISTRY = {}


def _registry():
    """Name -> spec, built on first use: importing the package does not import the dataset modules,
    so that `python -m data.context` (or data.voc) runs its module once, as __main__ only."""
    if not _REGISTRY:
        from data import cityscapes, context, voc
        _REGISTRY.update({spec.name: spec for spec in (voc.SPEC, voc.FOLDER_SPEC, context.SPEC, cityscapes.SPEC)})
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
