"""DeepLabv2 with a ResNet trunk, as used by s4GAN (docs/original.md, "DeepLabv2").

Faithful to the original layout so that its checkpoints load by name:
- the stride of a bottleneck sits on its first 1x1 conv (Caffe/MSRA style), not on the 3x3;
- layer3 and layer4 keep stride 1 and use dilation 2 and 4: output stride 8 (321 -> 41x41);
- max pooling with ceil_mode=True;
- every BN keeps its affine parameters frozen, but stays in train mode while training;
- the classifier ("layer5") has four dilated 3x3 branches (6, 12, 18, 24); the original forward
  returns inside its loop and sums only the first two (`aspp_branches=2`), 4 sums all of them;
- every conv starts from N(0, 0.01) (`init="original"`); `init="kaiming"` gives the trunk He
  initialisation instead, for training from scratch.
"""
from collections import Counter

from torch import nn

ASPP_DILATIONS = (6, 12, 18, 24)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34 style), dilated like the bottleneck for the small CPU variant."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ASPPClassifier(nn.Module):
    """DeepLabv2 'ASPP-L' head: parallel dilated 3x3 convs to class logits, summed."""

    def __init__(self, in_channels, num_classes, branches=2, dilations=ASPP_DILATIONS):
        super().__init__()
        if branches not in range(1, len(dilations) + 1):
            raise ValueError(f"branches must be in 1..{len(dilations)}, got {branches}")
        self.branches = branches
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, x):
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1:self.branches]:
            out = out + conv(x)
        return out


class DeepLabV2(nn.Module):
    def __init__(self, block, layers, num_classes, aspp_branches=2, init="original"):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], dilation=2)
        self.layer4 = self._make_layer(block, 512, layers[3], dilation=4)
        self.layer5 = ASPPClassifier(512 * block.expansion, num_classes, aspp_branches)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if init == "kaiming" and not any(m is c for c in self.layer5.conv2d_list):
                    # N(0, 0.01) is harmless under ImageNet weights, but from scratch such small
                    # weights ahead of BN make the effective step size huge; He init trains well.
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)

    def _make_layer(self, block, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.layer5(x)

    def unused_parameter_names(self):
        """Classifier branches that the forward does not sum (they exist for checkpoint compatibility)."""
        return [f"layer5.conv2d_list.{k}.{name}" for k in range(self.layer5.branches, len(self.layer5.conv2d_list))
                for name in ("weight", "bias")]

    def backbone_modules(self):
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]

    def optim_parameters(self, lr):
        """Two SGD groups: trainable backbone tensors at lr, the whole classifier at 10x lr.

        `lr_mult` is what the poly schedule multiplies the base learning rate by, every iteration."""
        backbone = [p for m in self.backbone_modules() for p in m.parameters() if p.requires_grad]
        return [
            {"params": backbone, "lr": lr, "lr_mult": 1},
            {"params": list(self.layer5.parameters()), "lr": 10 * lr, "lr_mult": 10},
        ]

    def legacy_multiplicities(self):
        """How often each group-0 tensor appeared in the original's parameter list (docs/original.md, "Duplicated SGD parameters").

        The original walked every submodule of conv1, bn1, layer1..4 and yielded each submodule's
        *recursive* parameters, so a bottleneck conv appears 3 times, a downsample conv 4 times.
        Returned in the order of `optim_parameters()[0]['params']`.
        """
        counts = Counter()
        for top in self.backbone_modules():
            for sub in top.modules():
                counts.update(id(p) for p in sub.parameters() if p.requires_grad)
        return [counts[id(p)] for p in self.optim_parameters(1.0)[0]["params"]]


BACKBONES = {
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
}


def deeplabv2(backbone="resnet101", num_classes=21, aspp_branches=2, init="original"):
    block, layers = BACKBONES[backbone]
    return DeepLabV2(block, layers, num_classes, aspp_branches, init)
