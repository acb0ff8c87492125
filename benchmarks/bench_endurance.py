"""A long tiny s4GAN run under load: is its memory flat, and does it survive being stopped at random?

    python benchmarks/bench_endurance.py --steps 2000 --interruptions 10 --out /tmp/endurance

1. the reference: train_s4GAN.py for --steps iterations (ResNet-18, 33x33 crops, batch 2, --num-workers
   loader workers per stream, latest.pth every --save-every iterations) as one process, its resident
   memory (the trainer and its loader workers) sampled every 0.5 s;
2. the same command stopped at --interruptions random moments, SIGTERM and SIGKILL at random (a SIGKILL
   may fall in the middle of a checkpoint write), sent to its whole process group as Slurm and
   torchrun send them (the loader workers get them too), each time restarted with --resume auto;
3. the final snapshots, optimizers, loader positions and RNG states of both compared tensor by tensor.

Prints one JSON line per run and one for the result; --markdown writes the table for RESULTS.md.
Exit status 1 when the interrupted run does not end bit-identical or the memory grew by 5% or more.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.common import data_dir_or_synthetic  # noqa: E402


def rss_mb(pid):
    """Resident memory of a process and its children (the loader workers), in MB; None once it ended."""
    total, pids = 0, [pid]
    try:
        children = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True).stdout
        pids += [int(p) for p in children.split()]
        for p in pids:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None if p == pid else total / 1024
    return total / 1024


def command(args, data, folder, *extra):
    return [sys.executable, "train_s4GAN.py", "--dataset", "folder", "--num-classes", "6", "--data-dir", data,
            "--data-list", os.path.join(data, "lists", "train_aug.txt"), "--backbone", "resnet18", "--restore-from",
            "none", "--init", "kaiming", "--input-size", "33,33", "--batch-size", "2", "--labeled-ratio", "0.25",
            "--split-id", "none", "--num-steps", str(args.steps), "--save-pred-every", str(args.save_every),
            "--num-workers", str(args.num_workers), "--log-every", "50", "--random-mirror",
            "--checkpoint-dir", folder, *extra]


def reference_run(args, data, folder):
    """The uninterrupted run, its memory sampled: (seconds, [(seconds since start, MB)])."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    start = time.time()
    proc = subprocess.Popen(command(args, data, folder), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    samples = []
    while proc.poll() is None:
        mb = rss_mb(proc.pid)
        if mb:
            samples.append((time.time() - start, mb))
        time.sleep(0.5)
    if proc.returncode != 0:
        raise SystemExit(f"the reference run failed: {proc.stderr.read()[-2000:]}")
    return time.time() - start, samples


def interrupted_run(args, data, folder, duration, rng):
    """Stop the run --interruptions times at random moments (SIGTERM or SIGKILL), resume each time;
    returns the list of (signal, seconds into that attempt, exit status) and the attempts' count."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    events, attempts = [], 0
    while True:
        attempts += 1
        extra = ["--resume", "auto"] if attempts > 1 else []
        proc = subprocess.Popen(command(args, data, folder, *extra), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        if len(events) < args.interruptions:
            # at most 1/N of the uninterrupted duration each (0.55/N on average), so that all N stops
            # fall inside the run even though each resume repeats set-up and a SIGKILL loses the
            # iterations since the last checkpoint
            wait = rng.uniform(0.1, 1.0) * duration / args.interruptions
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
                os.killpg(proc.pid, sig)  # the trainer and its loader workers
                code = proc.wait()
                events.append((signal.Signals(sig).name, round(wait, 1), code))
                # 143: stopped after saving its state; -15: signalled while it was still setting up
                errors = proc.stderr.read()
                if sig == signal.SIGTERM and (code not in (143, -signal.SIGTERM) or "Traceback" in errors):
                    raise SystemExit(f"SIGTERM gave exit status {code}: {errors[-2000:]}")
                continue
        proc.wait()
        if proc.returncode != 0:
            raise SystemExit(f"attempt {attempts} failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        return events, attempts


def final_state(folder, steps):
    latest = torch.load(os.path.join(folder, "latest.pth"), weights_only=True)
    return {"model": torch.load(os.path.join(folder, f"VOC_{steps}.pth"), weights_only=True),
            "D": torch.load(os.path.join(folder, f"VOC_{steps}_D.pth"), weights_only=True),
            "optimizers": latest["optimizers"], "streams": latest["streams"], "rng": latest["rng"],
            "iteration": latest["iteration"]}


def differences(a, b, where=""):
    """Paths at which two nested states differ (tensors: dtype or any bit)."""
    if isinstance(a, torch.Tensor):
        return [] if isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b) else [where]
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return [where + " (keys)"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [where + " (length)"]
        return [d for k, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{k}]")]
    return [] if a == b or (a != a and b != b) else [where]


def memory_growth(samples, warmup):
    """(MB after the warm-up, MB at the end, growth in %): medians of the first and last tenth of the
    samples taken after the first `warmup` fraction of the run."""
    after = [mb for t, mb in samples if t >= warmup * samples[-1][0]]
    tenth = max(1, len(after) // 10)
    first, last = sorted(after[:tenth])[tenth // 2], sorted(after[-tenth:])[tenth // 2]
    return first, last, 100 * (last - first) / first


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--save-every", type=int, default=100, help="--save-pred-every of the runs")
    p.add_argument("--interruptions", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=2, help="loader workers per stream of the runs")
    p.add_argument("--seed", type=int, default=0, help="seed of the moments and signals")
    p.add_argument("--out", required=True, help="folder for the two runs")
    p.add_argument("--markdown", default=None, help="write the result as a RESULTS.md section there")
    args = p.parse_args(argv)
    data = data_dir_or_synthetic(None, num_train=64, num_val=8, max_size=64)
    reference, interrupted = os.path.join(args.out, "reference"), os.path.join(args.out, "interrupted")
    duration, samples = reference_run(args, data, reference)
    first, last, growth = memory_growth(samples, warmup=0.1)
    print(json.dumps({"run": "reference", "seconds": round(duration, 1), "rss_mb_after_warmup": round(first, 1),
                      "rss_mb_end": round(last, 1), "growth_percent": round(growth, 2), "samples": len(samples)}),
          flush=True)
    start = time.time()
    events, attempts = interrupted_run(args, data, interrupted, duration, random.Random(args.seed))
    diff = differences(final_state(reference, args.steps), final_state(interrupted, args.steps))
    result = {"run": "interrupted", "seconds": round(time.time() - start, 1), "attempts": attempts,
              "interruptions": events, "bit_identical": not diff, "differing": diff[:5],
              "memory_flat": growth < 5, "all_stops_made": len(events) == args.interruptions}
    print(json.dumps(result), flush=True)
    if args.markdown:
        kinds = [e[0] for e in events]
        with open(args.markdown, "w") as f:
            f.write(f"`python benchmarks/bench_endurance.py --steps {args.steps} --interruptions {args.interruptions} "
                    f"--save-every {args.save_every} --num-workers {args.num_workers} --seed {args.seed} "
                    f"--out {args.out}`\n\n"
                    f"| run | iterations | wall time | resident memory after warm-up -> end | result |\n"
                    f"|---|---|---|---|---|\n"
                    f"| uninterrupted | {args.steps} | {duration:.0f} s | {first:.0f} MB -> {last:.0f} MB "
                    f"({growth:+.1f}%) | {'flat' if growth < 5 else 'GROWS'} |\n"
                    f"| stopped {len(events)} times ({kinds.count('SIGTERM')} SIGTERM, {kinds.count('SIGKILL')} "
                    f"SIGKILL), resumed {attempts - 1} times | {args.steps} | {result['seconds']:.0f} s | | "
                    f"{'bit-identical' if not diff else 'DIFFERS: ' + ', '.join(diff[:3])} |\n")
    return 0 if not diff and growth < 5 and result["all_stops_made"] else 1


if __name__ == "__main__":
    sys.exit(main())
