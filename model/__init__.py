"""Model registry: segmenters by name (`--model`), each with its backbones and their ImageNet files.

Adding a segmenter is one module plus one entry in SEGMENTERS (docs/extending.md, step by step): the
module's builder `build(backbone, num_classes, **options)` returns a model that fulfils
`SegmenterModel` below; the entry (`Segmenter`) says its backbones, options, ImageNet files and
smallest training batch. tests/test_contracts.py checks every entry against the contract and does
what the guide says in a copy of the repository.
"""
from dataclasses import dataclass, field
import os
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple, runtime_checkable

from model.deeplabv2 import BACKBONES as DEEPLABV2_BACKBONES, deeplabv2
from model.deeplabv3p import deeplabv3p_wrn38
from model.deeplabv3p_resnet import BACKBONES as DEEPLABV3P_BACKBONES, deeplabv3p_resnet, load_imagenet_trunk
from model.discriminator import S4GANDiscriminator
from model.weights import PRETRAINED_DIR
from model.wider_resnet import WRN38_IMAGENET, load_wrn38_imagenet
from utils.optim import LegacyMultiplicities, OriginalParamLists


@runtime_checkable
class SegmenterModel(Protocol):
    """What the trainers, evaluate.py, the checkpoints and the optimizers require of a segmenter.

    Required (isinstance(model, SegmenterModel) checks that they exist; tests/test_contracts.py that
    they behave):
    - a `torch.nn.Module`: the run moves it (`to`), switches `train()`/`eval()` (train mode: BN on
      batch statistics), saves and loads `state_dict()` (snapshots, latest.pth, evaluate.py's
      --restore-from), and may wrap it in DistributedDataParallel (every parameter of the forward
      gets a gradient, or is named by the optional `unused_parameter_names`) and SyncBatchNorm;
    - `forward(images)`: float32 images (N, 3, H, W), normalised as the dataset's items are ->
      logits (N, num_classes, h, w) with h <= H and w <= W, at any resolution: the trainers upsample
      them bilinearly to the crop, the evaluator to the labels (DeepLabv2: about 1/8, DeepLabv3+: 1/2).
      In train mode it must take batches of the entry's `min_batch` images, in eval mode of one;
    - `optim_parameters(lr)`: the SGD parameter groups, a list of dicts {"params": [tensors],
      "lr": lr * k, "lr_mult": k}; every trainable tensor in exactly one group; the poly schedule sets
      each group's lr to poly(base lr) * lr_mult every iteration.

    Optional hooks (absent: the fallback said here; each has its own runtime-checkable Protocol):
    - `original_param_lists()` (`OriginalParamLists`) or `legacy_multiplicities()`
      (`LegacyMultiplicities`): the original's repeated SGD parameter lists, which --sgd-mode legacy
      (the default of --fidelity original) reproduces (utils/optim.py segmenter_optimizer). A model
      with neither trains with standard SGD under every profile; the run says so in one line;
    - `unused_parameter_names()` (`HasUnusedParameters`): names of parameters the forward never uses
      (kept for checkpoint compatibility), which DDP must not wait for. Absent: none; read it with
      `unused_parameter_names(model)`.
    """

    def forward(self, images): ...

    def optim_parameters(self, lr) -> List[dict]: ...

    def state_dict(self, *args, **kwargs): ...

    def load_state_dict(self, state_dict, strict=True): ...

    def train(self, mode=True): ...

    def eval(self): ...

    def to(self, *args, **kwargs): ...


@runtime_checkable
class HasUnusedParameters(Protocol):
    """Optional hook of a SegmenterModel: parameter names (state_dict keys) the forward never uses."""

    def unused_parameter_names(self) -> List[str]: ...


# the optional hooks of a SegmenterModel, each a runtime-checkable Protocol (the SGD ones live where
# they are used, in utils/optim.py)
SEGMENTER_HOOKS = (OriginalParamLists, LegacyMultiplicities, HasUnusedParameters)


def unused_parameter_names(model):
    """The parameters DDP must leave out of its gradient reduction: the model's
    `unused_parameter_names()`, or none when it has no such hook."""
    return list(model.unused_parameter_names()) if isinstance(model, HasUnusedParameters) else []


@dataclass(frozen=True)
class ModelFlag:
    """A flag a segmenter brings: `--<name with dashes>`, added by engine/options.py to every script
    with --model (once, whichever entries share it); `settings` are add_argument's keywords."""
    name: str
    settings: Dict[str, Any]


@dataclass(frozen=True)
class Segmenter:
    """A registry entry (`--model NAME`). Fields:

    build: (backbone, num_classes, **options) -> a SegmenterModel with random (or its own) initial weights.
    backbones: the --backbone values it accepts, the first the default (every entry's backbones are
        --backbone's choices).
    options: names of the flags whose values `build` takes as keywords (the trainers and evaluate.py
        pass them): the model's own `flags`, or a trainer flag such as "init".
    flags: the model's own flags (`ModelFlag`), which every script with --model accepts.
    imagenet_weights: backbone -> its ImageNet file name in ./pretrained_models/, the default
        --restore-from; a backbone without one starts from random initialisation by default
        (`default_restore_from`).
    load_imagenet: how that file loads: None = the --restore-from rule (tensors copied by name and
        shape); else (model, path) -> number of tensors loaded, or None when the file is absent (the
        trainer then stops with an error).
    min_batch: images a training batch needs at least (2: a BatchNorm over pooled features, as
        DeepLabv3+'s image pooling, cannot normalise one image); its trainers then drop incomplete
        batches and refuse smaller --batch-size values.
    """
    build: Callable
    backbones: Tuple[str, ...]
    options: Tuple[str, ...] = ()
    flags: Tuple["ModelFlag", ...] = ()
    imagenet_weights: Dict[str, str] = field(default_factory=dict)
    load_imagenet: Optional[Callable] = None
    min_batch: int = 1


SEGMENTERS = {
    "deeplabv2": Segmenter(
        deeplabv2, tuple(DEEPLABV2_BACKBONES), options=("aspp_branches", "init"),
        flags=(ModelFlag("aspp_branches", dict(
            type=int, default=None, choices=(2, 4),
            help="[new] DeepLabv2 classifier branches summed: 2 = original (d=6,12 only), 4 = all "
                 "(default: from --fidelity)")),),
        imagenet_weights={"resnet101": "resnet101-5d3b4d8f.pth", "resnet50": "resnet50-19c8e357.pth",
                          "resnet18": "resnet18-5c106cde.pth"}),
    "deeplabv3p_wrn38": Segmenter(
        lambda backbone, num_classes, wrn_width_mult=1.0: deeplabv3p_wrn38(num_classes, backbone, wrn_width_mult),
        ("wrn38",), options=("wrn_width_mult",),
        flags=(ModelFlag("wrn_width_mult", dict(
            type=float, default=1.0,
            help="[new] deeplabv3p_wrn38: scale every channel count; for tests and CPU demos only "
                 "(the ImageNet weights exist for 1.0)")),),
        imagenet_weights={"wrn38": os.path.basename(WRN38_IMAGENET)},
        load_imagenet=lambda model, path: load_wrn38_imagenet(model.backbone, path), min_batch=2),
    # [new] the segmenter of today's semi-supervised papers: DeepLabv3+ on torchvision's ResNet
    "deeplabv3p": Segmenter(
        deeplabv3p_resnet, DEEPLABV3P_BACKBONES,
        imagenet_weights={"resnet101": "resnet101-5d3b4d8f.pth", "resnet50": "resnet50-19c8e357.pth"},
        load_imagenet=load_imagenet_trunk, min_batch=2),
}
# the original's --model defaults ('DeepLab' in the trainers); all meant DeepLabv2
MODEL_ALIASES = {"deeplab": "deeplabv2", "deeplabv2": "deeplabv2"}


def canonical_model_name(name):
    """'DeepLab' (the original trainers' default) and 'deeplabv2' name the same model."""
    return MODEL_ALIASES.get(name.lower(), name)


def all_backbones():
    return sorted({b for entry in SEGMENTERS.values() for b in entry.backbones})


def default_restore_from(model, backbone):
    """The --restore-from a trainer uses when none is given: the entry's ImageNet file for `backbone` in
    ./pretrained_models/, or "none" (random initialisation) for a backbone that has none."""
    name = SEGMENTERS[canonical_model_name(model)].imagenet_weights.get(backbone)
    return f"{PRETRAINED_DIR}/{name}" if name else "none"


def build_segmenter(backbone="resnet101", num_classes=21, model="deeplabv2", **options):
    entry = SEGMENTERS[canonical_model_name(model)]
    if backbone not in entry.backbones:
        raise ValueError(f"--model {model} has no backbone {backbone!r}; choose from {list(entry.backbones)}")
    return entry.build(backbone, num_classes, **options)


def build_discriminator(num_classes):
    return S4GANDiscriminator(num_classes)
