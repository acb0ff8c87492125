"""How long a plan takes: seconds per iteration from --sec-per-iter, a --calibrate measurement, or the
rows of benchmarks/RESULTS.md for this device."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from utils.errors import UserError
from experiments.scripts import ROOT, command_line, flag_value
from experiments.catalog import DEFAULT_BATCH
from experiments.plan import at_root, exists

RESULTS = os.path.join(ROOT, "benchmarks", "RESULTS.md")


def device_name():
    """This machine's first GPU (nvidia-smi), else CPU: which benchmark rows apply."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20).stdout.strip().splitlines()
            if out:
                return out[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return "CPU"


def measured_gpus(rows):
    """The GPUs benchmarks/RESULTS.md has rows for, in the order of the file ("GPU: NVIDIA H200, ...")."""
    names = []
    for row in rows:
        match = re.match(r"\W*GPU:\s*([^,*]+)", row["device"])
        if match and match.group(1).strip() not in names:
            names.append(match.group(1).strip())
    return names


def estimate_device(requested=None, rows=()):
    """(the device whose speed the estimate uses, a note or None). --bench-device wins ('cpu': this
    machine's CPU); else this machine's GPU; else the GPU measured last in benchmarks/RESULTS.md, as
    the runs of a table will happen on GPUs, not on the CPU of the machine that plans them."""
    gpus = measured_gpus(rows)
    if requested:
        if requested.lower() == "cpu":
            return "CPU", None
        matching = [g for g in gpus if requested.lower() in g.lower()]
        if len(matching) != 1:
            raise UserError(f"--bench-device {requested}: benchmarks/RESULTS.md has rows for "
                            f"{', '.join(gpus + ['cpu'])} only (for another GPU: --calibrate on it, or --sec-per-iter)")
        return matching[0], None
    here = device_name()
    if here != "CPU" or not gpus:
        return here, None
    return gpus[-1], (f"no GPU here: the estimate uses the rows measured on {gpus[-1]} (--bench-device cpu: this "
                      f"machine's CPU; --calibrate on the machine that will train)")


def network_key(model, backbone):
    """The segmenter of a workload: its backbone for DeepLabv2 (the rows' and plans' usual form),
    else model:backbone, so that DeepLabv3+ on ResNet-101 never takes DeepLabv2's measurement."""
    return backbone if model == "deeplabv2" else f"{model}:{backbone}"


def workload(kind, argv, table):
    """(configuration that must match a measurement, images forwarded per iteration, pixels per image)."""
    amp, channels_last = flag_value(argv, "--amp", "off"), "--channels-last" in argv
    if kind == "mlmt":
        size = int(flag_value(argv, "--image-size", 320))
        lab, unlab = int(flag_value(argv, "--batch-size-lab", 16)), int(flag_value(argv, "--batch-size-unlab", 80))
        config = ("mlmt", flag_value(argv, "--backbone", "resnet101"), amp, channels_last)
        return config, lab + 2 * unlab, size * size  # both views of an unlabeled image are forwarded
    h, w = (int(v) for v in flag_value(argv, "--input-size", table.crop).split(","))
    batch = int(flag_value(argv, "--batch-size", DEFAULT_BATCH[kind]))
    network = network_key(flag_value(argv, "--model", "deeplabv2"), flag_value(argv, "--backbone", "resnet101"))
    config = ("s4gan" if kind == "s4gan" else "full", network, amp, channels_last)
    return config, batch * (3 if kind == "s4gan" else 1), h * w  # s4GAN: labeled, unlabeled and real batches


def benchmark_rows(path):
    """Training-speed rows of a benchmarks/RESULTS.md: each table row with the command printed
    above it and the device text (the section heading, or a paragraph starting CPU:/GPU:)."""
    try:
        text = open(path).read()
    except OSError:
        return []
    rows, device, command, header = [], "", "", None
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines or lines[0].startswith("```"):
            continue
        if lines[0].startswith("#"):
            if lines[0].startswith("## "):
                device, command = lines[0][3:], ""
            continue
        if lines[0].startswith("|"):
            for line in lines:
                cells = [c.strip() for c in line.strip("|").split("|")]
                if "s / iter" in cells:
                    header = cells
                elif header and len(cells) == len(header) and not set(line) <= set("|-: "):
                    rows.append({"device": device, "command": command, **dict(zip(header, cells))})
            header = None
            continue
        paragraph = " ".join(lines)
        if re.match(r"(\*\*)?(CPU|GPU)\b", paragraph):
            device = paragraph
        commands = re.findall(r"`([^`]*bench_(?:train|mlmt)\.py[^`]*)`", paragraph)
        if commands:
            command = commands[-1]
    # a torch.compile row measures what the trainers do not run
    return [r for r in rows if r["command"] and "images / s" in r and r.get("compile", "no") == "no"]


def measured_workload(row):
    """The (configuration, images per iteration, pixels) of a benchmark row: from its own cells where
    the table has them (model, batch, crop / image; the GPU check's tables), else from its command."""
    argv = shlex.split(row["command"])
    amp = row.get("amp", "off")
    channels_last = row.get("channels-last", "no") in ("yes", "on", "True")
    model = row.get("model", "")
    if "bench_mlmt.py" in row["command"] or "batch lab + unlab" in row:
        size = int(row.get("image") or flag_value(argv, "--image-size", 64))
        if "batch lab + unlab" in row:  # "16 + 80 x 2 views"
            lab, unlab = (int(v) for v in re.findall(r"\d+", row["batch lab + unlab"])[:2])
        else:
            lab, unlab = int(flag_value(argv, "--batch-size-lab", 4)), int(flag_value(argv, "--batch-size-unlab", 20))
        backbone = model.split()[0] if model else flag_value(argv, "--backbone", "resnet18")
        return ("mlmt", backbone, amp, channels_last), lab + 2 * unlab, size * size
    crop = (row.get("crop") or flag_value(argv, "--crop", "97")).replace("x", ",").split(",")
    h, w = int(crop[0]), int(crop[-1])
    mode = row.get("mode", "s4gan")
    batch = int(re.match(r"\d+", row["batch"]).group()) if "batch" in row else int(flag_value(argv, "--batch-size", 2))
    if model:  # deeplabv2-resnet101; a row naming its model otherwise matches no run
        name, _, backbone = model.rpartition("-")
    else:
        name, backbone = flag_value(argv, "--model", "deeplabv2"), flag_value(argv, "--backbone", "resnet18")
    config = (mode, network_key(name, backbone), amp, channels_last)
    return config, batch * (3 if mode == "s4gan" else 1), h * w


def estimate_speeds(plan, device, sec_per_iter=None):
    """{kind: (seconds per iteration, where it comes from)} for the kinds of run in the plan.

    In order: --sec-per-iter; <root>/calibration.json written by --calibrate for the same
    configuration; a benchmarks/RESULTS.md row of this device, model, precision and memory format,
    scaled to the run's images per iteration and pixels (a rough figure: speed is not linear in
    the batch on a GPU). A training iteration of the baseline costs about one s4GAN batch, so
    either row serves the other when only one is measured."""
    speeds = {}
    try:
        given = {k: float(v) for k, v in (item.split("=") for item in sec_per_iter.split(","))} if sec_per_iter else {}
    except ValueError:
        raise UserError(f"--sec-per-iter {sec_per_iter}: METHOD=SECONDS,..., e.g. baseline=0.4,s4gan=0.9") from None
    calibration = {}
    if exists(os.path.join(plan.root, "calibration.json")):
        with open(at_root(os.path.join(plan.root, "calibration.json"))) as f:
            calibration = json.load(f)
    rows = benchmark_rows(RESULTS)
    for kind in plan.methods:
        run = next(r for r in plan.runs if r.method == kind)
        config, images, pixels = workload(kind, run.train, plan.table)
        if kind in given:
            speeds[kind] = (given[kind], "--sec-per-iter")
            continue
        measured = calibration.get(kind)
        if measured and measured["config"] == [*config, images, pixels]:
            speeds[kind] = (measured["sec_per_iter"], f"--calibrate on {measured['device']}")
            continue
        here = [r for r in rows if device.lower() in r["device"].lower() or (device == "CPU" and "CPU" in r["device"])]
        found = closest_row(here, config, images, pixels)
        if found:
            seconds, row, factor, factor_text = found
            (mode, backbone, amp, channels_last), row_images, row_pixels = measured_workload(row)
            where = row["device"].replace("*", "").split(",")[0]
            speeds[kind] = (seconds, f"benchmarks/RESULTS.md ({where}: {backbone} {mode}, {row_images} images of "
                                     f"{row_pixels} pixels per iteration at {row['images / s']} images/s; scaled to "
                                     f"{images} images of {pixels} pixels{factor_text})")
    return speeds


def precision_text(amp, channels_last):
    return ("fp32" if amp == "off" else amp) + (" + channels-last" if channels_last else "")


def closest_row(rows, config, images, pixels):
    """(seconds per iteration, the row, precision factor, its text) from the rows of one device: a row of
    the same kind (the baseline and s4GAN serve each other), backbone and precision, scaled to the run's
    images and pixels; else one in another precision, times the ratio of the two precisions measured on
    that device for another workload (e.g. the s4GAN step's fp32 / bf16 + channels-last); None if none."""
    def same_kind(a, b):
        return a == b or {a, b} == {"s4gan", "full"}

    def seconds(row, factor=1.0):
        _, _, row_pixels = measured_workload(row)
        return images / (float(row["images / s"]) * row_pixels / pixels) * factor

    best = None
    for row in rows:
        row_config, row_images, _ = measured_workload(row)
        if same_kind(row_config[0], config[0]) and row_config[1:] == config[1:]:
            key = (row_config[0] == config[0], row_images)
            if best is None or key > best[0]:
                best = (key, row)
    if best:
        return seconds(best[1]), best[1], 1.0, ""
    for row in rows:
        row_config, _, _ = measured_workload(row)
        if not (same_kind(row_config[0], config[0]) and row_config[1] == config[1]):
            continue
        pairs = {}
        for other in rows:  # the same workload measured in both precisions
            other_config, other_images, other_pixels = measured_workload(other)
            per_image = 1.0 / float(other["images / s"])
            pairs.setdefault((other_config[:2], other_images, other_pixels), {})[other_config[2:]] = per_image
        for workload_key, measured in pairs.items():
            if config[2:] in measured and row_config[2:] in measured:
                factor = measured[config[2:]] / measured[row_config[2:]]
                text = (f", measured in {precision_text(*row_config[2:])}: x{factor:.2f} for "
                        f"{precision_text(*config[2:])}, the ratio of the two on this device for "
                        f"{workload_key[0][1]} {workload_key[0][0]}")
                return seconds(row, factor), row, factor, text
    return None


def calibrate(plan, device):
    """Time a few iterations of each kind of run at its real configuration with the benchmarks'
    scripts; write <root>/calibration.json, which later plans read."""
    out = {}
    for kind in plan.methods:
        run = next(r for r in plan.runs if r.method == kind)
        config, images, pixels = workload(kind, run.train, plan.table)
        a = run.train
        if kind == "mlmt":
            bench = ["benchmarks/bench_mlmt.py", "--backbone", config[1], "--image-size",
                     flag_value(a, "--image-size", "320"), "--batch-size-lab", flag_value(a, "--batch-size-lab", "16"),
                     "--batch-size-unlab", flag_value(a, "--batch-size-unlab", "80")]
        else:
            model, _, backbone = config[1].rpartition(":")
            bench = ["benchmarks/bench_train.py", "--mode", config[0], "--model", model or "deeplabv2",
                     "--backbone", backbone, "--crop",
                     flag_value(a, "--input-size", plan.table.crop), "--batch-size",
                     flag_value(a, "--batch-size", str(DEFAULT_BATCH[kind]))]
        bench += ["--amp", config[2], "--channels-last", "on" if config[3] else "off", "--iters", "3", "--warmup", "1",
                  "--num-workers", flag_value(a, "--num-workers", "4")]
        print("$ " + command_line(bench), flush=True)
        proc = subprocess.run([sys.executable, *bench], cwd=ROOT, capture_output=True, text=True)
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines or "sec_per_iter" not in lines[-1]:
            raise UserError(f"--calibrate: {bench[0]} failed: {(proc.stderr or str(lines))[-300:]}")
        out[kind] = {"config": [*config, images, pixels], "sec_per_iter": lines[-1]["sec_per_iter"],
                     "device": lines[-1]["device"]}
        print(f"{kind}: {out[kind]['sec_per_iter']} s / iteration on {out[kind]['device']}", flush=True)
    os.makedirs(at_root(plan.root), exist_ok=True)
    with open(at_root(os.path.join(plan.root, "calibration.json")), "w") as f:
        json.dump(out, f, indent=1)


def run_hours(run, speeds):
    """Estimated wall-clock hours of a run's training (None if unknown); device-hours are that times
    its GPUs, as the seconds per iteration are those of one process with its share of the batch."""
    speed = speeds.get(run.method)
    return run.iterations * speed[0] / 3600 if speed and run.iterations else None


def hours_text(hours):
    """An estimate in hours, with as many digits as it deserves."""
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.2g}" if hours < 1 else f"{hours:.1f}"
