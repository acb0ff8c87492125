"""MLMT's networks: the ResNet classifier of student and teacher, initialised from ImageNet."""
import torch

from model.classifier import IMAGENET_FILES, build_classifier, load_trunk, read_imagenet_weights
from model.weights import TORCHVISION_URL
from utils.errors import UserError


def imagenet_trunk(config):
    """--pretrained's trunk weights, or None with --pretrained none (random initialisation). A missing
    file stops the run: a classifier trained from random weights by mistake is hours lost."""
    if config.pretrained.lower() == "none":
        return None
    state = read_imagenet_weights(config.pretrained, config.backbone)
    if state is None:
        name = IMAGENET_FILES[config.backbone]
        raise UserError(f"--pretrained {config.pretrained} does not exist: download {TORCHVISION_URL.format(name)} "
                        f"there (pretrained_models/README.md), or pass --pretrained none to start from random "
                        f"initialisation")
    return state


def classifier(config, device, trunk=None, teacher=False):
    """A ResNet classifier with --num-classes outputs in train mode (student and teacher both stay in
    train mode, as in the original). The teacher is built on its own (its head has its own random
    init, which the EMA washes out) and its parameters never get a gradient."""
    model = build_classifier(config.backbone, config.num_classes)
    if trunk is not None:
        load_trunk(model, trunk)
    model = model.to(device).train()
    if teacher:
        for p in model.parameters():
            p.requires_grad_(False)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
    return model
