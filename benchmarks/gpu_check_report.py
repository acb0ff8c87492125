"""The GPU check's report: gpu_report.md (one page of tables in benchmarks/RESULTS.md's layout)
and gpu_check.log, from the results benchmarks/gpu_check.py gathered."""


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
    lines += ["", "## Speed targets", "",
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
                                 "images / s", "TFLOP/s", "peak MB", "data wait"], [train_row(r) for r in train_rows])]
            counted = {}
            for r in train_rows:
                if r["result"] and r["result"].get("gflops_per_iter"):
                    counted.setdefault(r["result"]["model"], r["result"])
            if counted:
                per_model = "; ".join(
                    f"{model} {res['gflops_per_iter']:.0f} GFLOP per iteration ("
                    + ", ".join(f"{k} {v:.0f}" for k, v in res["gflops_by_network"].items()) + ")"
                    for model, res in counted.items())
                lines += ["", "TFLOP/s: the FLOPs of one step counted by `torch.utils.flop_counter` (convolutions "
                              "and matrix products, forward and backward, a multiply-add as 2; element-wise "
                              f"operations not counted), over the median time: {per_model}."]
        original = next((r for r in rows if r["key"] == "original-fp32"), None)
        if original:
            lines += ["", *render_original(original, next((r for r in rows if r["key"] == "s4gan-fp32"), None))]
        eval_rows = [r for r in rows if r["script"] == "bench_eval.py"]
        if eval_rows:
            lines += ["", "### Evaluation (`bench_eval.py`)", "", *command_lines(eval_rows, data_dir), ""]
            lines += [table(["batch", "amp", "channels-last", "s / image", "images / s", "model s / image",
                                 "overhead", "peak MB"], [eval_row(r) for r in eval_rows])]
        mlmt_rows = [r for r in rows if r["script"] == "bench_mlmt.py"]
        if mlmt_rows:
            lines += ["", "### MLMT step (`bench_mlmt.py`)", "", *command_lines(mlmt_rows, data_dir), ""]
            lines += [table(["model", "image", "batch lab + unlab", "amp", "channels-last", "views made on",
                                 "s / iter", "images / s", "peak MB", "data wait"], [mlmt_row(r) for r in mlmt_rows])]
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
        return [r["label"], "", "", "", "", "", "", *not_measured(r, 5)]
    mode = "s4gan" if res["mode"] == "s4gan" else res["mode"]
    return [mode, res["model"], f"{res['batch']} x {3 if res['mode'] == 's4gan' else 1}", res["crop"], res["amp"],
            "yes" if res["channels_last"] else "no", res.get("compile", "no"), f"{res['sec_per_iter']:.3f}",
            f"{res['images_per_sec']:.1f}", fmt(res.get("tflops_per_sec"), ".1f"), f"{res['peak_mem_mb']:.0f}",
            f"{res['data_wait_share']:.1%}"]


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
        return [r["label"], "", "", "", "", "", *not_measured(r, 4)]
    return [res["model"], res["image_size"], f"{res['batch_lab']} + {res['batch_unlab']} x 2 views", res["amp"],
            "yes" if res["channels_last"] else "no", "device" if res.get("augment_on_device") else "loaders",
            f"{res['sec_per_iter']:.3f}", f"{res['images_per_sec']:.1f}",
            f"{res['peak_mem_mb']:.0f}", f"{res['data_wait_share']:.1%}"]


def render_original(row, ours_row):
    """The authors' step against ours, fp32, same card, same run (--original)."""
    lines = ["### The original's step (`--original`)", "",
             "The authors' `train_s4GAN.py` loop executed on the same card in fp32 (their code has no mixed "
             "precision), through `tests/crosscheck/driver.py`, one batch from the same data served to their "
             "three loaders every iteration (no loading timed), S updated by a per-tensor loop as PyTorch 0.4's "
             "SGD did; ours: the fp32 row above (loaders included).", ""]
    theirs, ours = row["result"], ours_row and ours_row["result"]
    if theirs is None:
        return lines + [f"Not measured: {row['status']}."]
    same = ours and (ours["model"], ours["batch"], ours["crop"]) == (theirs["model"], theirs["batch"], theirs["crop"])
    ratio = f"{ours['sec_per_iter'] / theirs['sec_per_iter']:.2f}" if same else "- (not the same sizes)"
    return lines + [table(["step", "batch", "crop", "s / iter", "images / s", "ours / original (time)"],
                          [["original train_s4GAN.py, fp32", f"{theirs['batch']} x 3", theirs["crop"],
                            f"{theirs['sec_per_iter']:.3f}", f"{theirs['images_per_sec']:.1f}", ratio]])]


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
