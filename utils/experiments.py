"""Running the project's scripts as subprocesses and reading their results (demo.py, reproduce.py)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_line(args):
    """How a user would type it: `python train_s4GAN.py ...` or `python -m data.synthetic ...`."""
    return " ".join(["python", *args])


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
