"""The GPU check: every CUDA path exercised and measured in one command, with a one-page report.

    python benchmarks/gpu_check.py --out gpu_check            # on a GPU: under 8 minutes on one H100
    python benchmarks/gpu_check.py --out /tmp/gc --smoke      # tiny sizes, on a CPU: checks the script

A GPU comes to this project only now and then, for minutes; this script is what to run first then.
In order, each step a subprocess with its own time limit (a hang costs that step only), and all of
them inside a total budget (--budget, 470 s): a step never gets more than the time left, and one
that would get under 15 s is reported as not run.

  1. environment: the card, its memory, torch / CUDA / cuDNN / NCCL versions (on a CPU: says so);
  2. the CUDA tests: `pytest -m cuda tests/test_cuda.py` (AMP, channels-last, batched evaluation,
     CUDA -> CPU checkpoints, exact resume, SyncBatchNorm under NCCL, every trainer on the GPU),
     pass / fail / skip per test, and what they measured;
  3. the benchmark rows of benchmarks/RESULTS.md at the real sizes, on a synthetic VOC-layout set
     written to local disk (500x500 images, about VOC's largest): the s4GAN step (ResNet-101,
     batch 8 x 3 loaders, 321x321, the trainers' 4 loader workers each) in fp32, bf16, bf16 +
     channels-last (bench_train.py); evaluation at batch 1 and 8 in fp32 and bf16 + channels-last
     (bench_eval.py); the WRN-38 step (256x512, batch 8, 19 classes) and the MLMT step
     (bench_mlmt.py, if present) in bf16 + channels-last; a profile of the bf16 + channels-last
     s4GAN step (where the time goes: kernels, the legacy SGD loop, the upsampling, the loaders);
     and, with the time left, the same step with the segmenter under torch.compile;
  4. the report: DIR/gpu_report.md (tables ready for benchmarks/RESULTS.md; each speed target met,
     not met or not measured), DIR/gpu_report.json, and DIR/gpu_check.log (every step's output).

The report is rewritten after every step, so a run cut short still leaves one. Exit status: 0 when
every step ran and no test failed (whether the speed targets are met does not change it, nor does a
torch.compile row that gets too little time), 1 otherwise, 2 for a usage error (no GPU without
--smoke). --steps reruns some of the steps (the environment always runs).

--smoke runs the same steps at tiny sizes (ResNet-18, 33x33 crops, one iteration, two images), the
data and every benchmark row in one process to spare the start-ups: on a CPU the whole script takes
well under a minute, the CUDA tests are reported as skipped and the targets as not measured.
--device cpu hides any GPU from every step (what the test suite uses).
"""
import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ElementTree

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)

TOTAL_BUDGET_S = 470  # the whole check on one H100, start-up of every process included: under 8 minutes
SMOKE_BUDGET_S = 240  # a safety net only: on a CPU the smoke run takes well under a minute
MIN_STEP_S = 15       # a step is not started with less than this left of the budget

# Time limit of each step (seconds), and what it should take on one H100, as planned:
LIMITS = {
    "environment": 30,   # ~5 s: import torch, query the card
    "cuda tests": 200,   # ~100 s: 11 tests, ResNet-101 at small crops; 4 trainers x 3 iterations
    "data": 60,          # ~5 s: 336 synthetic 500x500 images, written by 7 processes
    "train": 75,         # ~35 s per row: start-up, cuDNN autotuning, 5 warm-up + 15 timed iterations
    "eval": 45,          # ~20 s per row: warm-up pass, then 3 timed passes of each kind over 96 images
    "wrn38": 75,         # ~35 s: 3 warm-up + 10 timed iterations
    "mlmt": 75,          # ~35 s: 3 warm-up + 10 timed iterations of 176 images
    "profile": 90,       # ~40 s: 5 warm-up, 1 profiler warm-up, 3 profiled iterations, then the trace's tables
    "compile": 150,      # whatever is left, up to this: compiling ResNet-101's forward and backward
    "smoke": 180,        # --smoke: the data and every benchmark row in one process (~20 s on 2 CPU cores)
}
COMPILE_MIN_S = 60  # below this much time left, torch.compile is not tried

# Sizes: the real ones (GPU) and the smoke run's. Loader workers: 4 per loader, the trainers' default.
REAL = {
    "data": {"num_train": 240, "num_val": 96, "size": 500},
    "train": ["--backbone", "resnet101", "--batch-size", "8", "--crop", "321", "--iters", "15", "--warmup", "5",
              "--num-workers", "4"],
    "eval": ["--backbone", "resnet101", "--images", "96", "--repeats", "3", "--num-workers", "4"],
    "eval_batches": (1, 8),
    "wrn38": ["--model", "deeplabv3p_wrn38", "--crop", "256,512", "--batch-size", "8", "--num-classes", "19",
              "--iters", "10", "--warmup", "3", "--num-workers", "4"],
    "mlmt": ["--backbone", "resnet101", "--image-size", "320", "--batch-size-lab", "16", "--batch-size-unlab", "80",
             "--iters", "10", "--warmup", "3", "--num-workers", "4"],
    "profile": ["--backbone", "resnet101", "--batch-size", "8", "--crop", "321", "--iters", "4", "--warmup", "5",
                "--num-workers", "4"],
    "compile": ["--backbone", "resnet101", "--batch-size", "8", "--crop", "321", "--iters", "10", "--warmup", "5",
                "--num-workers", "4"],
}
# One iteration of each, no warm-up: on a CPU without native bf16 (no AVX-512), a bf16 pass of the
# dilated ResNet-18 takes about a second whatever the crop.
SMOKE = {
    "data": {"num_train": 24, "num_val": 8, "size": 64},
    "train": ["--backbone", "resnet18", "--batch-size", "1", "--crop", "33", "--iters", "1", "--warmup", "0",
              "--num-workers", "0"],
    "eval": ["--backbone", "resnet18", "--images", "2", "--repeats", "1", "--num-workers", "0"],
    "eval_batches": (1, 2),
    "wrn38": ["--model", "deeplabv3p_wrn38", "--wrn-width-mult", "0.0625", "--crop", "32,64", "--batch-size", "2",
              "--num-classes", "19", "--iters", "1", "--warmup", "0", "--num-workers", "0"],
    "mlmt": ["--backbone", "resnet18", "--image-size", "33", "--batch-size-lab", "2", "--batch-size-unlab", "2",
             "--iters", "1", "--warmup", "0", "--num-workers", "0"],
    "profile": ["--backbone", "resnet18", "--batch-size", "1", "--crop", "33", "--iters", "1", "--warmup", "0",
                "--num-workers", "0"],
    "compile": None,
}
STEP_CHOICES = ("tests", "train", "eval", "wrn38", "mlmt", "profile", "compile")

# The speed targets (issue 15)
SPEEDUP_TARGET = 2.5     # bf16 + channels-last vs fp32, s4GAN step
DATA_WAIT_TARGET = 0.05  # share of the iteration spent waiting for the loaders, at bf16 + channels-last speed
EVAL_TARGET = 4.0        # images/s at batch 8 vs batch 1


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder for gpu_report.md, gpu_report.json, gpu_check.log")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: the whole script in well under a minute on a CPU")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                   help="auto: the GPU if there is one; cpu: hide any GPU from every step (with --smoke)")
    p.add_argument("--steps", default=",".join(STEP_CHOICES),
                   help=f"comma list of the steps after the environment (default: all: {','.join(STEP_CHOICES)})")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for the whole check (default {TOTAL_BUDGET_S}; --smoke {SMOKE_BUDGET_S})")
    p.add_argument("--data-dir", default=None,
                   help="where the benchmarks' synthetic set is written (default: a folder under the local "
                        "temporary directory, reused by a rerun)")
    args = p.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in STEP_CHOICES]
    if unknown:
        p.error(f"--steps: unknown {', '.join(unknown)} (choose from {', '.join(STEP_CHOICES)})")
    if args.budget is None:
        args.budget = SMOKE_BUDGET_S if args.smoke else TOTAL_BUDGET_S
    return args


# ====================================================================== the steps' own processes

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
    from engine import s4gan

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
    elif kind == "smoke":
        child_smoke(rest[0])
    else:
        raise SystemExit(f"unknown child {kind}")


# ====================================================================== running the steps

class Check:
    def __init__(self, args, argv):
        self.args = args
        self.sizes = SMOKE if args.smoke else REAL
        self.start = time.monotonic()
        self.deadline = self.start + args.budget
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="gpu_check_")
        self.steps, self.logs = [], []
        self.environment, self.device = None, None
        self.tests = {"status": "not run", "results": [], "notes": []}
        self.rows, self.profile, self.data = [], None, None
        self.problem = None
        self.date = datetime.date.today().isoformat()
        self.command = "python benchmarks/gpu_check.py " + shlex.join(argv)

    # ------------------------------------------------------------ processes
    def child_env(self, extra=None):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("SEMISUP_CUDA_TESTS_DEVICE", None)  # the CUDA tests run on the GPU or skip
        if self.args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        if self.args.smoke:
            env.setdefault("OMP_NUM_THREADS", "1")
        env.update(extra or {})
        return env

    def run(self, name, cmd, limit, extra_env=None):
        """Run one step's process with its limit (never beyond the budget); record and log it."""
        left = self.deadline - time.monotonic()
        shown = shlex.join(os.path.relpath(c, ROOT) if os.path.isabs(c) and c.startswith(ROOT) else c
                           for c in ["python", *cmd[1:]])
        if left < MIN_STEP_S:
            record = {"step": name, "limit_s": 0, "seconds": 0.0, "status": "not run: the time budget is spent",
                      "command": shown}
            self.steps.append(record)
            return record, "", ""
        limit = min(limit, left)
        out_path = os.path.join(self.work, f"{len(self.steps):02d}.out")
        err_path = os.path.join(self.work, f"{len(self.steps):02d}.err")
        t0 = time.monotonic()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=self.child_env(extra_env),
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=limit)
                status = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                stop_process_group(proc)
                status = f"timed out after {limit:.0f} s"
        seconds = time.monotonic() - t0
        stdout, stderr = read(out_path), read(err_path)
        record = {"step": name, "limit_s": round(limit), "seconds": round(seconds, 1), "status": status,
                  "command": shown}
        if status != "ok":  # pytest ends its output with its summary line; the others raise to stderr
            record["error"] = (stdout.strip().splitlines() or [""])[-1].strip("= ")[:300] if name == "cuda tests" \
                else last_error(stderr or stdout)
        self.steps.append(record)
        self.logs.append((record, stdout, stderr))
        return record, stdout, stderr

    # ------------------------------------------------------------ 1. environment
    def step_environment(self):
        record, stdout, _ = self.run("environment", [sys.executable, __file__, "--child", "env"],
                                     LIMITS["environment"])
        info = json_lines(stdout)
        self.environment = info[-1] if info else None
        if self.environment is None:
            self.problem = f"the environment could not be read ({record['status']}: {record.get('error', '')})"
            return
        cuda = self.environment["cuda_available"]
        if self.args.device == "cuda" and not cuda:
            self.problem = "--device cuda: no CUDA device is visible here"
        elif not cuda and not self.args.smoke:
            self.problem = ("no CUDA device here: the real sizes would take hours on a CPU; run with --smoke to "
                            "check the script")
        elif self.args.device == "cpu" and not self.args.smoke:
            self.problem = "--device cpu is for --smoke runs only"
        self.device = "cuda" if cuda else "cpu"

    # ------------------------------------------------------------ 2. the CUDA tests
    def step_tests(self):
        junit = os.path.join(self.work, "cuda_tests.xml")
        notes = os.path.join(self.work, "test_notes.jsonl")
        cmd = [sys.executable, "-m", "pytest", "-v", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider",
               f"--junitxml={junit}", "-rfEs"]
        record, stdout, _ = self.run("cuda tests", cmd, LIMITS["cuda tests"],
                                     {"GPU_CHECK_NOTES": notes, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
        results = parse_junit(junit) if os.path.isfile(junit) else parse_pytest_lines(stdout, record["status"])
        self.tests = {"status": record["status"], "results": results, "notes": json_lines(read(notes))}
        self.tests["trainers"] = [t for t in ("train_full", "train_s4GAN", "train_s4GAN_wrn38", "train_mlmt")
                                  if os.path.isfile(os.path.join(ROOT, t + ".py"))]

    # ------------------------------------------------------------ 3. benchmarks
    def data_folder(self):
        d = self.sizes["data"]
        return self.args.data_dir or os.path.join(
            tempfile.gettempdir(), f"semisup_seg_gpu_check_{d['num_train']}_{d['num_val']}_{d['size']}")

    def plan(self):
        """The benchmark rows of the selected steps, in order: (key, label, kind, script, argv, one, limit key)."""
        common = ["--device", self.device, "--data-dir", self.data_folder()]
        rows = []
        if "train" in self.args.steps:
            for key, label, one in (("s4gan-fp32", "s4GAN step fp32", "off,0"),
                                    ("s4gan-bf16", "s4GAN step bf16", "bf16,0"),
                                    ("s4gan-bf16-cl", "s4GAN step bf16 + channels-last", "bf16,1")):
                rows.append((key, label, "bench", "bench_train.py", self.sizes["train"] + common, one, "train"))
        if "eval" in self.args.steps:
            for amp, cl, name in (("off", 0, "fp32"), ("bf16", 1, "bf16-cl")):
                for batch in self.sizes["eval_batches"]:
                    rows.append((f"eval-{name}-{batch}", f"evaluation {name} batch {batch}", "bench", "bench_eval.py",
                                 self.sizes["eval"] + common, f"{amp},{cl},{batch}", "eval"))
        if "wrn38" in self.args.steps:
            rows.append(("wrn38-bf16-cl", "WRN-38 step bf16 + channels-last", "bench", "bench_train.py",
                         self.sizes["wrn38"] + common, "bf16,1", "wrn38"))
        if "mlmt" in self.args.steps:  # the MLMT benchmark belongs to another part of the project
            present = os.path.isfile(os.path.join(BENCH_DIR, "bench_mlmt.py"))
            rows.append(("mlmt-bf16-cl", "MLMT step bf16 + channels-last", "bench" if present else "missing",
                         "bench_mlmt.py", self.sizes["mlmt"] + common if present else [], "bf16,1", "mlmt"))
        if "profile" in self.args.steps:
            rows.append(("profile", "profile of the s4GAN step bf16 + channels-last", "profile", "bench_train.py",
                         self.sizes["profile"] + common, "bf16,1", "profile"))
        if "compile" in self.args.steps:
            rows.append(("s4gan-bf16-cl-compile", "s4GAN step bf16 + channels-last + torch.compile", "compile",
                         "bench_train.py", (self.sizes["compile"] or []) + common, "bf16,1", "compile"))
        return rows

    def step_benchmarks(self):
        """Real run: each row in a fresh process (its own limit, a clean peak-memory count), after the
        data. Smoke run: the data and every row in one process, to spare the start-ups."""
        rows = self.plan()
        if not rows:
            return
        d = self.sizes["data"]
        self.data = {**d, "data_dir": self.data_folder(), "status": "not run", "reused": False}
        if self.args.smoke:
            rows = [r for r in rows if r[2] != "compile"] + [r for r in rows if r[2] == "compile"]
            runnable = [r for r in rows if r[2] in ("bench", "profile")]
            spec = {"data": [self.data_folder(), d["num_train"], d["num_val"], d["size"]],
                    "rows": [{"key": r[0], "kind": r[2], "script": r[3], "argv": r[4] + ["--one", r[5]]}
                             for r in runnable]}
            record, stdout, _ = self.run("benchmarks (smoke: data and every row in one process)",
                                         [sys.executable, __file__, "--child", "smoke", json.dumps(spec)],
                                         LIMITS["smoke"])
            results = {r.get("key"): r for r in json_lines(stdout)}
            data = results.get("data")
            self.data.update(status=record["status"] if data else "failed", reused=bool(data and data["reused"]))
            for key, label, kind, script, argv, one, _ in rows:
                if kind in ("missing", "compile"):
                    self.skip_row(key, label, kind, script, argv)
                    continue
                found = results.get(key)
                found = found or {}
                failed = not found or "error" in found
                status = "ok" if not failed else found.get("error") or (
                    record["status"] if record["status"] != "ok" else "failed (no result)")
                if kind == "profile":
                    self.profile = {**found, "status": status, "argv": argv}
                else:
                    self.add_row(key, label, script, argv, {"status": status, "seconds": found.get("seconds")}, "",
                                 None if failed else found["row"])
            return
        record, stdout, _ = self.run("data", [sys.executable, __file__, "--child", "data", self.data_folder(),
                                              str(d["num_train"]), str(d["num_val"]), str(d["size"])], LIMITS["data"])
        info = json_lines(stdout)
        self.data.update(status=record["status"], reused=bool(info and info[-1]["reused"]))
        self.write_report()
        if record["status"] != "ok":
            return
        for key, label, kind, script, argv, one, limit_key in rows:
            if kind == "bench":
                cmd = [sys.executable, os.path.join(BENCH_DIR, script), *argv, "--one", one]
                record, stdout, _ = self.run(label, cmd, LIMITS[limit_key])
                self.add_row(key, label, script, argv, record, stdout)
            elif kind == "profile":
                record, stdout, _ = self.run(label, [sys.executable, __file__, "--child", "profile", *argv, "--one",
                                                     one], LIMITS["profile"])
                out = json_lines(stdout)
                self.profile = {"status": record["status"], "argv": argv, **(out[-1] if out else {})}
            elif kind == "compile" and self.deadline - time.monotonic() >= COMPILE_MIN_S + 5:
                # after other rows it gets what is left up to its limit; alone (--steps compile), all of it
                left = self.deadline - time.monotonic() - 5
                limit = left if len(rows) == 1 else min(LIMITS["compile"], left)
                record, stdout, _ = self.run(label, [sys.executable, __file__, "--child", "compile", *argv, "--one",
                                                     one], limit)
                self.add_row(key, label, script, argv, record, stdout)
            else:
                self.skip_row(key, label, kind, script, argv)
            self.write_report()

    def skip_row(self, key, label, kind, script, argv):
        if kind == "missing":
            reason = f"not tried: there is no benchmarks/{script}"
        elif self.args.smoke:
            reason = "not tried: smoke run (compiling takes minutes)"
        else:
            reason = (f"not tried: {self.deadline - time.monotonic():.0f} s left of the budget, under the "
                      f"{COMPILE_MIN_S} s that compiling ResNet-101 needs at least")
        record = {"step": label, "limit_s": 0, "seconds": 0.0, "status": reason, "command": ""}
        self.steps.append(record)
        self.add_row(key, label, script, argv, record, "")

    def add_row(self, key, label, script, argv, record, stdout, result=None):
        if result is None and stdout:
            rows = [r for r in json_lines(stdout) if "error" not in r]
            result = rows[-1] if rows else None
        status = record["status"] if result is not None or record["status"] != "ok" else "failed (no result)"
        self.rows.append({"key": key, "label": label, "script": script, "argv": argv, "status": status,
                          "seconds": record["seconds"], "result": result})

    # ------------------------------------------------------------ the whole check
    def execute(self):
        self.step_environment()
        self.write_report()
        if self.problem:
            return 2
        if "tests" in self.args.steps:
            self.step_tests()
            self.write_report()
        self.step_benchmarks()
        self.write_report(final=True)
        failed_tests = [t for t in self.tests["results"] if t["result"] in ("failed", "error", "timed out")]
        # failed, timed out, or not run for want of time; "not tried" (no benchmark, no time for compiling) is
        # fine, and so is a torch.compile row that does not finish: it only gets the time left
        compile_label = next((r[1] for r in self.plan() if r[2] == "compile"), None)
        bad_steps = [s for s in self.steps if s["status"] != "ok" and not s["status"].startswith("not tried")
                     and s["step"] != compile_label]
        bad_rows = [r for r in self.rows if r["result"] is None and not r["status"].startswith("not tried")
                    and not r["key"].endswith("compile")]
        return 1 if failed_tests or bad_steps or bad_rows else 0

    # ------------------------------------------------------------ 4. the report
    def targets(self):
        rows = {r["key"]: r for r in self.rows}
        if self.device != "cuda":
            why = "not measured (no GPU)"
            names = [f"s4GAN step: bf16 + channels-last >= {SPEEDUP_TARGET}x faster than fp32",
                     "s4GAN step: bf16 + channels-last peak memory lower than fp32",
                     f"data wait < {DATA_WAIT_TARGET:.0%} of the iteration at bf16 + channels-last speed",
                     f"evaluation: batch 8 >= {EVAL_TARGET}x the images/s of batch 1 (fp32)",
                     f"evaluation: batch 8 >= {EVAL_TARGET}x the images/s of batch 1 (bf16 + channels-last)"]
            return [{"target": n, "measured": "", "verdict": why} for n in names]

        def result(key):
            row = rows.get(key)
            return row["result"] if row and row["result"] else None

        def missing(*keys):
            for key in keys:
                row = rows.get(key)
                if row is None:
                    return "not measured (row not run)"
                if row["result"] is None:
                    return f"not measured ({row['status']})"
            return None

        out = []
        fp32, best = result("s4gan-fp32"), result("s4gan-bf16-cl")
        why = missing("s4gan-fp32", "s4gan-bf16-cl")
        name = f"s4GAN step: bf16 + channels-last >= {SPEEDUP_TARGET}x faster than fp32"
        if why:
            out.append({"target": name, "measured": "", "verdict": why})
        else:
            speedup = fp32["sec_per_iter"] / best["sec_per_iter"]
            out.append({"target": name, "value": round(speedup, 2),
                        "measured": f"{speedup:.2f}x ({fp32['sec_per_iter']:.3f} -> {best['sec_per_iter']:.3f} s/iter)",
                        "verdict": "met" if speedup >= SPEEDUP_TARGET else "not met"})
        name = "s4GAN step: bf16 + channels-last peak memory lower than fp32"
        if why:
            out.append({"target": name, "measured": "", "verdict": why})
        else:
            out.append({"target": name, "measured": f"{best['peak_mem_mb']:.0f} MB vs {fp32['peak_mem_mb']:.0f} MB",
                        "verdict": "met" if best["peak_mem_mb"] < fp32["peak_mem_mb"] else "not met"})
        name = f"data wait < {DATA_WAIT_TARGET:.0%} of the iteration at bf16 + channels-last speed"
        why = missing("s4gan-bf16-cl")
        if why:
            out.append({"target": name, "measured": "", "verdict": why})
        else:
            share = best["data_wait_share"]
            out.append({"target": name, "value": share, "measured": f"{share:.1%} ({best['num_workers']} workers "
                        f"per loader, 3 loaders)", "verdict": "met" if share < DATA_WAIT_TARGET else "not met"})
        for name_key, shown in (("fp32", "fp32"), ("bf16-cl", "bf16 + channels-last")):
            small, large = self.sizes["eval_batches"]
            name = f"evaluation: batch {large} >= {EVAL_TARGET}x the images/s of batch {small} ({shown})"
            why = missing(f"eval-{name_key}-{small}", f"eval-{name_key}-{large}")
            if why:
                out.append({"target": name, "measured": "", "verdict": why})
                continue
            one, many = result(f"eval-{name_key}-{small}"), result(f"eval-{name_key}-{large}")
            ratio = many["images_per_sec"] / one["images_per_sec"]
            model_ratio = one["model_sec_per_image"] / many["model_sec_per_image"]
            out.append({"target": name, "value": round(ratio, 2),
                        "measured": f"{ratio:.2f}x ({one['images_per_sec']:.1f} -> {many['images_per_sec']:.1f} "
                                    f"images/s; model alone {model_ratio:.2f}x)",
                        "verdict": "met" if ratio >= EVAL_TARGET else "not met"})
        return out

    def report_json(self):
        return {"date": self.date, "command": self.command, "smoke": self.args.smoke, "device": self.device,
                "budget_s": self.args.budget, "elapsed_s": round(time.monotonic() - self.start, 1),
                "problem": self.problem, "environment": self.environment,
                "environment_line": environment_line(self.environment), "steps": self.steps,
                "tests": self.tests, "data": self.data, "benchmarks": self.rows, "profile": self.profile,
                "targets": self.targets()}

    def write_report(self, final=False):
        report = self.report_json()
        report["complete"] = final
        atomic_write(os.path.join(self.out, "gpu_report.json"), json.dumps(report, indent=2) + "\n")
        atomic_write(os.path.join(self.out, "gpu_report.md"), render_markdown(report, self.sizes))
        atomic_write(os.path.join(self.out, "gpu_check.log"), render_log(self.logs))

    def cleanup(self):
        shutil.rmtree(self.work, ignore_errors=True)


# ====================================================================== helpers

def stop_process_group(proc):
    """End a step's process and everything it started (its own session): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def last_error(text):
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^(\w+(\.\w+)*(Error|Exception)|error:|RuntimeError|AssertionError)", line):
            return line[:300]
    return lines[-1][:300] if lines else ""


def atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def parse_junit(path):
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return []
    results = []
    for case in root.iter("testcase"):
        result, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                result = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (child.get("message") or child.text or "").strip().splitlines()
                message = message[0][:300] if message else ""
                break
        results.append({"test": case.get("name"), "result": result, "seconds": round(float(case.get("time", 0)), 1),
                        "message": message})
    return results


def parse_pytest_lines(text, status):
    """Without a JUnit file (the step was stopped): the verbose lines printed so far; the test that was
    running when the step stopped is 'timed out'."""
    results = []
    for line in text.splitlines():
        m = re.match(r"^tests/test_cuda\.py::(\S+)(?:\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS))?", line)
        if m:
            result = (m.group(2) or "").lower()
            results.append({"test": m.group(1), "result": {"": "timed out" if "timed out" in status else "unknown",
                                                           "error": "error"}.get(result, result),
                            "seconds": None, "message": ""})
    return results


def environment_line(env):
    if not env:
        return "environment unknown"
    versions = f"torch {env['torch']}, CUDA {env['cuda_build'] or '-'}, cuDNN {env['cudnn'] or '-'}"
    cpu = f"{env['cpu_count']} CPU cores" + (f" ({env['cpu']})" if env.get("cpu") else "")
    if not env["cuda_available"]:
        return f"no CUDA device: CPU only, {cpu}; {versions}; Python {env['python']}"
    gpus = "; ".join(f"{g['name']}, {g['memory_gib']} GiB, {g['capability']}" for g in env["gpus"])
    extra = "".join([f", NCCL {env['nccl']}" if env.get("nccl") else "",
                     f", driver {env['driver']}" if env.get("driver") else ""])
    return f"{gpus}; {versions}{extra}; {cpu}; Python {env['python']}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, spec, suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


def command_lines(rows, data_dir):
    """One line per command: the rows it gave, and the benchmark's ordinary command for them (the
    amp / channels-last / batch of each row spelled as the public flags)."""
    groups = {}
    for r in rows:
        if r["argv"] and not r["status"].startswith("not tried"):
            groups.setdefault(tuple(r["argv"]), []).append(r)
    lines = []
    for argv, members in groups.items():
        shown = " ".join("<data>" if a == data_dir else a for a in argv)
        compiled = any(r["key"].endswith("compile") for r in members)
        script = members[0]["script"]
        flags = "--amp bf16 --channels-last on"
        if script == "bench_eval.py":
            flags = "--batch-sizes B --amp A --channels-last C"
        elif len(members) > 1:
            flags = "--amp A --channels-last C"
        command = (f"python benchmarks/gpu_check.py --child compile {shown} --one bf16,1" if compiled else
                   f"python benchmarks/{script} {shown} {flags}")
        lines.append(f"- {', '.join(r['label'] for r in members)}: `{command}`")
    if data_dir:
        lines.append(f"- `<data>` = `{data_dir}`")
    return lines


def render_markdown(report, sizes):
    env = report["environment"]
    card = (env["gpus"][0]["name"] if env and env.get("gpus") else "CPU (no GPU)") if env else "unknown device"
    torch_version = env["torch"] if env else "?"
    lines = [f"# GPU check: {card}, {report['date']}", ""]
    lines.append(f"**Environment:** {report['environment_line']}")
    lines.append("")
    state = "complete" if report.get("complete") else "in progress (or cut short)"
    lines.append(f"`{report['command']}`{' (smoke run: tiny sizes)' if report['smoke'] else ''}: {state}, "
                 f"{report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget.")
    if report["problem"]:
        lines += ["", f"**Stopped:** {report['problem']}"]
    # targets
    lines += ["", "## Speed targets (issue 15)", "",
              table(["target", "measured", "verdict"],
                    [[t["target"], t["measured"] or "-", f"**{t['verdict']}**"] for t in report["targets"]])]
    # tests
    tests = report["tests"]
    counts = {}
    for t in tests["results"]:
        counts[t["result"]] = counts.get(t["result"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no results"
    lines += ["", "## CUDA tests", "",
              f"`pytest -m cuda tests/test_cuda.py`: {summary} (step: {tests['status']}). "
              f"Trainers found: {', '.join(tests.get('trainers', [])) or '-'}.", ""]
    if tests["results"]:
        lines.append(table(["test", "result", "s", "message"],
                           [[t["test"], t["result"], fmt(t["seconds"], ".1f"), t["message"].replace("|", "/")]
                            for t in tests["results"]]))
    if tests["notes"]:
        lines += ["", "What the tests measured:", ""]
        lines += [f"- {n['test']}: {n['note']}" for n in tests["notes"]]
    # benchmarks
    rows = report["benchmarks"]
    data = report["data"]
    if rows or report["profile"]:
        lines += ["", f"## Benchmarks: {card}, torch {torch_version}, {report['date']}", ""]
        tf32 = (env or {}).get("tf32")
        if tf32:
            lines.append(f"fp32 rows run with PyTorch's defaults: TF32 {'allowed' if tf32['cudnn_conv'] else 'off'} "
                         f"for cuDNN convolutions, {'allowed' if tf32['matmul'] else 'off'} for matrix products. ")
        if data:
            lines.append(f"Synthetic VOC-layout set on local disk (`python -m data.synthetic`, every image "
                         f"{data['size']}x{data['size']}): {data['num_train']} training, {data['num_val']} validation "
                         f"images in `{data['data_dir']}`{' (reused)' if data.get('reused') else ''}. "
                         f"Peak memory: CUDA `max_memory_allocated` after the warm-up (CPU: peak RSS).")
        data_dir = data and data["data_dir"]
        train_rows = [r for r in rows if r["script"] == "bench_train.py"]
        if train_rows:
            lines += ["", "### Training step (`bench_train.py`)", "", *command_lines(train_rows, data_dir), ""]
            lines += [table(["mode", "model", "batch", "crop", "amp", "channels-last", "compile", "s / iter",
                                 "images / s", "peak MB", "data wait"], [train_row(r) for r in train_rows])]
        eval_rows = [r for r in rows if r["script"] == "bench_eval.py"]
        if eval_rows:
            lines += ["", "### Evaluation (`bench_eval.py`)", "", *command_lines(eval_rows, data_dir), ""]
            lines += [table(["batch", "amp", "channels-last", "s / image", "images / s", "model s / image",
                                 "overhead", "peak MB"], [eval_row(r) for r in eval_rows])]
        mlmt_rows = [r for r in rows if r["script"] == "bench_mlmt.py"]
        if mlmt_rows:
            lines += ["", "### MLMT step (`bench_mlmt.py`)", "", *command_lines(mlmt_rows, data_dir), ""]
            lines += [table(["model", "image", "batch lab + unlab", "amp", "channels-last", "s / iter",
                                 "images / s", "peak MB", "data wait"], [mlmt_row(r) for r in mlmt_rows])]
    if report["profile"]:
        lines += ["", *render_profile(report["profile"])]
    # steps
    lines += ["", "## Steps", "", table(["step", "limit s", "took s", "status"],
                                        [[s["step"], s["limit_s"], f"{s['seconds']:.1f}",
                                          s["status"] + (f": {s['error']}" if s.get("error") else "")]
                                         for s in report["steps"]]),
              "", "Every step's output: `gpu_check.log` beside this file; the numbers: `gpu_report.json`."]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def not_measured(r, width):
    return [f"not measured: {r['status']}"] + ["-"] * (width - 1)


def train_row(r):
    res = r["result"]
    if res is None:
        return [r["label"], "", "", "", "", "", "", *not_measured(r, 4)]
    mode = "s4gan" if res["mode"] == "s4gan" else res["mode"]
    return [mode, res["model"], f"{res['batch']} x {3 if res['mode'] == 's4gan' else 1}", res["crop"], res["amp"],
            "yes" if res["channels_last"] else "no", res.get("compile", "no"), f"{res['sec_per_iter']:.3f}",
            f"{res['images_per_sec']:.1f}", f"{res['peak_mem_mb']:.0f}", f"{res['data_wait_share']:.1%}"]


def eval_row(r):
    res = r["result"]
    if res is None:
        return [r["label"], "", "", *not_measured(r, 5)]
    return [res["batch"], res["amp"], "yes" if res["channels_last"] else "no", f"{res['sec_per_image']:.4f}",
            f"{res['images_per_sec']:.1f}", f"{res['model_sec_per_image']:.4f}", f"{res['overhead_share']:.1%}",
            f"{res['peak_mem_mb']:.0f}"]


def mlmt_row(r):
    res = r["result"]
    if res is None:
        return [r["label"], "", "", "", "", *not_measured(r, 4)]
    return [res["model"], res["image_size"], f"{res['batch_lab']} + {res['batch_unlab']} x 2 views", res["amp"],
            "yes" if res["channels_last"] else "no", f"{res['sec_per_iter']:.3f}", f"{res['images_per_sec']:.1f}",
            f"{res['peak_mem_mb']:.0f}", f"{res['data_wait_share']:.1%}"]


def render_profile(profile):
    lines = ["### Where the time goes: the s4GAN step, bf16 + channels-last (torch.profiler)", ""]
    summary, row = profile.get("profile"), profile.get("row")
    if not summary or not row:
        return lines + [f"Not measured: {profile['status']}."]
    n = summary["iterations"]
    device = summary["measure"] == "device"
    head = (f"{n} profiled iteration{'s' if n > 1 else ''} of {row['sec_per_iter'] * 1000:.0f} ms "
            f"(median, profiler on; {row['model']}, batch {row['batch']} x 3, crop {row['crop']}).")
    if device:
        busy = summary["device_busy_ms"]
        head += (f" The GPU is busy {busy:.0f} ms per iteration ({busy / (row['sec_per_iter'] * 1000):.0%}); "
                 f"the rest is the host (Python, launches, synchronisations) or the loaders.")
    head += (f" Upsampling of the logits (forward + backward): {summary['upsampling_ms']:.1f} ms "
             f"{'of GPU time' if device else 'of CPU time'} per iteration. Host ms: wall time of the part on the "
             f"CPU (for a GPU step, launching its kernels and waiting where it synchronises).")
    lines += [head, "", table(["part", "calls / iter", "host ms / iter"] + (["device ms / iter"] if device else []),
                              [[p["part"], p["calls"], f"{p['host_ms']:.1f}"]
                               + ([f"{p['device_ms']:.1f}"] if device else []) for p in summary["parts"]]),
              "", table(["operator", "calls / iter", f"{'device' if device else 'CPU'} ms / iter", "share"],
                        [[t["operator"], t["calls"], f"{t['ms']:.1f}", f"{t['share']:.1%}"]
                         for t in summary["top_operators"]])]
    return lines


def render_log(logs):
    parts = []
    for record, stdout, stderr in logs:
        parts.append(f"===== {record['step']}: {record['status']}, {record['seconds']} s "
                     f"(limit {record['limit_s']} s)\n$ {record['command']}\n"
                     f"--- stdout\n{stdout[-100_000:]}\n--- stderr\n{stderr[-100_000:]}\n")
    return "\n".join(parts)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return run_child(argv[1:])
    args = parse(argv)
    check = Check(args, argv)
    try:
        code = check.execute()
    finally:
        check.cleanup()
    if check.problem:
        print(f"error: {check.problem}", file=sys.stderr)
    print(f"{'stopped' if check.problem else 'done'} in {time.monotonic() - check.start:.0f} s: "
          f"{os.path.join(check.out, 'gpu_report.md')}")
    return code


if __name__ == "__main__":
    sys.exit(main())
