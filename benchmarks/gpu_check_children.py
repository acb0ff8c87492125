"""The GPU check's child processes (`python benchmarks/gpu_check.py --child KIND ...`): each step of
benchmarks/gpu_check.py runs one of these in its own process, with its own time limit, and reads
the JSON lines it prints."""
import json
import os
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)


def child_environment():
    """Print the environment as one JSON line."""
    import platform

    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpu_count": os.cpu_count(), "cpu": _cpu_model(), "cuda_available": torch.cuda.is_available(),
            "gpus": []}
    if info["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["gpus"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                                 "capability": f"sm_{props.major}{props.minor}",
                                 "multiprocessors": props.multi_processor_count})
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
        # what "fp32" means in the benchmarks: PyTorch's defaults, which let cuDNN convolutions use TF32
        info["tf32"] = {"cudnn_conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
        try:
            info["nccl"] = ".".join(str(v) for v in torch.cuda.nccl.version())
        except Exception:  # a build without NCCL
            info["nccl"] = None
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=15)
            info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    print(json.dumps(info), flush=True)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _write_part(job):
    folder, num_train, num_val, seed, size = job
    from data.synthetic import write_dataset
    write_dataset(folder, num_train, num_val, seed=seed, max_size=size, min_size=size)


def child_data(folder, num_train, num_val, size):
    """Write the synthetic set (data/synthetic.py, every image size x size) with several processes,
    each its own seed and part, then merge the parts into one VOC-layout folder. A folder already
    written with the same settings is reused."""
    import multiprocessing
    sys.path.insert(0, ROOT)
    spec = {"num_train": num_train, "num_val": num_val, "size": size, "format": 1}
    marker = os.path.join(folder, "gpu_check_data.json")
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f) == spec:
                print(json.dumps({"key": "data", "data_dir": folder, "reused": True}), flush=True)
                return
    shutil.rmtree(folder, ignore_errors=True)
    import data.synthetic  # noqa: F401  (before the fork: the parts do not import it again)
    parts = max(1, min(os.cpu_count() or 1, 16, num_train // 32))
    jobs = [(os.path.join(folder, f"part{k}"), num_train // parts + (k < num_train % parts),
             num_val // parts + (k < num_val % parts), 1000 + k, size) for k in range(parts)]
    if parts == 1:
        _write_part(jobs[0])
    else:
        with multiprocessing.get_context("fork").Pool(parts) as pool:
            pool.map(_write_part, jobs)
    for sub in ("JPEGImages", "SegmentationClassAug", "lists"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for split in ("train_aug", "val"):
        ids = []
        for k, (part, *_) in enumerate(jobs):
            with open(os.path.join(part, "lists", f"{split}.txt")) as f:
                for name in (line.strip() for line in f if line.strip()):
                    new = f"p{k:02d}_{name}"
                    os.replace(os.path.join(part, "JPEGImages", name + ".jpg"),
                               os.path.join(folder, "JPEGImages", new + ".jpg"))
                    os.replace(os.path.join(part, "SegmentationClassAug", name + ".png"),
                               os.path.join(folder, "SegmentationClassAug", new + ".png"))
                    ids.append(new)
        with open(os.path.join(folder, "lists", f"{split}.txt"), "w") as f:
            f.writelines(i + "\n" for i in ids)
    shutil.copy(os.path.join(jobs[0][0], "classes.txt"), os.path.join(folder, "classes.txt"))
    for part, *_ in jobs:
        shutil.rmtree(part)
    with open(marker, "w") as f:
        json.dump(spec, f)
    print(json.dumps({"key": "data", "data_dir": folder, "reused": False, "parts": parts}), flush=True)


def _bench_train(argv):
    sys.path[:0] = [ROOT, BENCH_DIR]
    import bench_train
    args = bench_train.parse(argv)
    amp, channels_last = (args.one or "bf16,1").split(",")
    return bench_train, args, amp, channels_last == "1"


def child_compile(argv):
    """bench_train.py's s4GAN row with the segmenter compiled (torch.compile, default mode, in place:
    the module keeps its type and parameter names, so the optimizer groups are unchanged). The
    compilation happens during the warm-up iterations."""
    bench_train, args, amp, channels_last = _bench_train(argv)
    import model
    build = model.build_segmenter

    def compiled(*a, **k):
        segmenter = build(*a, **k)
        segmenter.compile()
        return segmenter

    model.build_segmenter = compiled  # bench_train.run_one imports it from the package when it runs
    row = bench_train.run_one(args, amp, channels_last)
    row["compile"] = "segmenter"
    print(json.dumps(row), flush=True)


def child_profile(argv):
    print(json.dumps(profile_row(argv)), flush=True)


def profile_row(argv):
    """bench_train.py's s4GAN row under torch.profiler: after the warm-up, one profiler warm-up
    iteration and the rest of the timed iterations recorded. The parts the speed work asks about are
    labelled: the loaders' next batch, the logits' upsampling, and the optimizers' steps (which
    PyTorch labels itself). Returns the row and the summary. (It patches bench_train and the step for
    the rest of the process.)"""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    bench_train, args, amp, channels_last = _bench_train(argv)
    from data.sampler import BatchStream
    from methods import s4gan

    warmup = 1 if args.iters > 1 else 0
    active = args.iters - warmup
    on_cuda = torch.cuda.is_available() and args.device != "cpu"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    prof = profile(activities=activities, schedule=schedule(wait=args.warmup, warmup=warmup, active=active, repeat=1))

    def labelled(function, label):
        def wrapper(*a, **k):
            with record_function(label):
                return function(*a, **k)
        return wrapper

    BatchStream.__next__ = labelled(BatchStream.__next__, "loaders: next batch")
    s4gan.upsample = labelled(s4gan.upsample, "logits upsampling (forward)")
    s4gan.S4GANStep.__call__ = labelled(s4gan.S4GANStep.__call__, "s4GAN step")
    sync = bench_train.sync

    def sync_and_step(device):  # called once per iteration, after the step
        sync(device)
        prof.step()

    bench_train.sync = sync_and_step
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*warmup.*")  # no profiler warm-up in smoke runs
        with prof:
            row = bench_train.run_one(args, amp, channels_last)
    return {"row": row, "profile": summarise_profile(prof.key_averages(), active, on_cuda)}


def child_original(argv):
    print(json.dumps(original_row(argv)), flush=True)


def original_row(argv):
    """The authors' train_s4GAN.py loop timed on this machine's device, in fp32 (their code has no
    AMP), through tests/crosscheck/driver.py (which lets their code run on today's PyTorch; its
    transfers to the GPU stay real there). The same batch from the benchmarks' data is served to their
    three loaders at every iteration, so no loading is timed; S's update is a per-tensor loop as
    PyTorch 0.4's SGD ran it. Median seconds between iteration starts (device synchronised) over
    --iters after --warmup; the last iteration (it saves a checkpoint) is not timed."""
    import argparse
    import tempfile

    import torch
    sys.path[:0] = [ROOT, BENCH_DIR]
    from common import device_name, median
    from data.voc import VOCSegmentation
    from utils.distributed import choose_device
    p = argparse.ArgumentParser()
    for name in ("--batch-size", "--crop", "--iters", "--warmup"):
        p.add_argument(name, type=int, required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--original", required=True)
    args = p.parse_args(argv)
    device = choose_device(args.device)
    train_list = os.path.join(args.data_dir, "lists", "train_aug.txt")
    dataset = VOCSegmentation(args.data_dir, train_list, (args.crop, args.crop))
    items = [dataset[k % len(dataset)] for k in range(args.batch_size)]
    images, labels, sizes, names, indices = zip(*items)
    batch = (torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels)).float(),  # their VOC loader's
             torch.from_numpy(np.stack(sizes)), list(names), torch.as_tensor(indices))         # labels are floats
    steps = args.warmup + args.iters + 1
    with tempfile.TemporaryDirectory(prefix="gpu_check_original_") as work:
        torch.save({}, os.path.join(work, "none.pth"))  # their initial weights stay (the time does not depend on them)
        out = run_original_driver(args.original, "s4gan_timed", {
            "argv": ["--dataset", "pascal_voc", "--data-dir", args.data_dir, "--data-list", train_list,
                     "--batch-size", args.batch_size, "--input-size", f"{args.crop},{args.crop}", "--num-steps", steps,
                     "--save-pred-every", 10**9, "--restore-from", os.path.join(work, "none.pth"),
                     "--checkpoint-dir", os.path.join(work, "checkpoints")],
            "batch": batch, "num_steps": steps, "cuda": device.type == "cuda", "workdir": work}, work)
    durations = np.diff(out["starts"])[args.warmup:args.warmup + args.iters]
    sec = median(list(durations))
    return {"bench": "original", "script": "train_s4GAN.py", "device": device_name(device), "torch": torch.__version__,
            "model": "deeplabv2-resnet101", "batch": args.batch_size, "images_per_iter": 3 * args.batch_size,
            "crop": str(args.crop), "amp": "off", "iters": args.iters, "sec_per_iter": round(float(sec), 4),
            "images_per_sec": round(3 * args.batch_size / sec, 2),
            "printed_iterations": out["stdout"].count("iter = ")}


def run_original_driver(checkout, task, spec, folder, timeout=3600):
    """Run one task of tests/crosscheck/driver.py (the crosscheck's program that runs the authors'
    code) on the checkout, as a program of its own, as bench_eval_original.py does: the benchmarks
    import nothing from the tests. Its input is `spec` plus this process's thread count, which the
    driver process also gets as OMP_NUM_THREADS; returns what it recorded."""
    import torch
    os.makedirs(folder, exist_ok=True)
    in_path, out_path = os.path.join(folder, f"{task}.in.pt"), os.path.join(folder, f"{task}.out.pt")
    torch.save({"threads": torch.get_num_threads(), **spec}, in_path)
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "crosscheck", "driver.py"), checkout, task,
                           in_path, out_path], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the original's code failed in task {task}:\n{proc.stderr[-4000:]}")
    result = torch.load(out_path, weights_only=False)
    os.remove(out_path)
    return result


def child_smoke(spec):
    """--smoke: write the data, then run every row in this process; one JSON line per row (its key
    and result, or the error)."""
    import importlib
    spec = json.loads(spec)
    t0 = time.monotonic()
    child_data(*spec["data"])
    print(json.dumps({"key": "data seconds", "seconds": round(time.monotonic() - t0, 1)}), flush=True)
    sys.path[:0] = [ROOT, BENCH_DIR]
    for row in spec["rows"]:
        t0 = time.monotonic()
        try:
            if row["kind"] == "profile":
                out = profile_row(row["argv"])
            elif row["kind"] == "original":
                out = {"row": original_row(row["argv"][:row["argv"].index("--one")])}
            else:
                module = importlib.import_module(row["script"][:-3])
                args = module.parse(row["argv"])
                amp, channels_last, *batch = args.one.split(",")
                out = {"row": module.run_one(args, amp, channels_last == "1", *(int(b) for b in batch))}
            print(json.dumps({"key": row["key"], "seconds": round(time.monotonic() - t0, 1), **out}), flush=True)
        except Exception as exc:  # reported in the row; the next rows still run
            print(json.dumps({"key": row["key"], "seconds": round(time.monotonic() - t0, 1),
                              "error": f"failed: {type(exc).__name__}: {exc}"[:300]}), flush=True)


def summarise_profile(events, iterations, on_cuda):
    """Per iteration: the labelled parts (host and device milliseconds), the device's busy time, and
    the operators that take the most device time (CPU time on a CPU)."""
    def get(event, *names):
        for name in names:
            value = getattr(event, name, None)
            if value is not None:
                return float(value)
        return 0.0

    def device_total(e):
        return get(e, "device_time_total", "cuda_time_total")

    def device_self(e):
        return get(e, "self_device_time_total", "self_cuda_time_total")

    def is_part(key):
        return key in ("s4GAN step", "loaders: next batch", "logits upsampling (forward)") or \
            key.startswith(("Optimizer.step#", "Optimizer.zero_grad#"))

    def on_device(e):
        return "CUDA" in str(getattr(e, "device_type", ""))

    ms = 1000.0 * iterations
    parts = {}
    for e in events:  # a labelled part comes twice on a GPU: its host range, and its span on the GPU
        if is_part(e.key):
            part = parts.setdefault(e.key, {"part": e.key, "calls": 0.0, "host_ms": 0.0, "device_ms": 0.0})
            if not on_device(e):
                part["calls"] = round(e.count / iterations, 1)
                part["host_ms"] = round(e.cpu_time_total / ms, 2)
            part["device_ms"] = max(part["device_ms"], round(device_total(e) / ms, 2))
    parts = sorted(parts.values(), key=lambda p: -p["host_ms"])
    operators = [e for e in events if e.key.startswith("aten::")]
    cost = device_self if on_cuda else (lambda e: float(e.self_cpu_time_total))
    total = sum(cost(e) for e in operators) or 1.0
    top = sorted(operators, key=cost, reverse=True)[:12]
    busy = None
    if on_cuda:  # kernels and copies: events of device type CUDA, not the labelled parts' spans around them
        busy = sum(device_self(e) for e in events if on_device(e) and not is_part(e.key)) / ms
    upsampling = sum(cost(e) for e in operators if "upsample" in e.key) / ms
    return {"iterations": iterations, "measure": "device" if on_cuda else "cpu",
            "device_busy_ms": None if busy is None else round(busy, 2),
            "upsampling_ms": round(upsampling, 2), "parts": parts,
            "top_operators": [{"operator": e.key, "calls": round(e.count / iterations, 1),
                               "ms": round(cost(e) / ms, 2), "share": round(cost(e) / total, 4)} for e in top]}


def run_child(argv):
    kind, rest = argv[0], argv[1:]
    if kind == "env":
        child_environment()
    elif kind == "data":
        folder, num_train, num_val, size = rest
        child_data(folder, int(num_train), int(num_val), int(size))
    elif kind == "compile":
        child_compile(rest)
    elif kind == "profile":
        child_profile(rest)
    elif kind == "original":
        child_original(rest)
    elif kind == "smoke":
        child_smoke(rest[0])
    else:
        raise SystemExit(f"unknown child {kind}")
