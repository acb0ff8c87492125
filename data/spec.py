"""What the scripts know of a dataset: one `DatasetSpec` per registry entry (see data/__init__.py),
and the contract of the datasets its builders return (`SegmentationDataset`, with its optional hooks)."""
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from utils.errors import UserError


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry (`--dataset NAME`).

    The builders take a `DataConfig` (data/config.py: data_dir, data_list (None: the dataset's
    default list), input_size (the training crop, (h, w)), random_scale, random_mirror, num_classes,
    ignore_label, unlabeled_list (build_unlabeled), check_files (check every listed file up front),
    and the dataset options context_train_mean, eval_full_res; a new option is a new field there).
    Each returns a `SegmentationDataset`.
    """
    name: str                      # the --dataset value
    default_data_dir: str          # --data-dir when none is given
    num_classes: int               # --num-classes when none is given (0: the folder's classes.txt says)
    ignore_label: int              # the value the loader marks void and padding with (-1: nothing is ignored)
    palette: np.ndarray            # (256, 3) uint8 colours of saved prediction PNGs
    class_names: Callable          # (num_classes, data_dir) -> names
    build_train: Callable          # (DataConfig) -> training dataset: items cropped to its input_size
    build_val: Callable            # (DataConfig) -> evaluation dataset, labels at the resolution that is scored
    build_unlabeled: Optional[Callable] = None  # (DataConfig) -> images without labels (its unlabeled_list)
    ignore_label_fixed: bool = True  # False: the loader pads with whatever --ignore-label says


@runtime_checkable
class SegmentationDataset(Protocol):
    """What a builder of a DatasetSpec returns: the trainers (engine/setup.py, data/sampler.py,
    data/joined.py), evaluate.py and the validation during training (engine/evaluator.py) read it.

    Required:
    - `ids`: the image ids (str), one per item, in index order (split files, checkpoints and
      --unlabeled-list refer to images by position in it; evaluate.py names its PNGs after them);
    - `__len__()` == len(ids);
    - `__getitem__(item)`: `item` is an index, or an `(index, key)` pair from data/sampler.py whose
      key (a tuple of ints) seeds all of that sample's randomness (crop, scale, flip), so that a run
      does not depend on the number of loader workers. Returns the 5-tuple
      `(image, label, size, name, index)`:
        image  float32 numpy (3, H, W), RGB, normalised as the segmenter expects;
        label  integer numpy (H', W'): class indices 0..C-1, `ignore_label` for void and padding;
        size   int64 numpy [h, w]: evaluation: the scored region, from the top-left corner (the rest
               is padding); training: the image's size before the crop (not used);
        name   ids[index];  index  the index asked for.
      Training items (build_train, build_unlabeled) have H, W = H', W' = input_size, so that the
      default collate stacks them; evaluation items (build_val) any size, the label at the resolution
      that is scored (the logits are upsampled to it) and the same label size for the same image size.
      Unlabeled items (build_unlabeled) have labels of `ignore_label` only.

    Optional (absent: the fallback said here; each hook has its own runtime-checkable Protocol):
    - `normalization_tables()` with a class attribute `uint8_eval = False` (`DeviceNormalized`):
      evaluation may set `uint8_eval = True`; the items then hold uint8 RGB (H, W, 3) images, which
      the evaluator turns into the float items' values on the device through the tables
      (`(tables (3, 256), sources (3,), padding value)`). Absent: float items are evaluated
      (`supports_uint8_eval`);
    - `display(index)` (`Displayable`): (RGB uint8 (h, w, 3), label (h, w)) as scored, for montages
      (evaluate.py --save-output-images, --tensorboard). `display_pair(dataset, index)` gives the pair
      of any dataset: without the hook, derived from the evaluation item (the image rescaled to 0..255);
    - `image_path(name)`, `label_path(name)`, `label_indices(name)` (`LabelFiles`): the files of an
      image and the label as class indices, read by train_mlmt.py (its image-level labels come from
      the label PNGs, which must hold class indices) and `python -m data.check`. Absent: those two
      stop with an error (`label_files`).
    """

    ids: Sequence[str]

    def __len__(self) -> int: ...

    def __getitem__(self, item): ...


@runtime_checkable
class DeviceNormalized(Protocol):
    """Optional hook: uint8 evaluation items normalised on the device (engine/evaluator.py)."""

    uint8_eval: bool

    def normalization_tables(self) -> Tuple[np.ndarray, Sequence[int], float]: ...


@runtime_checkable
class Displayable(Protocol):
    """Optional hook: (RGB uint8 image, label) of an evaluation item as scored, for montages."""

    def display(self, index: int) -> Tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class LabelFiles(Protocol):
    """Optional hook: where an image and its label live, and the label as class indices."""

    def image_path(self, name: str) -> str: ...

    def label_path(self, name: str) -> str: ...

    def label_indices(self, name: str) -> np.ndarray: ...


def supports_uint8_eval(dataset):
    """Whether the evaluation dataset can give uint8 images normalised on the device."""
    return isinstance(dataset, DeviceNormalized)


def display_pair(dataset, index):
    """(RGB uint8 (h, w, 3), label (h, w)) of evaluation item `index` as scored: the dataset's
    `display(index)`, else derived from the item (its scored region; a float image rescaled to 0..255
    for viewing, and resized to the label's size where the two differ)."""
    if isinstance(dataset, Displayable):
        return dataset.display(index)
    image, label, size, _, _ = dataset[index]
    label = np.asarray(label, np.int64)
    image = np.asarray(image)
    if image.dtype != np.uint8:  # float (3, H, W) as the segmenter takes it
        image = np.ascontiguousarray(image.transpose(1, 2, 0), np.float32)
    if image.shape[:2] != label.shape:
        import cv2
        image = cv2.resize(image, (label.shape[1], label.shape[0]), interpolation=cv2.INTER_LINEAR)
    h, w = (int(v) for v in np.asarray(size)[:2])
    image, label = image[:h, :w], label[:h, :w]
    if image.dtype != np.uint8:  # normalised values: spread their range over 0..255
        low, high = float(image.min()), float(image.max())
        image = ((image - low) * (255.0 / max(high - low, 1e-6))).round().astype(np.uint8)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def label_files(dataset, dataset_name, needed_by):
    """The dataset itself when it has `image_path`, `label_path` and `label_indices`; else a
    UserError naming what needs them (train_mlmt.py, python -m data.check)."""
    if isinstance(dataset, LabelFiles):
        return dataset
    missing = [m for m in ("image_path", "label_path", "label_indices") if not hasattr(dataset, m)]
    raise UserError(f"{needed_by} needs the image and label files of --dataset {dataset_name}, whose dataset "
                    f"({type(dataset).__name__}) has no {', '.join(missing)} (data/spec.py, LabelFiles)")

