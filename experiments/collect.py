"""The Markdown table and the plot of a plan, from the runs' result.txt files alone."""
import os

from experiments.scripts import mean_std, read_miou
from experiments.plan import at_root, exists

def best_of_snapshots(run):
    """The highest mIoU % over every evaluated snapshot of a run (None before all are evaluated)."""
    values = [read_miou(at_root(result)) for _, result in run.evaluations] if exists(run.trained) else [None]
    return None if None in values else 100 * max(values)


def cells(plan, per_run=None):
    """{(method, ratio): (mean %, std %, n)} over the evaluated splits, and {run name: mIoU % or None}
    (`per_run`: the runs' values, by default the evaluated snapshot's)."""
    if per_run is None:
        per_run = {}
        for run in plan.runs:
            miou = read_miou(at_root(run.result)) if exists(run.trained) else None
            per_run[run.name] = None if miou is None else 100 * miou
    out = {}
    for method in plan.methods:
        for ratio in plan.ratios:
            values = [per_run[r.name] for r in plan.runs if (r.method, r.ratio) == (method, ratio)
                      and per_run[r.name] is not None]
            out[(method, ratio)] = mean_std(values)
    return out, per_run


def _mean_text(mean, std, n):
    return "not run yet" if n == 0 else (_number(mean) if n == 1 else f"{_number(mean)} ± {_number(std)}")


def _number(value, digits=1):
    return "–" if value != value else f"{value:.{digits}f}"


def _row(cells):
    return "| " + " | ".join(cells) + " |"


def _value(value):
    return "–" if value is None else f"{value:.2f}"


def markdown(plan, table_cells, per_run):
    """The table of a plan. Today's protocol (tables that evaluate every snapshot) gives the final
    snapshot's mean and, marked, the best snapshot's; the paper's tables give the paper's number."""
    t = plan.table
    with_best = t.every_snapshot
    if with_best:
        best_cells, best_runs = cells(plan, {r.name: best_of_snapshots(r) for r in plan.runs})
        about = (f"Each cell: mean ± sample standard deviation over the seeds evaluated (n). final: the snapshot "
                 f"`VOC_{plan.snapshot}.pth` of {plan.steps}-step runs. best †: the best of every snapshot, chosen on "
                 f"the validation images it is scored on (selected on the evaluation set, as papers of the field "
                 f"report it: not a fair estimate).")
    else:
        about = (f"Each cell: mean ± sample standard deviation over the splits evaluated (n); evaluated snapshot "
                 f"`VOC_{plan.snapshot}.pth` of {plan.steps}-step runs." +
                 (" Paper: the paper's number as quoted by later papers and the first author, with how well it is "
                  "sourced (A: two agreeing sources or the first author; B: one secondary source; C: inferred); – "
                  "where none is quoted. Δ = ours − paper." if t.paper else ""))
    lines = [f"# {t.title}: mIoU (%)", "", about, ""]
    lines += [f"Note: {n}" for n in t.notes] + ([""] if t.notes else [])
    columns = ["method", "labeled", "final" if with_best else "ours", "n", *(["best †"] if with_best else ["paper", "Δ"])]
    lines += [_row(columns), _row(["---"] * len(columns))]
    for method in plan.methods:
        for ratio in plan.ratios:
            mean, std, n = table_cells[(method, ratio)]
            row = [t.method_label(method), t.label(ratio), _mean_text(mean, std, n), str(n)]
            if with_best:
                best = best_cells[(method, ratio)]
                row.append(_mean_text(*best) if best[2] else "–")
            else:
                paper = t.paper.get(method, {}).get(ratio)
                row += [f"{paper[0]:.1f} [{paper[1]}]" if paper else "–", f"{mean - paper[0]:+.1f}" if paper and n else "–"]
            lines.append(_row(row))
    columns = ["run", "method", "labeled", *(["seed", "final", "best †"] if with_best else ["split", "mIoU"]), "result"]
    lines += ["", "Runs (`reproduce.py --collect` with the same table flags rebuilds this file from their result.txt):",
              "", _row(columns), _row(["---"] * len(columns))]
    for run in plan.runs:
        values = [per_run[run.name], *([best_runs[run.name]] if with_best else [])]
        lines.append(_row([run.name, t.method_label(run.method), t.label(run.ratio), str(run.split),
                           *map(_value, values), f"`{run.result}`"]))
    return "\n".join(lines) + "\n"


def plot(plan, table_cells, path):
    """mIoU against the labeled fraction (log scale): one line per method with error bars (std over
    splits), the paper's numbers as hollow markers of the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for k, method in enumerate(plan.methods):
        colour, label = f"C{k}", plan.table.method_label(method)
        points = [(r, *table_cells[(method, r)][:2]) for r in plan.ratios if table_cells[(method, r)][2]]
        if points:
            x, mean, std = zip(*points)
            ax.errorbar(x, mean, yerr=[0 if s != s else s for s in std], color=colour, marker="o", capsize=4,
                        label=f"{label} (ours)")
        paper = sorted(plan.table.paper.get(method, {}).items())
        if paper:
            ax.plot([r for r, _ in paper], [v for _, (v, _) in paper], linestyle="none", marker="o", markersize=10,
                    markerfacecolor="none", markeredgecolor=colour, markeredgewidth=1.5, label=f"{label} (paper)")
    ratios = sorted(set(plan.ratios) | {r for m in plan.methods for r in plan.table.paper.get(m, {})})
    ax.set_xscale("log")
    ax.set_xticks(ratios)
    ax.set_xticklabels([plan.table.label(r) for r in ratios])
    ax.minorticks_off()
    ax.set_xlabel("labeled fraction of the training images (log scale)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(plan.table.title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def collect(plan):
    """Write results/<table>.md and .png from the runs' result files; returns the Markdown."""
    table_cells, per_run = cells(plan)
    text = markdown(plan, table_cells, per_run)
    os.makedirs(at_root(plan.results_dir), exist_ok=True)
    with open(at_root(plan.markdown_path), "w") as f:
        f.write(text)
    plot(plan, table_cells, at_root(plan.png_path))
    return text
