"""A run's configuration: frozen dataclasses built once from a script's parsed flags and passed on.

The scripts parse flags; below them nothing reads the namespace: builders take these values as
parameters. The flags themselves stay what a run records (args.json, latest.pth) and compares when
it resumes (engine/state.py), so a run's files keep their format.
"""
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from data.config import DataConfig
from engine.eval_modes import EvalMode
from model import SEGMENTERS
from utils.flags import from_flags


@dataclass(frozen=True)
class RunConfig:
    """What every trainer's run needs around its method."""
    checkpoint_dir: str               # args.json, latest.pth, snapshots
    log_dir: str                      # metrics.jsonl (and TensorBoard)
    device: str                       # auto, cpu, cuda, cuda:N
    gpu: int
    random_seed: int
    num_workers: int
    amp: str                          # off, bf16, fp16
    channels_last: bool
    log_every: int
    tensorboard: bool
    resume: Optional[str]             # None, auto or a latest.pth
    resume_with_other_flags: bool


@dataclass(frozen=True)
class ModelConfig:
    """A segmenter of the registry (model/__init__.py) and its initial weights."""
    model: str
    backbone: str
    num_classes: int
    options: Dict[str, Any] = field(default_factory=dict)  # the model's own flags (Segmenter.options)
    restore_from: str = "none"        # the ImageNet file, a checkpoint, or none


@dataclass(frozen=True)
class SplitConfig:
    """Which images are labeled, and how the streams draw them."""
    labeled_ratio: Optional[float]    # None: every image is labeled
    split_id: Optional[str]           # the permutation file; None: seeded by the run's seed
    batch_size: int
    batch_sizes: Dict[str, int] = field(default_factory=dict)  # per-stream batch sizes other than batch_size
    drop_last: bool = False           # every stream drops incomplete batches
    labeled_list: Optional[str] = None  # the labeled images by name (--labeled-list); replaces the ratio


@dataclass(frozen=True)
class OptimConfig:
    """The segmenter's SGD and the poly schedule of every optimizer of the run."""
    learning_rate: float              # the trunk's; the head's is 10x
    momentum: float
    weight_decay: float
    sgd_mode: str                     # legacy (the original's repeated lists) or standard
    power: float                      # poly exponent: lr x (1 - i / N) ** power


@dataclass(frozen=True)
class SegmentationConfig:
    """The segmentation trainers' data, model, split and optimisation."""
    data: DataConfig                  # the training list
    val_list: Optional[str]           # validation during training (None: the dataset's)
    model: ModelConfig
    split: SplitConfig
    optim: OptimConfig


@dataclass(frozen=True)
class ValidationConfig:
    """Validation during training (train_s4GAN_wrn38.py): --val-every, --val-protocol, --val-images."""
    every: int
    protocol: str                     # original or all
    images: int                       # how many are scored; 0: all
    image_stride: int                 # score every image_stride-th validation image
    result_file: str                  # the best validation's per-class table
    mode: EvalMode                    # how each image's logits are computed (--eval-mode)


def validation_config(args):
    # the original scored the first image of each validation batch: on Cityscapes batches of --batch-size
    stride = args.batch_size if args.val_protocol == "original" and args.dataset == "cityscapes" else 1
    return ValidationConfig(args.val_every, args.val_protocol, args.val_images, stride,
                            os.path.join(args.out, "result.txt"), eval_mode(args))


def eval_mode(args):
    """--eval-mode, --eval-window, --eval-stride (default: two thirds of the window)."""
    window = tuple(args.eval_window) if args.eval_window else None
    stride = tuple(args.eval_stride) if args.eval_stride else None
    if args.eval_mode == "sliding" and stride is None:
        stride = tuple(max(1, 2 * v // 3) for v in window)
    return EvalMode(args.eval_mode, window, stride)


def data_config(args, data_list, **training):
    """The data flags every script has, read through `data_list`; `training`: the training pipeline's."""
    return DataConfig(dataset=args.dataset, data_dir=args.data_dir, num_classes=args.num_classes,
                      ignore_label=args.ignore_label, data_list=data_list, **training)


def model_config(args, **weights):
    """--model, --backbone, --num-classes and the model's own flags (those its registry entry names)."""
    options = {name: getattr(args, name) for name in SEGMENTERS[args.model].options}
    return ModelConfig(args.model, args.backbone, args.num_classes, options, **weights)


def run_config(args, log_dir=None):
    return from_flags(RunConfig, args, log_dir=log_dir or args.checkpoint_dir)


def segmentation_config(args, unlabeled_list=None, batch_sizes=None, drop_last=False):
    """The flags of engine/options.train_parser, which every segmentation trainer has; the others given."""
    data = data_config(args, args.data_list, input_size=tuple(args.input_size), random_scale=args.random_scale,
                       random_mirror=args.random_mirror, context_train_mean=args.context_train_mean or "rgb",
                       unlabeled_list=unlabeled_list, full_resolution=args.full_resolution)
    model = model_config(args, restore_from=args.restore_from)
    # a model that cannot train on a batch of one image never gets an incomplete batch
    drop_last = drop_last or SEGMENTERS[args.model].min_batch > 1
    split = SplitConfig(args.labeled_ratio, args.split_id, args.batch_size, dict(batch_sizes or {}), drop_last,
                        args.labeled_list)
    optim = OptimConfig(args.learning_rate, args.momentum, args.weight_decay, args.sgd_mode, args.power)
    return SegmentationConfig(data, args.val_list, model, split, optim)

