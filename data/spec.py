"""What the scripts know of a dataset: one `DatasetSpec` per registry entry (see data/__init__.py)."""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class DatasetSpec:
    name: str                      # the --dataset value
    default_data_dir: str          # --data-dir when none is given
    num_classes: int               # --num-classes when none is given (0: the folder's classes.txt says)
    ignore_label: int              # the value the loader marks void and padding with (-1: nothing is ignored)
    palette: np.ndarray            # (256, 3) uint8 colours of saved prediction PNGs
    class_names: Callable          # (num_classes, data_dir) -> names
    build_train: Callable          # (args) -> training dataset
    build_val: Callable            # (args) -> evaluation dataset, labels at the resolution that is scored
    build_unlabeled: Optional[Callable] = None  # (args) -> images without labels (--unlabeled-list)
    ignore_label_fixed: bool = True  # False: the loader pads with whatever --ignore-label says
