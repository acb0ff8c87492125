"""Does s4GAN's self-training act on the demo's data, and which knob makes it? A small study.

    python studies/study_s4gan.py --out study                 # 14 runs, one after another
    python studies/study_s4gan.py --out study --parallel 7    # a GPU machine with cores to spare

The demo's synthetic dataset and recipe (demo.py: ResNet-18 from scratch, 97x97 crops, batch 4,
800 iterations, 1/8 of the labels, D's learning rate 1e-3), with, for each seed (the split and the
training seed; the dataset stays the demo's): the supervised baseline, and s4GAN for every
--threshold-st x --learning-rate-D. Each run is the ordinary train_full.py / train_s4GAN.py and
evaluate.py; a run whose eval/result.txt exists is not run again, so the same command resumes an
interrupted study and rewrites the report.

Writes <out>/study.md (the table for benchmarks/RESULTS.md), <out>/study.json (every run's numbers)
and <out>/curves_seed<k>.png (the curves of the first seed's runs, with the panel "discriminator").
"""
import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import demo_recipe  # noqa: E402
from experiments.scripts import ROOT, command_line, read_result  # noqa: E402
from utils.plot import plot_runs, read_metrics, read_threshold  # noqa: E402

LAST = 100  # the "final" scores and share: means over the last this many iterations


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="study_output", help="output folder (default: %(default)s)")
    p.add_argument("--seeds", default="0,1", help="split and training seeds (default: %(default)s)")
    p.add_argument("--thresholds", default="0.6,0.4,0.2", help="--threshold-st values (default: %(default)s)")
    p.add_argument("--lrs-d", default="1e-4,1e-3", help="--learning-rate-D values (default: %(default)s)")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="iterations per run (default: the demo's)")
    p.add_argument("--num-train", type=int, default=None, help="synthetic training images (default: the demo's)")
    p.add_argument("--num-val", type=int, default=None, help="synthetic validation images (default: the demo's)")
    args = p.parse_args(argv)
    recipe = demo_recipe.defaults()
    for name in ("steps", "num_train", "num_val"):
        if getattr(args, name) is not None:
            setattr(recipe, name, getattr(args, name))
    return args, recipe


def plan(args, recipe, out, data, num_classes):
    """[(name, seed, threshold or None, lr_D or None, folder, [train argv, evaluate argv])]."""
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        split = demo_recipe.make_split(recipe, os.path.join(out, f"split_{seed}.pkl"), seed)
        common, semi = demo_recipe.train_flags(recipe, data, num_classes, split, seed)
        common += ["--log-every", "1"]  # every iteration's selection count, for the share
        configs = [(None, None)] + [(float(t), float(lr)) for t in args.thresholds.split(",")
                                    for lr in args.lrs_d.split(",")]
        for threshold, lr_d in configs:
            if threshold is None:
                name, train = f"baseline_s{seed}", ["train_full.py", *common, *semi]
            else:
                name = f"s4gan_t{threshold:g}_lrd{lr_d:g}_s{seed}"
                train = ["train_s4GAN.py", *common, *semi, "--threshold-st", str(threshold),
                         "--learning-rate-D", str(lr_d)]
            folder = os.path.join(out, "runs", name)
            eval_argv = demo_recipe.evaluate_flags(recipe, data, num_classes, folder)
            runs.append((name, seed, threshold, lr_d, folder, [[*train, "--checkpoint-dir", folder], eval_argv]))
    return runs


def execute(run, threads):
    """Train and evaluate one run (unless done), its output in <folder>/log.txt; returns seconds taken."""
    name, _, _, _, folder, commands = run
    if os.path.isfile(os.path.join(folder, "eval", "result.txt")):
        return 0.0
    os.makedirs(folder, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    t0 = time.time()
    with open(os.path.join(folder, "log.txt"), "w") as log:
        for argv in commands:
            log.write("$ " + command_line(argv) + "\n")
            log.flush()
            code = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  env=env).returncode
            if code != 0:
                raise RuntimeError(f"{name}: exit {code}, see {folder}/log.txt")
    print(f"done {name} ({time.time() - t0:.0f} s)", flush=True)
    return time.time() - t0


def summarise(run, batch_size):
    """One run's numbers: mIoU, the share of unlabeled images self-trained, D's final scores."""
    name, seed, threshold, lr_d, folder, _ = run
    record = {"name": name, "seed": seed, "threshold_st": threshold, "learning_rate_D": lr_d,
              "miou": read_result(os.path.join(folder, "eval", "result.txt"))[2]}
    if threshold is not None:
        metrics = [r for r in read_metrics(folder) if "above_st" in r]
        trained = [r["above_st"] for r in metrics if r["iter"] > 0]  # iteration 0 trains none
        # the run's share: every unlabeled batch counted as full (the last of each pass is smaller)
        record["st_share_run"] = sum(trained) / (batch_size * len(trained))
        last = metrics[-LAST:]
        record["st_share_last"] = metrics[-1]["st_share"]
        record["score_real_last"] = statistics.mean(r["score_real"] for r in last)
        record["score_fake_last"] = statistics.mean(r["score_fake"] for r in last)
    return record


def spread(values, sign=""):
    """'mean (a / b / ...)' in %."""
    return (f"{100 * statistics.mean(values):{sign}.1f} "
            f"({' / '.join(f'{100 * v:{sign}.1f}' for v in values)})")


def report(records, recipe, seeds):
    """The Markdown table: per configuration, mIoU and its paired difference to the baseline of the
    same seed, how often self-training acted, and D's scores near the end."""
    groups = {}
    for r in records:
        groups.setdefault((r["threshold_st"], r["learning_rate_D"]), []).append(r)
    baseline = {r["seed"]: r["miou"] for r in groups.get((None, None), [])}
    lines = [f"| run | --threshold-st | --learning-rate-D | mIoU % (seeds {seeds}) | minus the baseline of the "
             f"same seed | better in | self-trained, whole run | self-trained, last {LAST} it. | "
             f"D(ground truth), last {LAST} | D(prediction), last {LAST} |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (threshold, lr_d), rs in groups.items():
        mious = [r["miou"] for r in rs]
        if threshold is None:
            lines.append(f"| baseline | - | - | {spread(mious)} | | | | | | |")
            continue
        diffs = [r["miou"] - baseline[r["seed"]] for r in rs if r["seed"] in baseline]
        paired = f"{spread(diffs, '+')} | {sum(d > 0 for d in diffs)} of {len(diffs)}" if diffs else " | "
        mean = lambda key: statistics.mean(r[key] for r in rs)  # noqa: E731
        lines.append(f"| s4GAN | {threshold:g} | {lr_d:g} | {spread(mious)} | {paired} | "
                     f"{100 * mean('st_share_run'):.1f}% | {100 * mean('st_share_last'):.1f}% | "
                     f"{mean('score_real_last'):.2f} | {mean('score_fake_last'):.2f} |")
    head = (f"Synthetic dataset ({recipe.num_train} training, {recipe.num_val} validation images), labeled ratio "
            f"{recipe.labeled_ratio}, {recipe.backbone} from scratch, {recipe.crop}x{recipe.crop} crops, batch "
            f"{recipe.batch_size}, {recipe.steps} iterations, segmenter lr {recipe.learning_rate}. mIoU: mean "
            f"(each seed); the shares and D's scores: means over the seeds.\n\n")
    return head + "\n".join(lines) + "\n"


def write_report(out, records, recipe, seeds):
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump(records, f, indent=1)
    table = report(records, recipe, seeds)
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(table)
    return table


def main(argv=None):
    args, recipe = parse(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data, num_classes = demo_recipe.make_data(recipe, out)
    runs = plan(args, recipe, out, data, num_classes)
    threads = max(1, (os.cpu_count() or 1) // max(1, args.parallel))
    t0 = time.time()
    print(f"{len(runs)} runs, {args.parallel} at a time, {threads} threads each", flush=True)
    records, failed, table = {}, [], ""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        jobs = {pool.submit(execute, run, threads): k for k, run in enumerate(runs)}
        for job in concurrent.futures.as_completed(jobs):
            k = jobs[job]
            try:
                seconds = job.result()
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                failed.append(runs[k][0])
                continue
            records[k] = dict(summarise(runs[k], recipe.batch_size), seconds=round(seconds, 1))
            # the report so far after every run: a study cut short still leaves one
            table = write_report(out, [records[j] for j in sorted(records)], recipe, args.seeds)
    first = args.seeds.split(",")[0]
    shown = {run[0]: run[4] for k, run in enumerate(runs) if str(run[1]) == first and k in records}
    plot_runs({n: read_metrics(f) for n, f in shown.items()}, os.path.join(out, f"curves_seed{first}.png"),
              title=f"seed {first}", thresholds={n: read_threshold(f) for n, f in shown.items()})
    print("\n" + table + f"\nwrote {out}/study.md, study.json, curves_seed{first}.png ({time.time() - t0:.0f} s)")
    if failed:
        print(f"error: {len(failed)} runs failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
