"""Training-step speed and memory: one JSON line per configuration (amp x memory format).

    python benchmarks/bench_train.py                       # small CPU defaults, about a minute
    python benchmarks/bench_train.py --backbone resnet101 --batch-size 8 --crop 321 \
        --amp off,bf16 --channels-last off,on --iters 20   # the real s4GAN step on a GPU

Uses the real pieces: the VOC-layout loader with workers (a synthetic set unless --data-dir), the
three seeded loaders, DeepLabv2 + D and the s4GAN step (or the supervised step with --mode full).
Reports the median seconds per iteration over the timed iterations after warm-up (synchronised on
CUDA), images per second, peak memory, and the share of time spent waiting for data.
"""
import argparse
import os

import numpy as np
import torch

from common import bench_main, data_dir_or_synthetic, device_name, median, peak_memory_mb, reset_peak, sync, timer


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default="s4gan", choices=("s4gan", "full"))
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default="deeplabv2", help="deeplabv2, deeplabv3p (ResNet) or deeplabv3p_wrn38")
    p.add_argument("--backbone", default=None,
                   help="default: resnet18 for deeplabv2 (a CPU size), resnet50 for deeplabv3p, wrn38 for deeplabv3p_wrn38")
    p.add_argument("--wrn-width-mult", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=2, help="per loader")
    p.add_argument("--crop", default="97", help="crop size: N or H,W (Cityscapes: 256,512)")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--amp", default="off", help="comma list of off,bf16,fp16")
    p.add_argument("--channels-last", default="off", help="comma list of off,on")
    p.add_argument("--iters", type=int, default=5, help="timed iterations")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--sgd-mode", default="legacy", choices=("legacy", "standard"))
    p.add_argument("--data-dir", default=None, help="VOC-layout folder with lists/train_aug.txt (default: synthetic)")
    p.add_argument("--count-flops", action="store_true",
                   help="after the timed iterations, one more (untimed) counted by torch.utils.flop_counter: "
                        "the row gets the step's FLOPs, per network, and the achieved TFLOP/s")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.crop_hw = tuple(int(v) for v in args.crop.split(",")) * (1 if "," in args.crop else 2)
    if args.backbone is None:
        args.backbone = {"deeplabv3p_wrn38": "wrn38", "deeplabv3p": "resnet50"}.get(args.model, "resnet18")
    return args


def run_one(args, amp, channels_last):
    from data.sampler import BatchStream, SeededEpochSampler
    from data.voc import VOCSegmentation
    from methods.s4gan import S4GANStep
    from methods.supervised import SupervisedStep
    from model import build_discriminator, build_segmenter
    from utils.amp import Precision
    from utils.distributed import choose_device
    from utils.optim import segmenter_optimizer
    from utils.schedules import apply_poly_lr
    from utils.seeding import init_worker

    device = choose_device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    root = data_dir_or_synthetic(args.data_dir, max_size=max(160, *args.crop_hw))
    dataset = VOCSegmentation(root, os.path.join(root, "lists", "train_aug.txt"), args.crop_hw,
                              num_classes=args.num_classes)
    names = ["labeled", "unlabeled", "real"] if args.mode == "s4gan" else ["labeled"]
    streams = [BatchStream(dataset, SeededEpochSampler(np.arange(len(dataset)), 0, k), args.batch_size,
                           args.num_workers, pin_memory=device.type == "cuda", worker_init_fn=init_worker)
               for k, _ in enumerate(names)]
    layout = torch.channels_last if channels_last else torch.contiguous_format
    options = {"wrn_width_mult": args.wrn_width_mult} if args.model == "deeplabv3p_wrn38" else {}
    model = build_segmenter(args.backbone, args.num_classes, args.model, **options).to(device, memory_format=layout).train()
    optimizer = segmenter_optimizer(model, 2.5e-4, 0.9, 5e-4, args.sgd_mode)
    precision = Precision(amp, device)
    crop = args.crop_hw
    if args.mode == "s4gan":
        d = build_discriminator(args.num_classes).to(device, memory_format=layout).train()
        optimizer_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.9, 0.99))
        step = S4GANStep(model, d, optimizer, optimizer_d, precision, num_classes=args.num_classes,
                         ignore_label=255, input_size=crop, lambda_fm=0.1, lambda_st=1.0, threshold_st=0.6,
                         device=device, channels_last=channels_last)
    else:
        step = SupervisedStep(model, optimizer, precision, input_size=crop, ignore_label=255, device=device,
                              channels_last=channels_last)
    waits, totals = [], []
    for i in range(args.warmup + args.iters):
        if i == args.warmup:
            reset_peak(device)
        apply_poly_lr(optimizer, 2.5e-4, i, 40000, 0.9)
        t0 = timer()
        batches = [next(s) for s in streams]
        t1 = timer()
        step(i, **dict(zip(names, batches)))
        sync(device)
        t2 = timer()
        if i >= args.warmup:
            waits.append(t1 - t0)
            totals.append(t2 - t0)
    sec = median(totals)
    images = args.batch_size * len(names)
    peak = peak_memory_mb(device)
    flops = count_flops(step, args.warmup + args.iters, names, streams, sec) if args.count_flops else {}
    return {"bench": "train", "mode": args.mode, "device": device_name(device), "torch": torch.__version__,
            "model": f"{args.model}-{args.backbone}", "batch": args.batch_size, "images_per_iter": images,
            "crop": args.crop, "amp": amp, "channels_last": channels_last, "sgd_mode": args.sgd_mode,
            "num_workers": args.num_workers, "iters": args.iters, "sec_per_iter": round(sec, 4),
            "images_per_sec": round(images / sec, 2), "peak_mem_mb": peak,
            "data_wait_share": round(sum(waits) / sum(totals), 4), **flops}


def count_flops(step, i, names, streams, sec_per_iter):
    """FLOPs of one step (forward and backward of every network; a multiply-add counts 2), by
    torch.utils.flop_counter's formulas for convolutions and matrix products (element-wise
    operations are not counted), split by network, and the TFLOP/s that the timed median achieved."""
    from torch.utils.flop_counter import FlopCounterMode
    batches = [next(s) for s in streams]
    with FlopCounterMode(display=False) as counter:
        step(i, **dict(zip(names, batches)))
    networks = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()
                if name != "Global" and "." not in name}
    total = counter.get_total_flops()
    return {"gflops_per_iter": round(total / 1e9, 1), "gflops_by_network": {k: round(v / 1e9, 1) for k, v in networks.items()},
            "tflops_per_sec": round(total / sec_per_iter / 1e12, 2)}


def main(argv=None):
    bench_main(__file__, parse(argv), argv, run_one)


if __name__ == "__main__":
    main()
