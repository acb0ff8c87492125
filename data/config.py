"""DataConfig: every value a dataset's builders read (data/spec.py), built once from a script's flags
(engine/config.py) and passed on; nothing below the scripts reads the flags themselves."""
from dataclasses import dataclass, replace
from typing import Optional, Tuple


@dataclass(frozen=True)
class DataConfig:
    dataset: str                                # the registry name (--dataset)
    data_dir: str                               # the dataset's root folder
    num_classes: int
    ignore_label: int                           # excluded from the loss and the metric
    data_list: Optional[str] = None             # ids to read; None: the dataset's default list of the split built
    input_size: Tuple[int, int] = (321, 321)    # the training crop (H, W)
    random_scale: bool = False                  # training augmentations (VOC layout)
    random_mirror: bool = False
    context_train_mean: str = "rgb"             # PASCAL-Context training normalisation: rgb or reversed
    eval_full_res: bool = False                 # Cityscapes evaluation: score the full-resolution labels
    full_resolution: bool = False               # Cityscapes: train and evaluate at 2048x1024 (today's protocol)
    unlabeled_list: Optional[str] = None        # ids of extra images without labels (VOC layout)
    check_files: bool = True                    # check at once that every listed file exists

    def listing(self, data_list):
        """The same data read through another list (a training run's validation list, say)."""
        return replace(self, data_list=data_list)
