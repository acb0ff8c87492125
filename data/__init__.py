"""Dataset registry: `--dataset` name -> its DatasetSpec (data/spec.py).

Each entry knows its default folder, classes, palette, ignore value and evaluation protocol, so the
scripts never branch on the dataset name. Adding a dataset is one module with a SPEC plus one line here.
"""
from data import cityscapes, context, voc
from data.spec import DatasetSpec  # noqa: F401  (re-exported for dataset modules and tests)

DATASETS = {spec.name: spec for spec in (voc.SPEC, voc.FOLDER_SPEC, context.SPEC, cityscapes.SPEC)}


def get_dataset(name):
    return DATASETS[name]
