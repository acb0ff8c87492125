"""The plan shown (runs, commands, state, estimate) and run here, one run after another."""
import sys
import time

from experiments.scripts import command_line, read_miou, run_command
from experiments.catalog import METHODS
from experiments.plan import STATE_TEXT, at_root, exists, state
from experiments.speed import hours_text, run_hours

# the + MLMT rows' runs train the classifier only: they evaluate the s4GAN runs' snapshots
RUN_LABELS = {"mlmt": "MLMT classifiers"}


def describe(plan, speeds, device, note=None):
    t = plan.table
    methods = ", ".join(f"{t.method_label(m)} ({METHODS[m][1]})" for m in plan.methods)
    splits = sorted(set(r.split for r in plan.runs))
    if t.lists:
        how = "--labeled-list <the column's list> --random-seed 1234+k (one published split, three seeds)"
    else:
        how = (f"--split-id ./{t.split_dir}/seeded_<k>.pkl" if t.split_dir else "--split-id none --random-seed 1234+k")
        how += " (full: --random-seed 1234+k)"
    snapshots = ("; every other snapshot too, for the best one (selected on the evaluation set: marked so)"
                 if t.every_snapshot else "")
    lines = [f"Table {plan.key}: {t.title}", f"  methods   {methods}",
             f"  labeled   {', '.join(t.label(r) for r in plan.ratios)}; splits "
             f"{', '.join(map(str, splits))}: {how}",
             f"  steps     {plan.steps} per segmentation run; evaluated: {plan.snapshot_note}{snapshots}",
             f"  output    {plan.root}/<run>/; tables {plan.markdown_path}, {plan.png_path}"]
    if "mlmt" in plan.methods:
        lines.append("  MLMT      trains the classifier, then evaluates the s4GAN run of the same fraction and split "
                     "with --with-mlmt")
    lines += [f"  note      {n}" for n in t.notes] + [f"  warning   {w}" for w in plan.warnings]
    if note:
        lines.append(f"  estimate  {note}")
    for kind in plan.methods:
        if kind in speeds:
            sec, source = speeds[kind]
            lines.append(f"  speed     {t.method_label(kind)}: {sec:.3g} s / iteration from {source}")
        else:
            lines.append(f"  speed     {t.method_label(kind)}: no measurement for {device} (--calibrate on the machine "
                         f"that will train, --bench-device, or --sec-per-iter {kind}=SECONDS)")
    lines.append(f"\n{len(plan.runs)} runs (the number is the Slurm array index):")
    for run in plan.runs:
        hours = run_hours(run, speeds)
        cost = f"{run.iterations} iterations" + (f", about {hours_text(hours)} h" if hours is not None else "")
        lines.append(f"#{run.index:<3d} {run.name}  ({run.describe()}; {cost}; {STATE_TEXT[state(run)]})")
        lines.append(f"     {run.train_text()}")
        lines.append(f"     {run.eval_text()}")
        if run.more:
            lines.append(f"     and {len(run.more)} more evaluations: the same with VOC_<i>.pth for the other snapshots")
    hours = [run_hours(r, speeds) for r in plan.runs]
    known = [h * r.gpus for h, r in zip(hours, plan.runs) if h is not None]
    unit = "hours of training on this machine's CPU" if device == "CPU" else f"GPU-hours of training on {device}"
    total = f"about {hours_text(sum(known))} {unit}" if known else "not estimated"
    by_method = {m: sum(h * r.gpus for h, r in zip(hours, plan.runs) if r.method == m and h is not None)
                 for m in plan.methods}
    if known and len(plan.methods) > 1:
        total += " (" + ", ".join(f"{RUN_LABELS.get(m, t.method_label(m))} {hours_text(h)}"
                                  for m, h in by_method.items()) + ")"
    if known and len(known) < len(hours):
        total += f" ({len(hours) - len(known)} runs not estimated)"
    lines.append(f"\nEstimate: {total}; evaluations not counted (minutes each).")
    return "\n".join(lines)


STOPPED = {130, 143, -2, -15}  # a run ended by Ctrl-C or SIGTERM: the sweep stops as well


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def execute(plan, speeds):
    """Run every run that is not done; returns the names of the failed runs with why, and whether
    the sweep was stopped by a signal."""
    failures, durations, start = [], [], time.time()
    pending = [r for r in plan.runs if state(r) != "done"]
    for run in plan.runs:
        current = state(run)
        left = [r for r in pending if r.index >= run.index]
        if durations:
            remaining = f"about {_hms(sum(durations) / len(durations) * len(left))} left"
        else:
            hours = [run_hours(r, speeds) for r in left]
            remaining = (f"about {_hms(3600 * sum(hours))} left (estimate)" if left and None not in hours
                         else "remaining time unknown yet")
        action = {"done": "done, skipped", "trained": "evaluating", "interrupted": "resuming from latest.pth",
                  "new": "training"}[current]
        print(f"\n=== [{run.index + 1}/{len(plan.runs)}] {run.name} ({run.describe()}): {action} | "
              f"{len(left)} to do | elapsed {_hms(time.time() - start)}, {remaining}", flush=True)
        if current == "done":
            continue
        t0 = time.time()
        try:
            error = _one_run(run, current)
        except KeyboardInterrupt:  # Ctrl-C between two commands (during one, the command handles it)
            error = "stopped"
        if error == "stopped":
            print(f"\nstopped during {run.name}: run the same command again to continue (finished runs are "
                  f"skipped, this one resumes from its latest.pth)", flush=True)
            return failures, True
        if error:
            failures.append(f"{run.name}: {error}")
            print(f"FAILED {run.name}: {error}; going on with the others", flush=True)
        else:
            durations.append(time.time() - t0)
    return failures, False


def _one_run(run, current):
    if current in ("new", "interrupted"):
        print("$ " + run.train_text(), flush=True)
        code = run_command(run.train_argv())
        if code in STOPPED:
            return "stopped"
        if code != 0:
            return f"training exited with status {code}"
        if not exists(run.trained):
            return f"training ended without writing {run.trained}"
    if run.needs and not exists(run.needs):
        return f"its evaluation needs {run.needs}, which the s4GAN run of the same fraction and split writes"
    for evaluate, result in run.evaluations:
        if exists(result):
            continue
        print("$ " + command_line(evaluate), flush=True)
        code = run_command([sys.executable, *evaluate])
        if code in STOPPED:
            return "stopped"
        if code != 0:
            return f"evaluation exited with status {code}"
        if read_miou(at_root(result)) is None:
            return f"the evaluation wrote no mIoU to {result}"
    return None
