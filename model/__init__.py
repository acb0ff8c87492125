"""Model registry: segmenters by backbone name, the s4GAN discriminator."""
from model.deeplabv2 import BACKBONES as DEEPLABV2_BACKBONES, deeplabv2
from model.discriminator import S4GANDiscriminator

SEGMENTERS = {name: "deeplabv2" for name in DEEPLABV2_BACKBONES}


def build_segmenter(backbone="resnet101", num_classes=21, aspp_branches=2, init="original"):
    if backbone not in SEGMENTERS:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(SEGMENTERS)}")
    return deeplabv2(backbone, num_classes, aspp_branches, init)


def build_discriminator(num_classes):
    return S4GANDiscriminator(num_classes)
