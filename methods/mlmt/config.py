"""MLMTConfig: what MLMT's data, networks and validation read, built once by train_mlmt.py from its
flags (each field is the flag of the same name, described in `python train_mlmt.py --help`)."""
from dataclasses import dataclass
from typing import Optional

from data.config import DataConfig
from utils.flags import from_flags


@dataclass(frozen=True)
class MLMTConfig:
    dataset: str
    data_dir: str
    data_layout: str                  # original (the original's files) or dataset (label PNGs of --dataset)
    data_list: Optional[str]          # training ids of the dataset layout; None: the dataset's
    val_list: Optional[str]
    num_classes: int
    ignore_label: int
    labeled_ratio: Optional[float]    # None: --labeled-list says which images are labeled
    pkl_file: Optional[str]           # the split permutation; None: seeded by random_seed
    random_seed: int
    batch_size_lab: int
    batch_size_unlab: int
    batch_size_val: int
    image_size: int                   # images are resized to this square
    augment_on_device: bool
    backbone: str
    pretrained: str                   # the ImageNet file of the backbone, or none
    channels_last: bool
    num_workers: int
    output_dir: str
    output_roll: str                  # flat or per-row
    labeled_list: Optional[str] = None
    unlabeled_list: Optional[str] = None  # training-list images only

    @classmethod
    def from_flags(cls, args):
        return from_flags(cls, args)

    def dataset_view(self, split):
        """The registry dataset's DataConfig of one split, for listing its images and label files."""
        return DataConfig(self.dataset, self.data_dir, self.num_classes, self.ignore_label,
                          data_list=self.data_list if split == "train" else self.val_list)
