"""reproduce.py: the plans against the original README's commands, job scripts, a
miniature table run end to end, --collect, and a stopped sweep that resumes."""
import glob
import os
import pathlib
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

import pytest
from PIL import Image

import evaluate
import reproduce
import train_full
import train_s4GAN
from data.synthetic import write_dataset
from methods.supervised import SupervisedStep
from tests.helpers import ROOT, expect_error
from experiments import catalog, running, speed
from utils.errors import run_cli

TINY = ["--backbone", "resnet18", "--restore-from", "none", "--init", "kaiming", "--input-size", "33,33",
        "--batch-size", "2", "--num-workers", "0", "--log-every", "1", "--sgd-mode", "standard"]


def plan_of(argv, capsys):
    """The runs reproduce.py plans for argv, printing nothing else: [(train argv, eval argv)], stdout."""
    code = reproduce.main(argv)
    out = capsys.readouterr().out
    assert code == 0
    runs = re.findall(r"^#\d+ +\S+ .*\n +(.*)\n +(.*)$", out, re.M)
    return [(shlex.split(t), shlex.split(e)) for t, e in runs], out


def flags(argv):
    """{flag: value (True for a switch)} of a command line after its script."""
    script = next(k for k, a in enumerate(argv) if a.endswith(".py"))
    out, rest = {}, argv[script + 1:]
    for k, a in enumerate(rest):
        if a.startswith("--"):
            out[a] = rest[k + 1] if k + 1 < len(rest) and not rest[k + 1].startswith("--") else True
    return out


def docs_commands():
    """Every command of the bash blocks of docs/*.md, as argv lists (continuations joined, comments dropped)."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        for block in re.findall(r"```bash\n(.*?)```", open(path).read(), re.S):
            out += [shlex.split(c, comments=True) for c in block.replace("\\\n", " ").splitlines()
                    if shlex.split(c, comments=True)]
    return out


def readme_commands(dataset):
    """The commands of a dataset in the README's block "The original's commands": those after its
    comment line (`# PASCAL VOC 2012...`) up to the next dataset's."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## The original's commands"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    groups, current = {}, None
    for line in block.splitlines():
        heading = re.match(r"# (PASCAL VOC 2012|PASCAL-Context|Cityscapes)\b", line)
        if heading:
            current = groups.setdefault(heading.group(1), [])
        elif shlex.split(line, comments=True):
            current.append(shlex.split(line, comments=True))
    return groups[dataset]


def readme_command(script):
    """The first command of `script` in the README's "The original's commands", else in docs/ (MLMT's)."""
    original = [c for dataset in ("PASCAL VOC 2012", "PASCAL-Context", "Cityscapes") for c in readme_commands(dataset)]
    return next(c for c in original + docs_commands() if c[1] == script)


VARYING = {"--checkpoint-dir", "--labeled-ratio", "--split-id", "--restore-from", "--pkl-file", "--exp-name"}
ADDED = VARYING | {"--resume", "--save-dir", "--random-seed", "--output-dir", "--with-mlmt", "--mlmt-file"}


@pytest.mark.parametrize("table,heading,ratios", [
    ("voc", "PASCAL VOC 2012", ["1/50", "1/20", "1/8", "full"]),
    ("context", "PASCAL-Context", ["1/8", "1/4", "full"]),
    ("cityscapes", "Cityscapes", ["1/8", "1/4", "full"]),
])
def test_each_plan_has_the_readme_flags_for_every_fraction_and_split(table, heading, ratios, capsys, monkeypatch):
    monkeypatch.setattr(catalog, "mlmt_available", lambda: False)
    runs, out = plan_of(["--table", table, "--out", "ck"], capsys)
    assert len(runs) == 2 * len(ratios) * 3 and "train_mlmt.py" not in out
    assert f"labeled   {', '.join(ratios)}; splits 0, 1, 2" in out and "Nothing was run" in out
    readme = {}
    for cmd in readme_commands(heading):
        readme.setdefault(cmd[1], {}).update(flags(cmd))
    for train, ev in runs:
        script = train[1]
        for argv, expected in ((train, readme[script]), (ev, readme["evaluate.py"])):
            got = flags(argv)
            for flag, value in expected.items():
                if flag not in VARYING:
                    assert got.get(flag) == value, (argv, flag)
            assert set(got) <= set(expected) | ADDED, (argv, set(got) - set(expected) - ADDED)
            assert got["--resume" if argv is train else "--save-dir"]
        got = flags(train)
        split = re.search(r"_s(\d)$", got["--checkpoint-dir"]).group(1)
        if "full" in got["--checkpoint-dir"]:  # no split: the replicates differ by seed
            assert "--labeled-ratio" not in got and got["--random-seed"] == str(1234 + int(split))
        else:
            folder = {"voc": "voc", "context": "pc", "cityscapes": "city"}[table]
            assert got["--split-id"] == f"./splits/{folder}/seeded_{split}.pkl"
        assert flags(ev)["--restore-from"] == os.path.join(got["--checkpoint-dir"], "VOC_40000.pth")


def test_mlmt_rows_appear_only_with_train_mlmt_and_follow_its_readme_command(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(catalog, "mlmt_available", lambda: False)
    runs, _ = plan_of(["--table", "voc", "--ratios", "1/8", "--splits", "0"], capsys)
    assert [t[1] for t, _ in runs] == ["train_full.py", "train_s4GAN.py"]
    monkeypatch.setattr(catalog, "mlmt_available", lambda: True)
    runs, out = plan_of(["--table", "voc", "--ratios", "1/8", "--splits", "0", "--out", "ck"], capsys)
    (s4gan, _), (mlmt, fused) = runs[1], runs[2]
    readme = flags(readme_command("train_mlmt.py"))
    got = flags(mlmt)
    for flag, value in readme.items():
        if flag not in VARYING:
            assert got[flag] == value
    assert got["--labeled-ratio"] == "0.125" and got["--pkl-file"] == flags(s4gan)["--split-id"]
    assert got["--resume"] == "auto" and got["--output-dir"] == "ck/mlmt_0_125_s0"
    fused = flags(fused)
    assert fused["--with-mlmt"] is True and fused["--restore-from"] == "ck/s4gan_0_125_s0/VOC_40000.pth"
    assert fused["--mlmt-file"] == "ck/mlmt_0_125_s0/output_ema_raw_100.txt"
    assert "s4GAN + MLMT" in out


def test_mlmt_method_without_its_trainer_is_an_error(capsys, monkeypatch):
    monkeypatch.setattr(catalog, "mlmt_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        run_cli(reproduce.main, ["--table", "voc", "--methods", "mlmt"])
    assert exc.value.code == 2 and "train_mlmt.py is not in the repository" in capsys.readouterr().err


def test_options_adapt_the_plan(capsys, monkeypatch):
    monkeypatch.setattr(catalog, "mlmt_available", lambda: False)
    runs, out = plan_of(["--table", "voc", "--init", "coco", "--ratios", "0.125", "--splits", "1", "--steps", "1000",
                         "--eval-snapshot", "500", "--data-dir", "/data/voc", "--launcher", "torchrun", "--gpus", "2",
                         "--sec-per-iter", "baseline=0.36,s4gan=0.72", "--", "--amp", "bf16"], capsys)
    (base, base_eval), (semi, _) = runs
    assert base[:2] == ["torchrun", "--nproc_per_node=2"] and flags(base)["--batch-size"] == "5"
    assert flags(semi)["--batch-size"] == "4" and flags(semi)["--amp"] == "bf16"
    for argv in (base, semi):
        got = flags(argv)
        assert got["--restore-from"] == catalog.COCO_WEIGHTS and got["--num-steps"] == "1000"
        assert got["--data-dir"] == "/data/voc" and got["--split-id"] == "./splits/voc/seeded_1.pkl"
    assert flags(base_eval)["--restore-from"].endswith("baseline_0_125_s1/VOC_500.pth")
    assert flags(base_eval)["--data-dir"] == "/data/voc" and base_eval[0] == "python"
    assert "results/voc_coco.md" in out and "checkpoints/reproduce/voc_coco/" in out
    # 1000 iterations: 0.1 h (baseline) and 0.2 h (s4GAN) each, on 2 GPUs
    assert "about 0.1 h" in out and "about 0.2 h" in out and "about 0.6 GPU-hours" in out
    _, out = plan_of(["--table", "cityscapes", "--eval-snapshot", "readme", "--ratios", "1/4", "--splits", "0"], capsys)
    assert "VOC_30000.pth, the snapshot the original README evaluated" in out and "eval_VOC_30000" in out


@pytest.mark.parametrize("table", ["voc", "context", "cityscapes"])
def test_a_table_never_evaluates_a_snapshot_chosen_on_the_evaluation_set(table, capsys, monkeypatch):
    """best.pth (WRN-38 trainer) is picked by its validation score on the split evaluate.py scores:
    refused, and every planned evaluation reads a fixed VOC_<i>.pth."""
    monkeypatch.setattr(catalog, "mlmt_available", lambda: True)
    with pytest.raises(SystemExit) as exc:
        run_cli(reproduce.main, ["--table", table, "--eval-snapshot", "best"])
    assert exc.value.code == 2 and "selected on the evaluation set" in capsys.readouterr().err
    for snapshot in ("final", "readme", "5000"):
        runs, _ = plan_of(["--table", table, "--eval-snapshot", snapshot], capsys)
        assert runs and all(re.search(r"/VOC_\d+\.pth$", flags(e)["--restore-from"]) for _, e in runs)


def test_the_estimate_reads_the_benchmark_results(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(catalog, "mlmt_available", lambda: False)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## GPU: NVIDIA H100 80GB HBM3, 2026\n\n"
                       "`python benchmarks/bench_train.py --backbone resnet101 --batch-size 8 --crop 321`\n\n"
                       "| mode | amp | channels-last | s / iter | images / s |\n|---|---|---|---|---|\n"
                       "| s4gan | off | no | 0.500 | 48.0 |\n| s4gan | bf16 | yes | 0.200 | 120.0 |\n")
    rows = speed.benchmark_rows(str(results))
    assert [r["images / s"] for r in rows] == ["48.0", "120.0"] and "H100" in rows[0]["device"]
    monkeypatch.setattr(speed, "benchmark_rows", lambda path: rows)
    _, out = plan_of(["--table", "voc", "--ratios", "1/8", "--splits", "0", "--bench-device", "H100"], capsys)
    assert "s4GAN: 0.5 s / iteration" in out and "about 5.6 h" in out  # 24 images at 48/s, 40k iterations
    assert "DeepLabv2 baseline: 0.208 s / iteration" in out  # 10 images at the same rate
    _, out = plan_of(["--table", "voc", "--ratios", "1/8", "--splits", "0", "--bench-device", "H100", "--",
                      "--amp", "bf16", "--channels-last"], capsys)
    assert "s4GAN: 0.2 s / iteration" in out
    # a device without rows: one line naming those with rows
    expect_error(reproduce.main, ["--table", "voc", "--bench-device", "A100"], capsys,
                 "--bench-device A100: benchmarks/RESULTS.md has rows for NVIDIA H100 80GB HBM3, cpu only")
    # this machine's GPU without rows: the plan says so and estimates nothing
    monkeypatch.setattr(speed, "device_name", lambda: "NVIDIA A100-SXM4-80GB")
    _, out = plan_of(["--table", "voc", "--ratios", "1/8", "--splits", "0"], capsys)
    assert "no measurement for NVIDIA A100-SXM4-80GB" in out and "not estimated" in out


def test_without_a_gpu_the_estimate_is_in_gpu_hours_of_the_measured_gpu(capsys, monkeypatch):
    """The runs will happen on GPUs: a plan made on a CPU machine is estimated with the GPU rows of
    benchmarks/RESULTS.md (naming the GPU), the H200's MLMT row included; CPU hours on request."""
    monkeypatch.setattr(catalog, "mlmt_available", lambda: True)
    monkeypatch.setattr(speed, "device_name", lambda: "CPU")
    _, out = plan_of(["--table", "voc"], capsys)
    assert "GPU-hours of training on NVIDIA H200" in out and "not estimated" not in out
    assert "no GPU here: the estimate uses the rows measured on NVIDIA H200" in out
    assert re.search(r"s4GAN \+ MLMT: [\d.]+ s / iteration from benchmarks/RESULTS.md \(GPU: NVIDIA H200: resnet101 mlmt", out)
    _, out = plan_of(["--table", "voc", "--bench-device", "cpu"], capsys)
    assert "hours of training on this machine's CPU" in out and "GPU-hours" not in out


def test_a_row_in_another_precision_is_scaled_by_the_devices_ratio():
    """Hand-worked: fp32 s4GAN 48 images/s, bf16 + channels-last 120 (ratio 2.5 per image); an MLMT row
    measured only in bf16 + channels-last at 600 images/s of 176 images -> fp32: 176 / 600 x 2.5 s."""
    rows = [{"device": "GPU: X", "command": "python benchmarks/bench_train.py --backbone resnet101 --batch-size 8 "
             "--crop 321", "mode": "s4gan", "amp": amp, "channels-last": cl, "images / s": rate}
            for amp, cl, rate in (("off", "no", "48.0"), ("bf16", "yes", "120.0"))]
    rows.append({"device": "GPU: X", "command": "python benchmarks/bench_mlmt.py --backbone resnet101",
                 "model": "resnet101 student + teacher", "image": "320", "batch lab + unlab": "16 + 80 x 2 views",
                 "amp": "bf16", "channels-last": "yes", "images / s": "600.0"})
    seconds, row, factor, text = speed.closest_row(rows, ("mlmt", "resnet101", "off", False), 176, 320 * 320)
    assert seconds == pytest.approx(176 / 600 * 2.5) and factor == pytest.approx(2.5) and row is rows[2]
    assert "x2.50 for fp32" in text
    assert speed.closest_row(rows, ("mlmt", "resnet50", "off", False), 176, 320 * 320) is None


def test_the_gpu_check_tables_give_estimates_from_their_own_cells(tmp_path):
    """The GPU check's tables name model, batch and crop per row under one shared list of commands."""
    results = tmp_path / "RESULTS.md"
    results.write_text(
        "## GPU: NVIDIA H200, 2026\n\n"
        "- fp32: `python benchmarks/bench_train.py --backbone resnet101 --batch-size 8 --crop 321`\n"
        "- WRN-38: `python benchmarks/bench_train.py --model deeplabv3p_wrn38 --crop 256,512 --batch-size 8`\n\n"
        "| mode | model | batch | crop | amp | channels-last | compile | s / iter | images / s |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        "| s4gan | deeplabv2-resnet101 | 8 x 3 | 321 | bf16 | yes | no | 0.081 | 297.7 |\n"
        "| s4gan | deeplabv3p_wrn38-wrn38 | 8 x 3 | 256,512 | bf16 | yes | no | 0.117 | 205.9 |\n"
        "| s4gan | deeplabv2-resnet101 | 8 x 3 | 321 | bf16 | yes | segmenter | 0.089 | 270.3 |\n\n"
        "`python benchmarks/bench_mlmt.py --backbone resnet101 --image-size 320`\n\n"
        "| model | image | batch lab + unlab | amp | channels-last | s / iter | images / s |\n|---|---|---|---|---|---|---|\n"
        "| resnet101 student + teacher | 320 | 16 + 80 x 2 views | bf16 | yes | 0.193 | 912.2 |\n")
    rows = speed.benchmark_rows(str(results))
    assert [r["images / s"] for r in rows] == ["297.7", "205.9", "912.2"]  # not the torch.compile row
    assert [speed.measured_workload(r) for r in rows] == [
        (("s4gan", "resnet101", "bf16", True), 24, 321 * 321),
        (("s4gan", "deeplabv3p_wrn38:wrn38", "bf16", True), 24, 256 * 512),  # another model: never DeepLabv2's
        (("mlmt", "resnet101", "bf16", True), 176, 320 * 320)]
    assert any("H200" in r["device"] for r in speed.benchmark_rows(os.path.join(speed.ROOT, "benchmarks", "RESULTS.md")))


def fake_python(tmp_path):
    """A `python` on PATH that logs its arguments instead of running anything."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "python"
    fake.write_text('#!/bin/bash\necho "$*" >> "$FAKE_LOG"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_LOG=str(tmp_path / "log"))


@pytest.mark.parametrize("kind", ["slurm", "shell"])
def test_emitted_job_script_runs_the_planned_run_of_each_index(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(catalog, "mlmt_available", lambda: True)
    script = tmp_path / "jobs"
    runs, out = plan_of(["--table", "cityscapes", "--splits", "0,2", "--out", str(tmp_path / "ck"), "--emit", kind,
                         "--emit-to", str(script)], capsys)
    assert f"wrote {script}" in out and len(runs) == 12
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if kind == "slurm":
        assert "#SBATCH --array=0-11" in text and "--table cityscapes --splits 0,2" in text and "--emit" not in text
    env = fake_python(tmp_path)
    for k in (0, 7, 11):
        open(env["FAKE_LOG"], "w").close()
        cmd = ["bash", str(script)] + ([] if kind == "slurm" else [str(k)])
        proc = subprocess.run(cmd, env={**env, "SLURM_ARRAY_TASK_ID": str(k)}, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        logged = open(env["FAKE_LOG"]).read().splitlines()
        assert logged == [shlex.join(runs[k][0][1:]), shlex.join(runs[k][1][1:])]
    proc = subprocess.run(["bash", str(script)] + ([] if kind == "slurm" else ["12"]),
                          env={**env, "SLURM_ARRAY_TASK_ID": "12"}, capture_output=True, text=True)
    assert proc.returncode == 2 and "no run 12" in proc.stderr
    # a run whose final snapshot exists only evaluates
    final = tmp_path / "ck" / "s4gan_0_125_s0" / "VOC_40000.pth"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"")
    open(env["FAKE_LOG"], "w").close()
    subprocess.run(["bash", str(script)] + ([] if kind == "slurm" else ["1"]), env={**env, "SLURM_ARRAY_TASK_ID": "1"})
    assert open(env["FAKE_LOG"]).read().splitlines() == [shlex.join(runs[1][1][1:])]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    write_dataset(root, 24, 4, seed=0, max_size=48, min_size=36)
    return root


SCRIPTS = {"train_full.py": train_full.main, "train_s4GAN.py": train_s4GAN.main, "evaluate.py": evaluate.main}


def in_process(argv, cwd=None):
    """sweep's run_command, but calling the script's main() in this process (saves the interpreter
    and torch start-up of every subprocess)."""
    assert argv[0] == sys.executable
    try:
        run_cli(SCRIPTS[argv[1]], argv[2:])
        return 0
    except SystemExit as exc:
        return exc.code or 0


@pytest.fixture
def fast_dir(tmp_path):
    """A folder in memory where there is one (/dev/shm): every run writes and fsyncs 100-200 MB of
    checkpoints, which takes seconds on a busy disk."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    folder = tempfile.mkdtemp(prefix="test_reproduce_", dir="/dev/shm")
    try:
        yield pathlib.Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_miniature_table_end_to_end_stopped_resumed_and_collected(synthetic, fast_dir, capsys, monkeypatch):
    """2 methods x 2 fractions x 2 splits on the synthetic set, 2 steps each. The sweep is stopped
    by a SIGTERM during the third run; run #5 has a broken latest.pth. Run again: the finished runs
    are skipped, the stopped one resumes, #5 fails and the others go on (status 1); once #5 is
    repaired a third --run (real subprocesses) runs only it. --collect rebuilds the same table."""
    own = ["--table", "folder", "--data-dir", synthetic, "--steps", "2", "--out", str(fast_dir / "ck"), "--results-dir",
           str(fast_dir / "results"), "--eval-flags", "--num-workers 0", "--ratios", "1/4,0.5", "--splits", "0,1",
           "--methods", "baseline,s4gan"]
    argv = lambda *action: [*own, *action, "--", *TINY]  # noqa: E731
    runs, _ = plan_of(argv(), capsys)
    names = [os.path.basename(flags(t)["--checkpoint-dir"]) for t, _ in runs]
    assert names == ["baseline_0_25_s0", "s4gan_0_25_s0", "baseline_0_25_s1", "s4gan_0_25_s1", "baseline_0_5_s0",
                     "s4gan_0_5_s0", "baseline_0_5_s1", "s4gan_0_5_s1"]
    assert [flags(t)["--random-seed"] for t, _ in runs] == ["1234", "1234", "1235", "1235"] * 2  # split k: seed
    ck = fast_dir / "ck"
    (ck / names[5]).mkdir(parents=True)
    (ck / names[5] / "latest.pth").write_bytes(b"not a checkpoint")

    monkeypatch.setattr(running, "run_command", in_process)
    original, starts = SupervisedStep.__call__, []

    def stopped_in_third_run(self, i, **batches):
        starts.extend([i] if i == 0 else [])
        if i == 0 and len(starts) == 2:  # the second baseline run: #2
            os.kill(os.getpid(), signal.SIGTERM)  # as the cluster or Ctrl-C would: the run saves and stops
        return original(self, i, **batches)

    monkeypatch.setattr(SupervisedStep, "__call__", stopped_in_third_run)
    assert reproduce.main(argv("--run")) == 130
    out = capsys.readouterr().out
    assert "=== [1/8] baseline_0_25_s0 (DeepLabv2 baseline, 1/4, split 0): training | 8 to do" in out
    assert "stopped during baseline_0_25_s1" in out and "=== [4/8]" not in out
    assert (ck / names[2] / "latest.pth").is_file() and not (ck / names[2] / "VOC_2.pth").exists()
    finished = [ck / n / f for n in names[:2] for f in ("VOC_2.pth", "eval_VOC_2/result.txt")]
    stamps = [f.stat().st_mtime_ns for f in finished]
    monkeypatch.setattr(SupervisedStep, "__call__", original)

    assert reproduce.main(argv("--run")) == 1
    out, err = capsys.readouterr()
    assert out.count("done, skipped") == 2 and [f.stat().st_mtime_ns for f in finished] == stamps
    assert "baseline_0_25_s1 (DeepLabv2 baseline, 1/4, split 1): resuming from latest.pth" in out
    assert "at iteration 1" in out
    iters = [int(m) for m in re.findall(r'"iter": (\d+)', (ck / names[2] / "metrics.jsonl").read_text())]
    assert iters == [0, 1]  # resumed, not restarted
    assert "FAILED s4gan_0_5_s0: training exited with status 2" in out and "1 of 8 runs failed" in err
    assert "=== [8/8] s4gan_0_5_s1" in out
    md = (fast_dir / "results" / "folder.md").read_text()
    assert re.search(r"\| s4GAN \| 1/2 \| \d+\.\d \| 1 \| – \| – \|", md)
    assert "| s4gan_0_5_s0 | s4GAN | 1/2 | 0 | – |" in md

    os.remove(ck / names[5] / "latest.pth")
    monkeypatch.undo()  # real subprocesses from here on
    assert reproduce.main(argv("--run")) == 0
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 7 and "s4gan_0_5_s0 (s4GAN, 1/2, split 0): training | 1 to do" in out
    md = (fast_dir / "results" / "folder.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith(("| DeepLabv2 baseline |", "| s4GAN |"))]
    assert [r.split(" | ")[1] for r in rows] == ["1/4", "1/2"] * 2
    assert all(re.search(r"\| \d+\.\d ± \d+\.\d \| 2 \| – \| – \|$", r) for r in rows), rows
    assert md.count("eval_VOC_2/result.txt") == 8
    with Image.open(fast_dir / "results" / "folder.png") as png:
        assert png.format == "PNG" and png.size[0] > 300
    os.remove(fast_dir / "results" / "folder.md")
    assert reproduce.main(argv("--collect")) == 0
    assert (fast_dir / "results" / "folder.md").read_text() == md


def test_sigint_waits_for_the_child_to_save(fast_dir):
    """Ctrl-C reaches the whole process group: the driver waits for the run to exit by itself."""
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGINT, lambda *a: (time.sleep(0.5), open(sys.argv[1], 'w').write('saved'), "
             "sys.exit(130)))\nprint('ready', flush=True)\ntime.sleep(30)\n")
    driver = ("import sys; sys.path.insert(0, sys.argv[1])\nfrom experiments.scripts import run_command\n"
              "code = run_command([sys.executable, '-c', sys.argv[2], sys.argv[3]])\nprint('child', code)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver, ROOT, child, str(fast_dir / "state")],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert "child 130" in out and (fast_dir / "state").read_text() == "saved"


def test_the_documented_gpu_hours_are_the_plans(capsys, monkeypatch):
    """docs/reproducing.md's table of GPU-hours is what the plan prints on a machine without a GPU
    (from the H200 rows of benchmarks/RESULTS.md), row by row."""
    monkeypatch.setattr(catalog, "mlmt_available", lambda: True)
    monkeypatch.setattr(speed, "device_name", lambda: "CPU")
    text = open(os.path.join(ROOT, "docs", "reproducing.md")).read()
    rows = re.findall(r"^\| `(\w+)`[^|]* \| (fp32|bf16 \+ channels-last) \| ([\d.]+) \| ([\d.]+) \|\s*([\d.]*)\s*\| "
                      r"([\d.]+) \|$", text, re.M)
    assert len(rows) == 6
    bf16 = ["--amp", "bf16", "--channels-last"]
    for table, precision, *hours in rows:
        argv = ["--table", table] + (["--mlmt-flags", " ".join(bf16), "--", *bf16] if precision != "fp32" else [])
        _, out = plan_of(argv, capsys)
        estimate = re.search(r"^Estimate: about ([\d.]+) GPU-hours of training on NVIDIA H200 \((.*)\);", out, re.M)
        by_kind = dict(re.findall(r"(DeepLabv2 baseline|s4GAN|MLMT classifiers) ([\d.]+)", estimate.group(2)))
        planned = [by_kind.get(k, "") for k in ("DeepLabv2 baseline", "s4GAN", "MLMT classifiers")]
        assert [*planned, estimate.group(1)] == hours, (table, precision)
        assert abs(sum(float(h) for h in hours[:3] if h) - float(hours[3])) <= 0.15
