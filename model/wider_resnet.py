"""WideResNet-38 trunk (Wu et al., "Wider or Deeper", 2019) at output stride 8, for DeepLabv3+.

The layout and parameter names follow the original's model/wider_resnet.py (from NVIDIA
semantic-segmentation, itself from Mapillary's inplace_abn), so that its ImageNet file
`wider_resnet38.pth.tar` loads by name:
- identity-mapping (pre-activation) blocks: BN+ReLU first, a 1x1 projection shortcut when the
  stride or the width changes; each BN+ReLU is a Sequential(BN, ReLU), hence keys like `bn1.0.weight`;
- mod4 halves the resolution once more, mod5 is dilated 2, mod6 and mod7 (bottlenecks) dilated 4;
- the ImageNet network's final `bn_out` and `classifier` are not part of the trunk: the trunk
  returns the pre-activation sum of mod7, as the original's DeepLabv3+ did.
Plain BatchNorm2d + ReLU replace in-place activated BN (same parameters, same function). Dropout is
nn.Dropout2d used explicitly: the original made it so by assigning `nn.Dropout = nn.Dropout2d`,
which changed torch.nn for the whole process; this module changes nothing global.
"""
import os
from collections import OrderedDict

from torch import nn

from model.weights import read_state_dict
from utils.errors import UserError

WRN38_IMAGENET = "./pretrained_models/wider_resnet38.pth.tar"
# Top-level entries of the ImageNet file that the trunk drops (the classification network's end).
IMAGENET_ONLY_PREFIXES = ("bn_out.", "classifier.")
# Our names are the original's: the map from file names to trunk names is the identity.

# (block channels, number of blocks, stride of the first block, dilation, Dropout2d p) of mod2..mod7.
# Two channel counts: two 3x3 convs; three: a 1x1 / 3x3 / 1x1 bottleneck.
STAGES = (
    ((128, 128), 3, 1, 1, None),  # after pool2: 1/2
    ((256, 256), 3, 1, 1, None),  # after pool3: 1/4
    ((512, 512), 6, 2, 1, None),  # 1/8
    ((512, 1024), 3, 1, 2, None),
    ((512, 1024, 2048), 1, 1, 4, 0.3),
    ((1024, 2048, 4096), 1, 1, 4, 0.5),
)
STEM_CHANNELS = 64


def scaled(channels, width_mult):
    return max(1, round(channels * width_mult))


def bn_relu(channels):
    """Sequential(BN, ReLU): index 0 holds the BN, as in the original's keys (`bn1.0.weight`)."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class IdentityResidualBlock(nn.Module):
    """Pre-activation residual block (He et al., "Identity Mappings in Deep Residual Networks", 2016).

    The projection shortcut starts from the pre-activated input, the identity from the raw input.
    """

    def __init__(self, in_channels, channels, stride=1, dilation=1, dropout=None):
        super().__init__()
        self.bn1 = bn_relu(in_channels)
        if len(channels) == 2:
            mid, out = channels
            layers = [("conv1", nn.Conv2d(in_channels, mid, 3, stride, dilation, dilation, bias=False)),
                      ("bn2", bn_relu(mid))]
            last = ("conv2", nn.Conv2d(mid, out, 3, 1, dilation, dilation, bias=False))
        else:
            first, mid, out = channels
            layers = [("conv1", nn.Conv2d(in_channels, first, 1, stride, bias=False)),
                      ("bn2", bn_relu(first)),
                      ("conv2", nn.Conv2d(first, mid, 3, 1, dilation, dilation, bias=False)),
                      ("bn3", bn_relu(mid))]
            last = ("conv3", nn.Conv2d(mid, out, 1, bias=False))
        if dropout is not None:  # before the last conv, where the original put it
            layers.append(("dropout", nn.Dropout2d(dropout)))
        self.convs = nn.Sequential(OrderedDict(layers + [last]))
        if stride != 1 or in_channels != out:
            self.proj_conv = nn.Conv2d(in_channels, out, 1, stride, bias=False)

    def forward(self, x):
        pre = self.bn1(x)
        shortcut = self.proj_conv(pre) if hasattr(self, "proj_conv") else x
        return self.convs(pre) + shortcut


class WiderResNet38(nn.Module):
    """WRN-38 "A2" trunk, dilated to output stride 8. Returns (1/2 features, 1/8 features).

    `width_mult` scales every channel count; it is for tests and CPU runs only (1/16 gives a tiny
    network of the same structure), the ImageNet weights exist for 1.0 only.
    """

    def __init__(self, width_mult=1.0):
        super().__init__()
        in_channels = scaled(STEM_CHANNELS, width_mult)
        self.mod1 = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(3, in_channels, 3, 1, 1, bias=False))]))
        for index, (channels, blocks, stride, dilation, dropout) in enumerate(STAGES, start=2):
            channels = tuple(scaled(c, width_mult) for c in channels)
            layers = []
            for k in range(blocks):
                layers.append((f"block{k + 1}", IdentityResidualBlock(
                    in_channels, channels, stride if k == 0 else 1, dilation, dropout)))
                in_channels = channels[-1]
            self.add_module(f"mod{index}", nn.Sequential(OrderedDict(layers)))
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.pool3 = nn.MaxPool2d(3, stride=2, padding=1)
        self.s2_channels = scaled(STAGES[0][0][-1], width_mult)
        self.out_channels = in_channels

    def forward(self, x):
        s2 = self.mod2(self.pool2(self.mod1(x)))
        x = self.mod4(self.mod3(self.pool3(s2)))
        return s2, self.mod7(self.mod6(self.mod5(x)))


def load_wrn38_imagenet(trunk, path=WRN38_IMAGENET):
    """Load the original's ImageNet WRN-38 weights into `trunk`; return the tensor count, or None if
    the file is absent (the caller decides whether that deserves a warning).

    The file is `{'state_dict': {...}}` with DataParallel's `module.` prefixes. Like the original's
    strict load, every trunk tensor must be there with its shape (BN's `num_batches_tracked` may be
    missing in old files) and nothing else may be, apart from `bn_out.*` and `classifier.*`.
    """
    if not os.path.isfile(path):
        return None
    flag = "ImageNet WRN-38 weights"
    state = {k: v for k, v in read_state_dict(path, flag).items() if not k.startswith(IMAGENET_ONLY_PREFIXES)}
    own = trunk.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing ({', '.join(missing[:3])})" if missing else "",
                 f"{len(wrong)} of another shape ({'; '.join(wrong[:2])})" if wrong else "",
                 f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})" if unexpected else ""]
        raise UserError(f"{flag} {path} do not fit the WideResNet-38 trunk, tensors: "
                        f"{'; '.join(p for p in parts if p)}")
    trunk.load_state_dict(state, strict=False)
    return len(state)
