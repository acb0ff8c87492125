"""Shared pieces of the benchmarks: data, timing, memory, one child process per configuration."""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def data_dir_or_synthetic(path, num_train=64, num_val=24, max_size=160):
    """--data-dir if given (VOC layout with lists/), else a synthetic set in a temporary folder."""
    if path:
        return path
    from data.synthetic import write_dataset
    folder = os.path.join(tempfile.gettempdir(), f"semisup_seg_bench_{num_train}_{num_val}_{max_size}")
    if not os.path.isfile(os.path.join(folder, "lists", "val.txt")):
        write_dataset(folder, num_train, num_val, seed=0, max_size=max_size, min_size=max(16, max_size * 3 // 5))
    return folder


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device):
    """CUDA: max_memory_allocated; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def run_configs(script, base_argv, configs, suffix=""):
    """Run `script --one amp,channels_last[suffix] ...` per configuration in a fresh process (clean peak memory)."""
    for amp, channels_last in configs:
        argv = [sys.executable, script, *base_argv, "--one", f"{amp},{int(channels_last)}{suffix}"]
        proc = subprocess.run(argv, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(json.dumps({"amp": amp, "channels_last": channels_last, "error": proc.stderr.strip()[-500:]}), flush=True)
        else:
            print(lines[-1], flush=True)


def bench_main(script, args, argv, run_one):
    """A benchmark's main(): with --one amp,channels_last, measure that configuration here and print
    its JSON line; otherwise run every --amp x --channels-last configuration in its own process."""
    if args.one:
        amp, channels_last = args.one.split(",")
        print(json.dumps(run_one(args, amp, channels_last == "1")), flush=True)
        return
    configs = [(a, c == "on") for a, c in configurations(args.amp, args.channels_last)]
    run_configs(os.path.abspath(script), list(argv if argv is not None else sys.argv[1:]), configs)


def configurations(amps, layouts):
    return [(a, c) for a in amps.split(",") for c in (layouts.split(","))]


def timer():
    return time.perf_counter()
