"""DeepLabv3+ (Chen et al., ECCV 2018) on the WideResNet-38 trunk: the original's second segmenter.

It follows the original's model/deeplabv3p.py (from NVIDIA semantic-segmentation), with its
parameter names, so that its checkpoints load:
- ASPP on the 1/8 features with rates 12, 24, 36 (the output-stride-16 rates doubled); the
  image-pooling branch comes first in the concatenation;
- the decoder's fine features are the trunk's 1/2 features (not the usual 1/4), so the logits come
  out at half the input resolution; the training loop upsamples them;
- only `final` gets He initialisation, the rest keeps PyTorch's defaults.
In train mode a batch of one image fails in the image-pooling BN (one value per channel), so a
trainer must drop incomplete last batches (the original's WRN trainer used drop_last=True).
"""
import torch
import torch.nn.functional as F
from torch import nn

from model.wider_resnet import WiderResNet38, scaled

ASPP_RATES = (12, 24, 36)


def conv_bn_relu(in_channels, out_channels, kernel_size, dilation=1):
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                                   bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def upsample(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Image pooling, a 1x1 branch and three dilated 3x3 branches, concatenated in that order."""

    def __init__(self, in_channels, channels=256, rates=ASPP_RATES):
        super().__init__()
        self.features = nn.ModuleList([conv_bn_relu(in_channels, channels, 1)] +
                                      [conv_bn_relu(in_channels, channels, 3, rate) for rate in rates])
        self.img_pooling = nn.AdaptiveAvgPool2d(1)
        self.img_conv = conv_bn_relu(in_channels, channels, 1)
        self.out_channels = channels * (len(rates) + 2)

    def forward(self, x):
        pooled = upsample(self.img_conv(self.img_pooling(x)), x.shape[2:])
        return torch.cat([pooled] + [branch(x) for branch in self.features], dim=1)


class DeepLabV3PlusWRN38(nn.Module):
    output_stride_of_logits = 2  # logits are at 1/2 of the input resolution

    def __init__(self, num_classes, width_mult=1.0):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = WiderResNet38(width_mult)
        width = scaled(256, width_mult)
        fine = scaled(48, width_mult)
        self.aspp = ASPP(self.backbone.out_channels, width)
        self.bot_fine = nn.Conv2d(self.backbone.s2_channels, fine, 1, bias=False)
        self.bot_aspp = nn.Conv2d(self.aspp.out_channels, width, 1, bias=False)
        self.final = nn.Sequential(
            *conv_bn_relu(fine + width, width, 3),
            *conv_bn_relu(width, width, 3),
            nn.Conv2d(width, num_classes, 1, bias=False))
        for m in self.final.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        s2, deep = self.backbone(x)
        context = upsample(self.bot_aspp(self.aspp(deep)), s2.shape[2:])
        return self.final(torch.cat([self.bot_fine(s2), context], dim=1))

    def head_modules(self):
        return [self.aspp, self.bot_aspp, self.bot_fine, self.final]

    def optim_parameters(self, lr):
        """Two SGD groups: the trunk (BN affine parameters included) at lr, the head at 10x lr.

        `lr_mult` is what the poly schedule multiplies the base learning rate by, every iteration."""
        head = [p for m in self.head_modules() for p in m.parameters()]
        return [
            {"params": list(self.backbone.parameters()), "lr": lr, "lr_mult": 1},
            {"params": head, "lr": 10 * lr, "lr_mult": 10},
        ]

    def original_param_lists(self):
        """The original's two lists, repeats included (docs/original.md, "Duplicated SGD parameters").

        It walked every submodule (pre-order) and yielded each one's *recursive* parameters, so a
        trunk tensor appears 3 to 6 times (once per enclosing module) and a head tensor 1 to 4 times."""
        def walk(tops):
            return [p for top in tops for sub in top.modules() for p in sub.parameters() if p.requires_grad]
        return [walk([self.backbone]), walk(self.head_modules())]

    def unused_parameter_names(self):
        return []


def deeplabv3p_wrn38(num_classes=19, backbone="wrn38", width_mult=1.0):
    if backbone != "wrn38":
        raise ValueError(f"DeepLabv3+ has only the 'wrn38' backbone, not {backbone!r}")
    return DeepLabV3PlusWRN38(num_classes, width_mult)
