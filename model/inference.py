"""Inference-only rewrites of a trained segmenter."""
import torch
from torch.fx.experimental.optimization import fuse


def fold_batch_norms(model):
    """A copy of `model` (in eval mode) in which each BatchNorm that directly follows a convolution is
    folded into that convolution's weights and bias: one pass over the activations less per pair,
    the same function up to float rounding (DeepLabv2: all 104 BNs; WRN-38, whose blocks put BN
    before the convolution, only the pairs in that order). For evaluation only: the result is a
    traced graph module, and training needs the BN layers."""
    with torch.no_grad():
        return fuse(model.eval())
