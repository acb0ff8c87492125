"""Job scripts: a Slurm array or a shell script whose task K is run K of the plan."""
import os
import shlex

from experiments.scripts import ROOT, command_line
from experiments.plan import at_root
from experiments.speed import hours_text, run_hours

def _task_lines(run):
    q = shlex.quote
    lines = [f"  {run.index})  # {run.name}: {run.describe()}",
             f"    [ -f {q(run.trained)} ] || {run.train_text()}"]
    if run.needs:
        message = f"{run.name}: {run.needs} is missing: when the s4GAN run has finished, run this task again"
        lines.append(f"    [ -f {q(run.needs)} ] || {{ echo {q(message)} >&2; exit 3; }}")
    lines += [f"    [ -f {q(result)} ] || {command_line(evaluate)}" for evaluate, result in run.evaluations]
    lines.append("    ;;")
    return lines


def job_script(plan, kind, speeds):
    """A bash script whose task K (Slurm: $SLURM_ARRAY_TASK_ID; shell: the argument) is run K of the
    plan: its training (skipped when its final file exists, else --resume auto) then its evaluation."""
    n = len(plan.runs)
    last = n - 1
    hours = [h for h in (run_hours(r, speeds) for r in plan.runs) if h is not None]
    longest = f" The longest training is estimated at {hours_text(max(hours))} h." if hours else ""
    head = ["#!/bin/bash", f"# {n} runs of table {plan.key} ({plan.table.title}), written by reproduce.py."]
    if kind == "slurm":
        head += ["# Submit with `sbatch <this file>`: array task K is run #K of the plan. A task that was",
                 "# preempted or stopped resumes when submitted again (`sbatch --array=K <this file>`): finished",
                 "# steps are skipped and training continues from latest.pth (--resume auto).",
                 f"#{longest} Add --time, --partition or --account for your cluster; s4GAN reads three",
                 "# loaders of 4 workers each.",
                 f"#SBATCH --job-name=reproduce_{plan.key}", f"#SBATCH --array=0-{last}",
                 f"#SBATCH --gres=gpu:{max(r.gpus for r in plan.runs)}", "#SBATCH --cpus-per-task=12",
                 f"#SBATCH --output={os.path.normpath(at_root(os.path.join(plan.root, 'slurm')))}/%x_%A_%a.out"]
    else:
        head += ["# `bash <this file>` runs them all, one after another (a failed run does not stop the",
                 "# others; exit status 1 at the end); `bash <this file> K [K ...]` runs the runs numbered K",
                 "# (from 0), e.g. one per machine. Running a run again resumes it: finished steps are skipped.",
                 f"#{longest}"]
    head += [f"# When all runs are done: {plan.collect_command}", "set -euo pipefail",
             'script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"', f"cd {shlex.quote(ROOT)}", "",
             "task() {", '  case "$1" in']
    body = [line for run in plan.runs for line in _task_lines(run)]
    tail = [f'  *) echo "no run $1 in this plan (0-{last})" >&2; exit 2 ;;', "  esac", "}", ""]
    if kind == "slurm":
        tail += ['task "${SLURM_ARRAY_TASK_ID:?run this file with sbatch, or set SLURM_ARRAY_TASK_ID}"']
    else:
        tail += ['if [ "$#" -gt 0 ]; then', '  for k in "$@"; do task "$k"; done', "else", "  status=0",
                 f"  for k in $(seq 0 {last}); do",
                 '    bash "$script" "$k" || { echo "run $k failed" >&2; status=1; }',
                 "  done", '  exit "$status"', "fi"]
    return "\n".join(head + body + tail) + "\n"


def write_job_script(plan, kind, path, speeds):
    path = at_root(path or os.path.join(plan.root, f"{plan.key}.{'slurm' if kind == 'slurm' else 'sh'}"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "slurm":
        os.makedirs(at_root(os.path.join(plan.root, "slurm")), exist_ok=True)  # Slurm does not create it
    with open(path, "w") as f:
        f.write(job_script(plan, kind, speeds))
    os.chmod(path, 0o755)
    return path
