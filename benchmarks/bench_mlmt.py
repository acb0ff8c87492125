"""MLMT training-step speed and memory: one JSON line per configuration (amp x memory format).

    python benchmarks/bench_mlmt.py                          # small CPU defaults (ResNet-18, 64x64)
    python benchmarks/bench_mlmt.py --backbone resnet101 --image-size 320 --batch-size-lab 16 \
        --batch-size-unlab 80 --amp off,bf16 --channels-last off,on --iters 20 --warmup 5 \
        --num-workers 8                                      # the paper's step, on a GPU

Uses the real pieces: the seeded labeled and unlabeled streams of ClassifierImages (plain views;
plain + augmented view pairs) with workers over a synthetic VOC-layout set (unless --data-dir),
image-level labels derived from its PNGs, student + teacher ResNets and the MLMT step (BCE, the
cosine consistency at full weight, SGD-Nesterov, the EMA update). Reports the median seconds per
iteration over the timed iterations after warm-up (synchronised on CUDA), images per second
(labeled + twice the unlabeled: both views), peak memory (CUDA: max allocated; CPU: the process's
peak RSS) and the share of time spent waiting for data.
"""
import argparse
import os

import numpy as np
import torch

from common import bench_main, data_dir_or_synthetic, device_name, median, peak_memory_mb, reset_peak, sync, timer


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--backbone", default="resnet18", choices=("resnet18", "resnet50", "resnet101"))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size-lab", type=int, default=4)
    p.add_argument("--batch-size-unlab", type=int, default=20)
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--amp", default="off", help="comma list of off,bf16,fp16")
    p.add_argument("--channels-last", default="off", help="comma list of off,on")
    p.add_argument("--iters", type=int, default=5, help="timed iterations")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--data-dir", default=None, help="VOC-layout folder with lists/train_aug.txt (default: synthetic)")
    p.add_argument("--augment-on-device", action="store_true",
                   help="the unlabeled views made on the device (train_mlmt.py --augment-on-device)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_one(args, amp, channels_last):
    from methods.mlmt.labels import ClassifierImages, ImageLabels, derive_labels
    from data.sampler import BatchStream, SeededEpochSampler
    from methods.mlmt.objective import MLMTStep
    from model.classifier import build_classifier
    from utils.amp import Precision
    from utils.distributed import choose_device
    from utils.seeding import init_worker

    device = choose_device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    root = data_dir_or_synthetic(args.data_dir, num_train=max(64, args.batch_size_unlab + args.batch_size_lab))
    with open(os.path.join(root, "lists", "train_aug.txt")) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    labels = derive_labels(ids, [os.path.join(root, "SegmentationClassAug", i + ".png") for i in ids],
                           args.num_classes, 255, (0,), log=lambda *_: None)
    split = ImageLabels(ids, [os.path.join(root, "JPEGImages", i + ".jpg") for i in ids], labels, "bench")
    pin = device.type == "cuda"
    streams = {name: BatchStream(ClassifierImages(split, name, args.image_size,
                                                  device_augment=args.augment_on_device and name == "unlabeled"),
                                 SeededEpochSampler(np.arange(len(ids)), 0, k), batch, args.num_workers,
                                 pin_memory=pin, worker_init_fn=init_worker)
               for k, (name, batch) in enumerate((("labeled", args.batch_size_lab),
                                                  ("unlabeled", args.batch_size_unlab)))}
    layout = torch.channels_last if channels_last else torch.contiguous_format
    student = build_classifier(args.backbone, args.num_classes).to(device, memory_format=layout).train()
    teacher = build_classifier(args.backbone, args.num_classes).to(device, memory_format=layout).train()
    teacher.requires_grad_(False)
    optimizer = torch.optim.SGD(student.parameters(), 3e-2, momentum=0.9, weight_decay=1e-5, nesterov=True)
    step = MLMTStep(student, teacher, optimizer, Precision(amp, device), num_epochs=100, burn_in_epochs=10,
                    w_cons=1.0, ema_decay=0.999, device=device, channels_last=channels_last,
                    augment_on_device=args.augment_on_device)
    waits, totals = [], []
    for i in range(args.warmup + args.iters):
        if i == args.warmup:
            reset_peak(device)
        t0 = timer()
        batches = {name: next(s) for name, s in streams.items()}
        t1 = timer()
        step(i, 60, **batches)  # epoch 60: the consistency term at its full weight
        sync(device)
        t2 = timer()
        if i >= args.warmup:
            waits.append(t1 - t0)
            totals.append(t2 - t0)
    sec = median(totals)
    images = args.batch_size_lab + 2 * args.batch_size_unlab
    return {"bench": "mlmt", "device": device_name(device), "torch": torch.__version__,
            "model": f"{args.backbone} student + teacher", "image_size": args.image_size,
            "batch_lab": args.batch_size_lab, "batch_unlab": args.batch_size_unlab, "amp": amp,
            "channels_last": channels_last, "augment_on_device": args.augment_on_device,
            "num_workers": args.num_workers, "iters": args.iters,
            "sec_per_iter": round(sec, 4), "images_per_sec": round(images / sec, 2),
            "peak_mem_mb": peak_memory_mb(device), "data_wait_share": round(sum(waits) / sum(totals), 4)}


def main(argv=None):
    bench_main(__file__, parse(argv), argv, run_one)


if __name__ == "__main__":
    main()
