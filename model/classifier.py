"""The MLMT image classifier (Mittal et al., TPAMI 2021, Sec. 3.2): a torchvision ResNet whose
1000-way ImageNet layer is replaced by a `num_classes`-way linear layer; sigmoid outputs give one
presence probability per class.

Output unit k is class (k + 1) % num_classes: the foreground classes first and the background
(class 0) last, the column order of the original's label files (train_label.txt).
"""
import os

import torch
import torchvision

from model.weights import TORCHVISION_URL, read_state_dict
from utils.errors import UserError

BACKBONES = {"resnet101": torchvision.models.resnet101, "resnet50": torchvision.models.resnet50,
             "resnet18": torchvision.models.resnet18}
# torchvision's first-generation ImageNet files; resnet101-5d3b4d8f.pth is the segmenter's file too
IMAGENET_FILES = {"resnet101": "resnet101-5d3b4d8f.pth", "resnet50": "resnet50-19c8e357.pth",
                  "resnet18": "resnet18-5c106cde.pth"}
HEAD_PREFIX = "fc."


def build_classifier(backbone="resnet101", num_classes=21):
    """torchvision's architecture and initialisation, with a fresh `num_classes`-way `fc`."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown classifier backbone {backbone!r}; choose from {sorted(BACKBONES)}")
    model = BACKBONES[backbone](weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, num_classes)
    return model


def read_imagenet_weights(path, backbone, flag="--pretrained"):
    """The ImageNet state dict at `path` without its 1000-way layer, or None if the file is absent
    (the caller warns and keeps the random initialisation). A file that does not fit `backbone`'s
    trunk exactly (another depth, a segmentation checkpoint...) is an error."""
    if not os.path.isfile(path):
        return None
    state = {k: v for k, v in read_state_dict(path, flag).items() if not k.startswith(HEAD_PREFIX)}
    own = {k: v for k, v in build_classifier(backbone, 2).state_dict().items() if not k.startswith(HEAD_PREFIX)}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
             for k in own if k in state and state[k].shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    if missing or wrong or unexpected:
        detail = "; ".join(wrong[:2] + [f"missing {k}" for k in missing[:2]] + [f"unexpected {k}" for k in unexpected[:2]])
        raise UserError(f"{flag} {path} is not the ImageNet {backbone} of torchvision: {len(wrong)} tensors of "
                        f"another shape, {len(missing)} missing, {len(unexpected)} unexpected ({detail}); "
                        f"pass the {IMAGENET_FILES[backbone]} file ({TORCHVISION_URL.format(IMAGENET_FILES[backbone])}) "
                        f"or check --backbone")
    return state


def load_trunk(model, state):
    """Copy an ImageNet trunk (from read_imagenet_weights) into `model`; the head keeps its init."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(HEAD_PREFIX) or k.endswith("num_batches_tracked") for k in missing)
    return len(state)

