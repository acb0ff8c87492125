"""Evaluation speed: one JSON line per configuration (amp x memory format) and batch size.

    python benchmarks/bench_eval.py                                   # small CPU defaults
    python benchmarks/bench_eval.py --backbone resnet101 --batch-sizes 1,8 --amp off,bf16 \
        --channels-last off,on --images 200                          # on a GPU

Runs the real evaluator (VOC protocol: pad to 505, upsample, crop, argmax, bincount confusion on the
device, loader workers) and, on the same batches already on the device, the model alone (forward,
upsampling, argmax). Reports images per second and the overhead share (metric + I/O time not hidden
by the workers) relative to the model time, each the best of --repeats alternating passes.
"""
import argparse
import json
import os
import sys

import torch
from torch.utils.data import DataLoader

from common import (configurations, data_dir_or_synthetic, device_name, peak_memory_mb, reset_peak, run_configs,
                    sync, timer)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--batch-sizes", default="1,4")
    p.add_argument("--amp", default="off")
    p.add_argument("--channels-last", default="off")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--num-workers", type=int, default=None, help="default: evaluate.py's (engine/options.py)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes of each kind; the best is kept")
    p.add_argument("--data-dir", default=None, help="VOC-layout folder with lists/val.txt (default: synthetic)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_one(args, amp, channels_last, batch_size):
    from data import get_dataset
    from data.config import DataConfig
    from utils.tensors import upsample
    from engine.evaluator import DeviceNormalizer, eval_collate, evaluate, uint8_batches
    from engine.options import eval_num_workers
    from model import build_segmenter
    from utils.amp import Precision
    from utils.distributed import choose_device

    device = choose_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.num_workers is None:
        args.num_workers = eval_num_workers(device)
    root = data_dir_or_synthetic(args.data_dir, num_val=max(24, args.images))
    dataset = get_dataset("folder").build_val(DataConfig("folder", root, args.num_classes, 255,
                                                         data_list=os.path.join(root, "lists", "val.txt")))
    dataset.ids = dataset.ids[: args.images]
    uint8_batches(dataset)  # as evaluate.py: uint8 images, normalised on the device
    normalize = DeviceNormalizer(dataset, device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_segmenter(args.backbone, args.num_classes).to(device, memory_format=layout).eval()
    precision = Precision(amp, device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=args.num_workers, collate_fn=eval_collate,
                        pin_memory=device.type == "cuda", persistent_workers=args.num_workers > 0)
    evaluate(model, loader, args.num_classes, device, precision, channels_last)  # warm-up (cudnn, workers)
    batches = [[(normalize(g[0].to(device), g[2].to(device)), g[2]) for g in groups] for groups in loader]
    sync(device)
    reset_peak(device)

    def whole():
        evaluate(model, loader, args.num_classes, device, precision, channels_last)

    def model_only():
        with torch.no_grad():
            for groups in batches:
                for images, _ in groups:
                    x = images.contiguous(memory_format=layout)
                    with precision.autocast():
                        logits = model(x)
                    upsample(logits.float(), x.shape[-2:]).argmax(1)

    # alternate the two and keep the best of each: robust to noise from other processes
    total, model_time = float("inf"), float("inf")
    for _ in range(args.repeats):
        for fn in (whole, model_only):
            sync(device)
            t0 = timer()
            fn()
            sync(device)
            elapsed = timer() - t0
            if fn is whole:
                total = min(total, elapsed)
            else:
                model_time = min(model_time, elapsed)
    n = len(dataset)
    return {"bench": "eval", "device": device_name(device), "torch": torch.__version__,
            "model": f"deeplabv2-{args.backbone}", "batch": batch_size, "input": list(dataset[0][0].shape[:2]),
            "amp": amp, "channels_last": channels_last, "num_workers": args.num_workers, "images": n,
            "sec_per_image": round(total / n, 4), "images_per_sec": round(n / total, 2),
            "model_sec_per_image": round(model_time / n, 4),
            "overhead_share": round((total - model_time) / model_time, 4), "peak_mem_mb": peak_memory_mb(device)}


def main(argv=None):
    args = parse(argv)
    argv = argv if argv is not None else sys.argv[1:]
    if args.one:
        amp, channels_last, batch = args.one.split(",")
        print(json.dumps(run_one(args, amp, channels_last == "1", int(batch))), flush=True)
        return
    for batch in args.batch_sizes.split(","):
        configs = [(a, c == "on") for a, c in configurations(args.amp, args.channels_last)]
        run_configs(os.path.abspath(__file__), argv, [(f"{a}", c) for a, c in configs], suffix=f",{batch}")


if __name__ == "__main__":
    main()
