"""DeepLabv3+ (Chen et al., ECCV 2018) on a ResNet-50/101: the segmenter of today's semi-supervised
segmentation papers, so that s4GAN can be run under their protocol (`--model deeplabv3p`).

- the trunk is torchvision's ResNet with its last stage dilated instead of strided (output stride
  16), so torchvision's ImageNet file, the one DeepLabv2 starts from, loads into it by name;
- ASPP on the 1/16 features: image pooling, a 1x1 branch and 3x3 branches at rates 6, 12, 18,
  concatenated and projected to 256 channels (BN, ReLU, dropout 0.5);
- the decoder: layer1's 1/4 features reduced to 48 channels, joined with the upsampled ASPP output,
  two 3x3 convs of 256 and a 1x1 classifier: logits at 1/4 of the input resolution;
- every BN learns (unlike DeepLabv2's frozen ones); the image-pooling BN cannot normalise a batch of
  one image, so its trainers drop incomplete batches (registry: min_batch 2).
"""
import torch
import torch.nn.functional as F
from torch import nn

from model.classifier import BACKBONES as TORCHVISION_RESNETS, read_imagenet_weights
from model.deeplabv3p import ASPP, conv_bn_relu

BACKBONES = ("resnet101", "resnet50")
ASPP_RATES = (6, 12, 18)


class DeepLabV3PlusResNet(nn.Module):
    output_stride_of_logits = 4

    def __init__(self, num_classes, backbone="resnet101", width=256):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = TORCHVISION_RESNETS[backbone](weights=None, replace_stride_with_dilation=[False, False, True])
        del self.backbone.fc, self.backbone.avgpool  # a classifier's, never used here
        self.aspp = ASPP(self.backbone.layer4[-1].conv3.out_channels, width, ASPP_RATES)
        self.project = nn.Sequential(conv_bn_relu(self.aspp.out_channels, width, 1), nn.Dropout(0.5))
        low_channels = self.backbone.layer1[-1].conv3.out_channels
        self.reduce = conv_bn_relu(low_channels, 48, 1)
        self.decoder = nn.Sequential(conv_bn_relu(width + 48, width, 3), conv_bn_relu(width, width, 3))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        trunk = self.backbone
        low = trunk.layer1(trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x)))))
        deep = trunk.layer4(trunk.layer3(trunk.layer2(low)))
        context = F.interpolate(self.project(self.aspp(deep)), size=low.shape[2:], mode="bilinear",
                                align_corners=False)
        return self.classifier(self.decoder(torch.cat([self.reduce(low), context], dim=1)))

    def head_modules(self):
        return [self.aspp, self.project, self.reduce, self.decoder, self.classifier]

    def optim_parameters(self, lr):
        """Two SGD groups: the trunk at lr, the head at 10x lr (the modern recipe's multipliers).

        `lr_mult` is what the poly schedule multiplies the base learning rate by, every iteration."""
        head = [p for m in self.head_modules() for p in m.parameters()]
        return [{"params": list(self.backbone.parameters()), "lr": lr, "lr_mult": 1},
                {"params": head, "lr": 10 * lr, "lr_mult": 10}]


def deeplabv3p_resnet(backbone, num_classes):
    if backbone not in BACKBONES:
        raise ValueError(f"DeepLabv3+ has the backbones {BACKBONES}, not {backbone!r}")
    return DeepLabV3PlusResNet(num_classes, backbone)


def load_imagenet_trunk(model, path):
    """torchvision's ImageNet file of the model's ResNet into its trunk (checked to fit exactly);
    the number of tensors loaded, or None when the file is absent."""
    state = read_imagenet_weights(path, model.backbone_name, "--restore-from")
    if state is None:
        return None
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return len(state)
