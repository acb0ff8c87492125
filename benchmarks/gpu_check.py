"""The GPU check: every CUDA path exercised and measured in one command, with a one-page report.

    python benchmarks/gpu_check.py --out gpu_check            # on a GPU: under 8 minutes on one H200
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
     channels-last (bench_train.py), each with the FLOPs of its step counted and the TFLOP/s achieved;
     with --original CHECKOUT (after the other rows), the authors' train_s4GAN.py loop timed in fp32 on
     the same card (through tests/crosscheck/driver.py) and ours / theirs; evaluation at batch 1 and 8 in fp32 and bf16 + channels-last
     (bench_eval.py); the WRN-38 step (256x512, batch 8, 19 classes), the DeepLabv3+ ResNet-101 s4GAN
     step (321x321, batch 8) and the MLMT step
     (bench_mlmt.py, if present) in bf16 + channels-last; a profile of the bf16 + channels-last
     s4GAN step (where the time goes: kernels, the legacy SGD loop, the upsampling, the loaders);
     and, with the time left, the same step with the segmenter under torch.compile;
  4. the report: DIR/gpu_report.md (tables ready for benchmarks/RESULTS.md; each speed target
     met, not met or not measured), DIR/gpu_report.json, and DIR/gpu_check.log (every step's output).

The report is rewritten after every step, so a run cut short still leaves one. Exit status: 0 when
every step ran and no test failed (whether the speed targets are met does not change it, nor does a
torch.compile row that gets too little time), 1 otherwise, 2 for a usage error (no GPU without
--smoke). --steps reruns some of the steps (the environment always runs).

--smoke runs the same steps at tiny sizes (ResNet-18, 33x33 crops, one iteration, two images), the
data and every benchmark row in one process to spare the start-ups: on a CPU the whole script takes
well under a minute, the CUDA tests are reported as skipped and the targets as not measured.
--device cpu hides any GPU from every step (what the test suite uses).

The steps' own processes are in gpu_check_children.py, the report's rendering in gpu_check_report.py.
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
import xml.etree.ElementTree as ElementTree

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)

from gpu_check_children import run_child  # noqa: E402
from gpu_check_report import environment_line, render_log, render_markdown  # noqa: E402

TOTAL_BUDGET_S = 470  # the whole check on one H200, start-up of every process included: under 8 minutes
SMOKE_BUDGET_S = 240  # a safety net only: on a CPU the smoke run takes well under a minute
MIN_STEP_S = 15       # a step is not started with less than this left of the budget

# Time limit of each step (seconds), and what it should take on one H200, as planned:
LIMITS = {
    "environment": 30,   # ~5 s: import torch, query the card
    "cuda tests": 200,   # ~100 s: 11 tests, ResNet-101 at small crops; 4 trainers x 3 iterations
    "data": 60,          # ~5 s: 336 synthetic 500x500 images, written by 7 processes
    "train": 75,         # ~35 s per row: start-up, cuDNN autotuning, 5 warm-up + 15 timed iterations
    "eval": 45,          # ~20 s per row: warm-up pass, then 3 timed passes of each kind over 96 images
    "wrn38": 75,         # ~35 s: 3 warm-up + 10 timed iterations
    "mlmt": 75,          # ~35 s per row: 3 warm-up + 10 timed iterations of 176 images
    "profile": 90,       # ~40 s: 5 warm-up, 1 profiler warm-up, 3 profiled iterations, then the trace's tables
    "original": 90,      # ~40 s: the authors' train_s4GAN.py loop, 5 warm-up + 15 timed iterations (--original)
    "compile": 150,      # whatever is left, up to this: compiling ResNet-101's forward and backward
    "smoke": 180,        # --smoke: the data and every benchmark row in one process (~20 s on 2 CPU cores)
}
COMPILE_MIN_S = 60  # below this much time left, torch.compile is not tried

# Sizes: the real ones (GPU) and the smoke run's. Loader workers: 4 per loader, the trainers' default.
REAL = {
    "data": {"num_train": 240, "num_val": 96, "size": 500},
    "train": ["--backbone", "resnet101", "--batch-size", "8", "--crop", "321", "--iters", "15", "--warmup", "5",
              "--num-workers", "4", "--count-flops"],
    "eval": ["--backbone", "resnet101", "--images", "96", "--repeats", "3"],  # evaluate.py's workers
    "eval_batches": (1, 8),
    "wrn38": ["--model", "deeplabv3p_wrn38", "--crop", "256,512", "--batch-size", "8", "--num-classes", "19",
              "--iters", "10", "--warmup", "3", "--num-workers", "4"],
    "v3p": ["--model", "deeplabv3p", "--backbone", "resnet101", "--batch-size", "8", "--crop", "321", "--iters", "15",
            "--warmup", "5", "--num-workers", "4", "--sgd-mode", "standard"],
    "mlmt": ["--backbone", "resnet101", "--image-size", "320", "--batch-size-lab", "16", "--batch-size-unlab", "80",
             "--iters", "10", "--warmup", "3", "--num-workers", "4"],
    "profile": ["--backbone", "resnet101", "--batch-size", "8", "--crop", "321", "--iters", "4", "--warmup", "5",
                "--num-workers", "4"],
    "compile": ["--backbone", "resnet101", "--batch-size", "8", "--crop", "321", "--iters", "10", "--warmup", "5",
                "--num-workers", "4"],
    "original": ["--batch-size", "8", "--crop", "321", "--iters", "15", "--warmup", "5"],
}
# One iteration of each, no warm-up: on a CPU without native bf16 (no AVX-512), a bf16 pass of the
# dilated ResNet-18 takes about a second whatever the crop.
SMOKE = {
    "data": {"num_train": 24, "num_val": 8, "size": 64},
    "train": ["--backbone", "resnet18", "--batch-size", "1", "--crop", "33", "--iters", "1", "--warmup", "0",
              "--num-workers", "0", "--count-flops"],
    "eval": ["--backbone", "resnet18", "--images", "2", "--repeats", "1", "--num-workers", "0"],
    "eval_batches": (1, 2),
    "wrn38": ["--model", "deeplabv3p_wrn38", "--wrn-width-mult", "0.0625", "--crop", "32,64", "--batch-size", "2",
              "--num-classes", "19", "--iters", "1", "--warmup", "0", "--num-workers", "0"],
    "v3p": ["--model", "deeplabv3p", "--backbone", "resnet50", "--batch-size", "2", "--crop", "65", "--iters", "1",
            "--warmup", "0", "--num-workers", "0", "--sgd-mode", "standard"],
    "mlmt": ["--backbone", "resnet18", "--image-size", "33", "--batch-size-lab", "2", "--batch-size-unlab", "2",
             "--iters", "1", "--warmup", "0", "--num-workers", "0"],
    "profile": ["--backbone", "resnet18", "--batch-size", "1", "--crop", "33", "--iters", "1", "--warmup", "0",
                "--num-workers", "0"],
    "compile": None,
    "original": ["--batch-size", "1", "--crop", "321", "--iters", "1", "--warmup", "0"],  # its D needs 321x321
}
STEP_CHOICES = ("tests", "train", "eval", "wrn38", "mlmt", "profile", "compile")

# The speed targets: seconds per iteration of the s4GAN step (ResNet-101, 8 x 3, 321x321)
FP32_STEP_TARGET_S = 0.080
BF16_CL_STEP_TARGET_S = 0.045
DATA_WAIT_TARGET = 0.05       # share of the s4GAN iteration spent waiting for the loaders, at bf16 + channels-last
EVAL_TARGET = 4.0             # images/s at batch 8 vs batch 1
MLMT_DATA_WAIT_TARGET = 0.10  # share of the MLMT iteration spent waiting for the loaders


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
    p.add_argument("--original", default=os.environ.get("SEMISUP_ORIGINAL"),
                   help="a checkout of the authors' repository (default: $SEMISUP_ORIGINAL): the train step also "
                        "times their train_s4GAN.py loop in fp32 on the same card, and the report gives ours / theirs")
    args = p.parse_args(argv)
    if args.original and not os.path.isfile(os.path.join(args.original, "train_s4GAN.py")):
        p.error(f"--original {args.original}: no train_s4GAN.py there (give a checkout of sud0301/semisup-semseg)")
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in STEP_CHOICES]
    if unknown:
        p.error(f"--steps: unknown {', '.join(unknown)} (choose from {', '.join(STEP_CHOICES)})")
    if args.budget is None:
        args.budget = SMOKE_BUDGET_S if args.smoke else TOTAL_BUDGET_S
    return args


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
            rows.append(("v3p-bf16-cl", "DeepLabv3+ ResNet s4GAN step bf16 + channels-last", "bench", "bench_train.py",
                         self.sizes["v3p"] + common, "bf16,1", "wrn38"))
        if "mlmt" in self.args.steps:  # the MLMT benchmark belongs to another part of the project
            present = os.path.isfile(os.path.join(BENCH_DIR, "bench_mlmt.py"))
            rows.append(("mlmt-bf16-cl", "MLMT step bf16 + channels-last", "bench" if present else "missing",
                         "bench_mlmt.py", self.sizes["mlmt"] + common if present else [], "bf16,1", "mlmt"))
            rows.append(("mlmt-bf16-cl-device-views", "MLMT step bf16 + channels-last, views made on the device",
                         "bench" if present else "missing", "bench_mlmt.py",
                         self.sizes["mlmt"] + common + ["--augment-on-device"] if present else [], "bf16,1", "mlmt"))
        if "profile" in self.args.steps:
            rows.append(("profile", "profile of the s4GAN step bf16 + channels-last", "profile", "bench_train.py",
                         self.sizes["profile"] + common, "bf16,1", "profile"))
        if "train" in self.args.steps and self.args.original:  # after the rows of this project: the budget may end first
            rows.append(("original-fp32", "the original's s4GAN step fp32", "original", "train_s4GAN.py",
                         self.sizes["original"] + common + ["--original", os.path.abspath(self.args.original)],
                         "off,0", "original"))
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
            runnable = [r for r in rows if r[2] in ("bench", "profile", "original")]
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
            elif kind == "original":
                record, stdout, _ = self.run(label, [sys.executable, __file__, "--child", "original", *argv],
                                             LIMITS["original"])
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
        """Each speed target: what was measured and met / not met, or why it was not measured."""
        rows = {r["key"]: r for r in self.rows}
        small, large = self.sizes["eval_batches"]

        def missing(*keys):
            if self.device != "cuda":
                return "not measured (no GPU)"
            for key in keys:
                row = rows.get(key)
                if row is None:
                    return "not measured (row not run)"
                if row["result"] is None:
                    return f"not measured ({row['status']})"
            return None

        def step_time(key, limit):
            r = rows[key]["result"]
            flops = f", {r['tflops_per_sec']:.0f} TFLOP/s" if r.get("tflops_per_sec") else ""
            return r["sec_per_iter"], f"{r['sec_per_iter']:.3f} s/iter{flops}", r["sec_per_iter"] <= limit

        def memory():
            fp32, best = rows["s4gan-fp32"]["result"], rows["s4gan-bf16-cl"]["result"]
            return (None, f"{best['peak_mem_mb']:.0f} MB vs {fp32['peak_mem_mb']:.0f} MB",
                    best["peak_mem_mb"] < fp32["peak_mem_mb"])

        def wait(key, limit, what):
            r = rows[key]["result"]
            share = r["data_wait_share"]
            return share, f"{share:.1%} ({r['num_workers']} workers per loader, {what})", share < limit

        def eval_ratio(name):
            one, many = rows[f"eval-{name}-{small}"]["result"], rows[f"eval-{name}-{large}"]["result"]
            ratio = many["images_per_sec"] / one["images_per_sec"]
            model_ratio = one["model_sec_per_image"] / many["model_sec_per_image"]
            return (round(ratio, 2), f"{ratio:.2f}x ({one['images_per_sec']:.1f} -> {many['images_per_sec']:.1f} "
                    f"images/s; model alone {model_ratio:.2f}x)", ratio >= EVAL_TARGET)

        targets = [
            (f"s4GAN step fp32 <= {FP32_STEP_TARGET_S * 1000:.0f} ms", ("s4gan-fp32",),
             lambda: step_time("s4gan-fp32", FP32_STEP_TARGET_S)),
            (f"s4GAN step bf16 + channels-last <= {BF16_CL_STEP_TARGET_S * 1000:.0f} ms", ("s4gan-bf16-cl",),
             lambda: step_time("s4gan-bf16-cl", BF16_CL_STEP_TARGET_S)),
            ("s4GAN step: bf16 + channels-last peak memory lower than fp32", ("s4gan-fp32", "s4gan-bf16-cl"), memory),
            (f"data wait < {DATA_WAIT_TARGET:.0%} of the s4GAN iteration at bf16 + channels-last speed",
             ("s4gan-bf16-cl",), lambda: wait("s4gan-bf16-cl", DATA_WAIT_TARGET, "3 loaders")),
            *[(f"evaluation: batch {large} >= {EVAL_TARGET}x the images/s of batch {small} ({shown})",
               (f"eval-{name}-{small}", f"eval-{name}-{large}"), lambda name=name: eval_ratio(name))
              for name, shown in (("fp32", "fp32"), ("bf16-cl", "bf16 + channels-last"))],
            (f"MLMT data wait < {MLMT_DATA_WAIT_TARGET:.0%} of the iteration (bf16 + channels-last, views made "
             f"on the device)", ("mlmt-bf16-cl-device-views",),
             lambda: wait("mlmt-bf16-cl-device-views", MLMT_DATA_WAIT_TARGET, "2 loaders")),
        ]
        out = []
        for name, keys, measure in targets:
            why = missing(*keys)
            if why:
                out.append({"target": name, "measured": "", "verdict": why})
                continue
            value, measured, met = measure()
            out.append({"target": name, "value": value, "measured": measured, "verdict": "met" if met else "not met"})
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
