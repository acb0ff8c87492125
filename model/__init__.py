"""Model registry: segmenters by name (`--model`), each with its backbones and their ImageNet files.

Adding a segmenter is one module plus one entry here. A segmenter module provides a builder
`build(backbone, num_classes, **options)` whose model has `optim_parameters(lr)`: its parameter groups,
each with the learning-rate multiplier (`lr_mult`) that the poly schedule applies.
"""
from dataclasses import dataclass
import os
from typing import Callable, Dict, Optional, Tuple

from model.deeplabv2 import BACKBONES as DEEPLABV2_BACKBONES, deeplabv2
from model.deeplabv3p import deeplabv3p_wrn38
from model.discriminator import S4GANDiscriminator
from model.wider_resnet import WRN38_IMAGENET, load_wrn38_imagenet


@dataclass(frozen=True)
class Segmenter:
    build: Callable
    backbones: Tuple[str, ...]  # the first is the default
    options: Tuple[str, ...]  # names of the flags (args attributes) the builder takes
    imagenet_weights: Dict[str, str]  # backbone -> ImageNet file name in ./pretrained_models/
    # how the ImageNet file loads: None = the --restore-from rule (copy tensors by name and shape);
    # else (model, path) -> count, or None when the file is absent (the trainer then stops with an error)
    load_imagenet: Optional[Callable] = None
    # images a training batch needs at least (2: a BatchNorm over pooled features, as DeepLabv3+'s
    # image pooling, cannot normalise one image); its trainers then drop incomplete batches
    min_batch: int = 1


SEGMENTERS = {
    "deeplabv2": Segmenter(deeplabv2, tuple(DEEPLABV2_BACKBONES), ("aspp_branches", "init"),
                           {"resnet101": "resnet101-5d3b4d8f.pth", "resnet50": "resnet50-19c8e357.pth",
                            "resnet18": "resnet18-5c106cde.pth"}),
    "deeplabv3p_wrn38": Segmenter(lambda backbone, num_classes, wrn_width_mult=1.0:
                                  deeplabv3p_wrn38(num_classes, backbone, wrn_width_mult),
                                  ("wrn38",), ("wrn_width_mult",), {"wrn38": os.path.basename(WRN38_IMAGENET)},
                                  lambda model, path: load_wrn38_imagenet(model.backbone, path), min_batch=2),
}
# the original's --model defaults ('DeepLab' in the trainers); all meant DeepLabv2
MODEL_ALIASES = {"deeplab": "deeplabv2", "deeplabv2": "deeplabv2"}


def canonical_model_name(name):
    """'DeepLab' (the original trainers' default) and 'deeplabv2' name the same model."""
    return MODEL_ALIASES.get(name.lower(), name)


def all_backbones():
    return sorted({b for entry in SEGMENTERS.values() for b in entry.backbones})


def build_segmenter(backbone="resnet101", num_classes=21, model="deeplabv2", **options):
    entry = SEGMENTERS[canonical_model_name(model)]
    if backbone not in entry.backbones:
        raise ValueError(f"--model {model} has no backbone {backbone!r}; choose from {list(entry.backbones)}")
    return entry.build(backbone, num_classes, **options)


def build_discriminator(num_classes):
    return S4GANDiscriminator(num_classes)
