"""Run by test_distributed under `torchrun --nproc_per_node=2`: one S4GANStep under DDP (gloo, CPU)
on this rank's half of a fixed batch; rank 0 saves the (all-reduced) gradients."""
import argparse
import sys

import torch

from methods.s4gan import S4GANStep
from engine.setup import prepare_module
from model import build_discriminator, build_segmenter
from utils.amp import Precision
from utils.distributed import cleanup, init_environment


def fixed_batches(n=4, size=33, classes=3):
    """Three batches (labeled, unlabeled, real); every image holds the batch's global min and max, so
    the min/max scaling of D's image input does not depend on how the batch is split."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        x = torch.randn(n, 3, size, size, generator=g) * 40
        x[:, 0, 0, 0], x[:, 0, 0, 1] = -1000.0, 1000.0  # beyond any randn * 40 value
        y = torch.randint(0, classes, (n, size, size), generator=g)  # no ignored pixel
        batches.append((x, y))
    return batches


def build(classes=3):
    torch.manual_seed(0)
    seg, d = build_segmenter("resnet18", classes).eval(), build_discriminator(classes).eval()  # no batch statistics
    return seg, d


def make_step(seg, d):
    cpu = torch.device("cpu")
    return S4GANStep(seg, d, torch.optim.SGD([p for p in seg.parameters() if p.requires_grad], lr=0.0),
                     torch.optim.SGD(d.parameters(), lr=0.0), Precision("off", cpu), num_classes=3,
                     ignore_label=255, input_size=(33, 33), lambda_fm=0.0, lambda_st=0.0, threshold_st=0.6, device=cpu)


def gradients(seg, d):
    return {**{"S." + n: p.grad.clone() for n, p in seg.named_parameters() if p.grad is not None},
            **{"D." + n: p.grad.clone() for n, p in d.named_parameters() if p.grad is not None}}


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args(argv).out
    env = init_environment("cpu")
    seg, d = build()
    wrapped_seg, seg = prepare_module(seg, env)
    wrapped_d, d = prepare_module(d, env)
    half = slice(2 * env.rank, 2 * env.rank + 2)
    batches = [(x[half], y[half]) for x, y in fixed_batches()]
    make_step(wrapped_seg, wrapped_d)(1, **dict(zip(S4GANStep.streams, batches)))
    if env.is_main:
        torch.save(gradients(seg, d), out)
    cleanup(env)


if __name__ == "__main__":
    main(sys.argv[1:])
