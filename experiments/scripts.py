"""Running the project's scripts as subprocesses and reading their results (demo.py, reproduce.py)."""
import math
import os
import shlex
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_line(args):
    """How a user would type it: `python train_s4GAN.py ...` or `python -m data.synthetic ...`
    (arguments quoted for the shell where they need it)."""
    return " ".join(shlex.quote(str(a)) for a in ["python", *args])


def run_script(args, check=True):
    """Run `python <args>` in the project root, echoing the command first; returns the exit status."""
    print("$ " + command_line(args), flush=True)
    return subprocess.run([sys.executable, *args], cwd=ROOT, check=check).returncode


def read_result(path):
    """(class names, per-class IoU (NaN for n/a), mIoU) from an evaluate.py result.txt."""
    names, ious, miou = [], [], None
    with open(path) as f:
        for line in f:
            parts = line.split()
            if line.startswith("class"):
                names.append(parts[2])
                ious.append(float("nan") if parts[-1] == "n/a" else float(parts[-1]))
            elif line.startswith("meanIOU:"):
                miou = float(parts[1])
    return names, ious, miou


def results_table(results):
    """Markdown table from {run name: read_result(...)}: one row per class and the mIoU, in %."""
    runs = list(results)
    names = results[runs[0]][0]
    header = "| class | " + " | ".join(runs) + " |\n|---|" + "---|" * len(runs) + "\n"
    rows = [f"| {name} | " + " | ".join(f"{100 * results[r][1][k]:.1f}" for r in runs) + " |"
            for k, name in enumerate(names)]
    rows.append("| **mIoU** | " + " | ".join(f"**{100 * results[r][2]:.1f}**" for r in runs) + " |")
    return header + "\n".join(rows) + "\n"


def run_command(argv, cwd=ROOT):
    """Run `argv` (a full command line: the interpreter first) in the project root, letting it end
    cleanly when the sweep is stopped; returns its exit status.

    Ctrl-C reaches the child as well (same process group): instead of killing it, as
    `subprocess.run` would, wait until it has saved its state and exited (the trainers exit with
    128+signal after writing latest.pth). A SIGTERM sent to this process is passed on to the child."""
    proc = subprocess.Popen(argv, cwd=cwd)
    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    except ValueError:  # not the main thread: no handler, the child is only waited for
        previous = None
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                continue
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def read_miou(path):
    """The mIoU (a fraction) of an evaluate.py result.txt, or None if the file is missing or has none."""
    if not os.path.isfile(path):
        return None
    return read_result(path)[2]


def mean_std(values):
    """(mean, sample standard deviation (NaN for fewer than 2 values), count) of a list of numbers."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std, n


def flag_value(argv, flag, default=None):
    """The value of the last `flag VALUE` in argv (argparse's rule: the last one wins)."""
    values = [argv[k + 1] for k, a in enumerate(argv[:-1]) if a == flag]
    return values[-1] if values else default
