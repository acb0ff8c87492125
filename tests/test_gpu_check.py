"""benchmarks/gpu_check.py: the --smoke run on the CPU end to end (every step, the report's files and
structure), and the report's verdicts on made-up GPU numbers."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_check  # noqa: E402
import gpu_check_children  # noqa: E402
import gpu_check_report  # noqa: E402

TRAIN_KEYS = ["s4gan-fp32", "s4gan-bf16", "s4gan-bf16-cl"]
EVAL_KEYS = ["eval-fp32-1", "eval-fp32-2", "eval-bf16-cl-1", "eval-bf16-cl-2"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run with any GPU hidden (--device cpu) and its own data folder."""
    out = tmp_path_factory.mktemp("gpu_check")
    data = tmp_path_factory.mktemp("gpu_check_data") / "synthetic"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(out), "--smoke", "--device", "cpu",
                           "--data-dir", str(data)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    report = json.loads((out / "gpu_report.json").read_text()) if (out / "gpu_report.json").is_file() else None
    return proc, out, report


def test_smoke_run_completes_and_writes_the_three_files(smoke):
    proc, out, report = smoke
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert sorted(os.listdir(out)) == ["gpu_check.log", "gpu_report.json", "gpu_report.md"]
    assert report["complete"] and report["smoke"] and report["device"] == "cpu" and report["problem"] is None
    assert "done in" in proc.stdout
    log = (out / "gpu_check.log").read_text()
    assert "===== environment: ok" in log and "===== cuda tests: ok" in log


def test_smoke_report_steps_environment_and_cuda_tests(smoke):
    _, _, report = smoke
    assert report["environment"]["cuda_available"] is False
    assert report["environment_line"].startswith("no CUDA device: CPU only")
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps)[:2] == ["environment", "cuda tests"]
    for step in report["steps"]:
        assert set(step) >= {"step", "limit_s", "seconds", "status", "command"}
        assert step["status"] == "ok" or step["status"].startswith("not tried"), step
        assert step["seconds"] <= max(step["limit_s"], 1)
    assert steps["s4GAN step bf16 + channels-last + torch.compile"]["status"].startswith("not tried")
    # the CUDA tests are skipped on a CPU, each reported with its reason; none failed
    tests = report["tests"]
    assert tests["status"] == "ok" and len(tests["results"]) >= 11
    assert all(t["result"] == "skipped" and t["message"] == "needs a CUDA GPU" for t in tests["results"])
    names = {t["test"] for t in tests["results"]}
    for trainer in tests["trainers"]:
        assert f"test_every_trainer_runs_3_iterations_on_the_device[{trainer}]" in names
    assert {"train_full", "train_s4GAN", "train_s4GAN_wrn38"} <= set(tests["trainers"])


def test_smoke_report_benchmark_rows_profile_and_targets(smoke):
    _, _, report = smoke
    rows = {r["key"]: r for r in report["benchmarks"]}
    assert list(rows)[:7] == TRAIN_KEYS + EVAL_KEYS
    for key in TRAIN_KEYS + ["wrn38-bf16-cl"]:
        result = rows[key]["result"]
        assert rows[key]["status"] == "ok" and result["bench"] == "train", rows[key]
        assert result["sec_per_iter"] > 0 and result["images_per_sec"] > 0 and result["peak_mem_mb"] > 0
        assert 0 <= result["data_wait_share"] <= 1
        if key != "wrn38-bf16-cl":  # the s4GAN rows count their FLOPs: S and D, forward and backward
            assert set(result["gflops_by_network"]) == {"DeepLabV2", "S4GANDiscriminator"}
            assert result["gflops_per_iter"] == pytest.approx(sum(result["gflops_by_network"].values()), abs=0.2)
            assert result["tflops_per_sec"] >= 0
        expected = {"s4gan-fp32": ("off", False), "s4gan-bf16": ("bf16", False)}.get(key, ("bf16", True))
        assert (result["amp"], result["channels_last"]) == expected
    assert rows["wrn38-bf16-cl"]["result"]["model"] == "deeplabv3p_wrn38-wrn38"
    assert rows["v3p-bf16-cl"]["status"] == "ok" and rows["v3p-bf16-cl"]["result"]["model"] == "deeplabv3p-resnet50"
    for key in EVAL_KEYS:
        result = rows[key]["result"]
        assert result["bench"] == "eval" and result["batch"] == int(key[-1]) and result["images_per_sec"] > 0
    if os.path.isfile(os.path.join(ROOT, "benchmarks", "bench_mlmt.py")):
        assert rows["mlmt-bf16-cl"]["result"]["bench"] == "mlmt"
        assert rows["mlmt-bf16-cl"]["result"]["augment_on_device"] is False
        assert rows["mlmt-bf16-cl-device-views"]["result"]["augment_on_device"] is True
    assert rows["s4gan-bf16-cl-compile"]["result"] is None
    profile = report["profile"]["profile"]
    parts = {p["part"] for p in profile["parts"]}
    assert {"s4GAN step", "Optimizer.step#LegacySGD.step", "loaders: next batch"} <= parts
    assert profile["top_operators"] and profile["measure"] == "cpu"
    assert [t["verdict"] for t in report["targets"]] == ["not measured (no GPU)"] * 7
    assert report["data"]["status"] == "ok" and report["data"]["size"] == 64


def test_smoke_report_markdown_is_one_page_of_well_formed_tables(smoke):
    _, out, _ = smoke
    text = (out / "gpu_report.md").read_text()
    for heading in ("# GPU check: CPU (no GPU)", "## Speed targets", "## CUDA tests",
                    "### Training step (`bench_train.py`)", "### Evaluation (`bench_eval.py`)",
                    "### Where the time goes", "## Steps"):
        assert heading in text, heading
    assert text.count("**not measured (no GPU)**") == 7
    assert "not tried: smoke run" in text
    # every table: the same number of cells in each line as in its header
    for block in re.findall(r"(?:^\|.*\|\n)+", text, flags=re.M):
        widths = {line.count("|") for line in block.strip().splitlines()}
        assert len(widths) == 1, block
    assert len(text.splitlines()) < 150


# ---------------------------------------------------------------- the verdicts, on made-up GPU rows

def fake_check(rows):
    check = object.__new__(gpu_check.Check)
    check.device, check.sizes, check.rows = "cuda", gpu_check.REAL, []
    for key, result in rows.items():
        check.rows.append({"key": key, "label": key, "script": "", "argv": [], "seconds": 1.0,
                           "status": "ok" if result else "timed out after 75 s", "result": result})
    return check


def train(sec, peak, wait=0.01, tflops=None):
    return {"sec_per_iter": sec, "peak_mem_mb": peak, "data_wait_share": wait, "num_workers": 4,
            **({"tflops_per_sec": tflops} if tflops else {})}


def evaluation(images_per_sec, model_sec):
    return {"images_per_sec": images_per_sec, "model_sec_per_image": model_sec}


def test_targets_met_not_met_and_not_measured():
    targets = fake_check({
        "s4gan-fp32": train(0.080, 20000, tflops=200), "s4gan-bf16-cl": train(0.045, 12000, wait=0.02),
        "eval-fp32-1": evaluation(40, 0.02), "eval-fp32-8": evaluation(200, 0.004),
        "eval-bf16-cl-1": evaluation(60, 0.015), "eval-bf16-cl-8": evaluation(180, 0.004),
        "mlmt-bf16-cl": train(0.2, 9000, wait=0.5), "mlmt-bf16-cl-device-views": train(0.2, 9000, wait=0.099)}).targets()
    assert [t["verdict"] for t in targets] == ["met", "met", "met", "met", "met", "not met", "met"]
    assert targets[0]["target"] == "s4GAN step fp32 <= 80 ms"
    assert targets[0]["measured"] == "0.080 s/iter, 200 TFLOP/s"
    assert targets[1]["target"] == "s4GAN step bf16 + channels-last <= 45 ms"
    assert targets[6]["measured"] == "9.9% (4 workers per loader, 2 loaders)"
    targets = fake_check({"s4gan-fp32": train(0.081, 20000), "s4gan-bf16-cl": train(0.046, 21000, wait=0.05),
                          "eval-fp32-1": evaluation(40, 0.02), "eval-fp32-8": None,
                          "mlmt-bf16-cl-device-views": train(0.2, 9000, wait=0.10)}).targets()
    assert [t["verdict"] for t in targets] == ["not met", "not met", "not met", "not met",
                                               "not measured (timed out after 75 s)", "not measured (row not run)",
                                               "not met"]
    assert targets[1]["measured"] == "0.046 s/iter"
    assert targets[3]["measured"] == "5.0% (4 workers per loader, 3 loaders)"


def test_flop_count_of_a_step_by_hand():
    """bench_train.count_flops on a step whose FLOPs are known: a linear layer's forward (2 x batch x
    in x out) and backward (the same twice: input and weight gradients), per network, and TFLOP/s."""
    import bench_train
    layer = torch.nn.Linear(30, 20, bias=False)

    def step(i, labeled):
        layer(labeled).sum().backward()

    out = bench_train.count_flops(step, 0, ["labeled"], [iter([torch.randn(8, 30, requires_grad=True)])], 1e-3)
    flops = 3 * 2 * 8 * 30 * 20  # 28,800
    assert out == {"gflops_per_iter": round(flops / 1e9, 1), "gflops_by_network": {"Linear": round(flops / 1e9, 1)},
                   "tflops_per_sec": round(flops / 1e-3 / 1e12, 2)}


def test_report_of_a_gpu_run_renders(tmp_path):
    """The page as a GPU run would write it (made-up numbers): the targets, the rows, the profile."""
    args = gpu_check.parse(["--out", str(tmp_path)])
    check = gpu_check.Check(args, ["--out", str(tmp_path)])
    check.cleanup()
    row = {"bench": "train", "mode": "s4gan", "model": "deeplabv2-resnet101", "batch": 8, "crop": "321",
           "amp": "off", "channels_last": False, "num_workers": 4, "sec_per_iter": 0.9, "images_per_sec": 26.7,
           "peak_mem_mb": 30000.0, "data_wait_share": 0.01}
    one = {"bench": "eval", "batch": 1, "amp": "off", "channels_last": False, "sec_per_image": 0.02,
           "images_per_sec": 50.0, "model_sec_per_image": 0.018, "overhead_share": 0.1, "peak_mem_mb": 900.0}
    check.environment = {"python": "3.12", "torch": "2.11", "cuda_build": "13.0", "cudnn": 91000, "cpu_count": 16,
                         "cpu": None, "cuda_available": True, "nccl": "2.27", "driver": "580",
                         "tf32": {"cudnn_conv": True, "matmul": False},
                         "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.2, "capability": "sm_90"}]}
    check.device = "cuda"
    check.data = {"num_train": 240, "num_val": 96, "size": 500, "data_dir": "/tmp/d", "status": "ok", "reused": False}
    for key, result in (("s4gan-fp32", row), ("s4gan-bf16-cl", {**row, "amp": "bf16", "channels_last": True, "sec_per_iter": 0.3,
                                                                 "peak_mem_mb": 18000.0, "tflops_per_sec": 812.0,
                                                                 "gflops_per_iter": 243600.0,
                                                                 "gflops_by_network": {"DeepLabV2": 243000.0,
                                                                                       "S4GANDiscriminator": 600.0}}),
                        ("eval-fp32-1", one), ("eval-fp32-8", {**one, "batch": 8, "images_per_sec": 210.0,
                                                               "model_sec_per_image": 0.004})):
        script = "bench_eval.py" if key.startswith("eval") else "bench_train.py"
        check.add_row(key, key, script, ["--backbone", "resnet101", "--data-dir", "/tmp/d"],
                      {"status": "ok", "seconds": 30.0}, "", result)
    check.profile = {"status": "ok", "argv": [], "row": {**row, "amp": "bf16", "channels_last": True},
                     "profile": {"iterations": 3, "measure": "device", "device_busy_ms": 250.0, "upsampling_ms": 12.0,
                                 "parts": [{"part": "s4GAN step", "calls": 1.0, "host_ms": 280.0, "device_ms": 250.0}],
                                 "top_operators": [{"operator": "aten::cudnn_convolution", "calls": 300.0, "ms": 120.0,
                                                    "share": 0.48}]}}
    text = gpu_check_report.render_markdown(check.report_json(), gpu_check.REAL)
    assert text.startswith("# GPU check: NVIDIA H100 80GB HBM3, ")
    assert "| s4GAN step fp32 <= 80 ms | 0.900 s/iter | **not met** |" in text
    assert "**not measured (row not run)**" in text  # the bf16 + channels-last evaluation rows
    assert ("deeplabv2-resnet101 243600 GFLOP per iteration (DeepLabV2 243000, S4GANDiscriminator 600)"
            in text)
    assert "The GPU is busy 250 ms per iteration" in text and "TF32 allowed for cuDNN convolutions" in text
    assert "| s4gan | deeplabv2-resnet101 | 8 x 3 | 321 | bf16 | yes | no | 0.300 | 26.7 | 812.0 | 18000 | 1.0% |" in text


def test_test_results_from_a_cut_short_pytest_run():
    text = ("tests/test_cuda.py::test_a PASSED [ 10%]\n"
            "tests/test_cuda.py::test_b[x] SKIPPED (needs a CUDA GPU) [ 20%]\n"
            "tests/test_cuda.py::test_c ")
    results = gpu_check.parse_pytest_lines(text, "timed out after 200 s")
    assert [(r["test"], r["result"]) for r in results] == [("test_a", "passed"), ("test_b[x]", "skipped"),
                                                          ("test_c", "timed out")]


def test_real_sizes_without_a_gpu_stop_with_a_usage_error(tmp_path, monkeypatch):
    """Without --smoke on a machine without a GPU (here: its environment step says so), the check
    stops after the environment with exit status 2 and a report saying why."""
    args = gpu_check.parse(["--out", str(tmp_path)])
    check = gpu_check.Check(args, ["--out", str(tmp_path)])
    environment = {"python": "3", "torch": "2", "cuda_build": None, "cudnn": None, "cpu_count": 2, "cpu": None,
                   "cuda_available": False, "gpus": []}

    def fake_run(name, cmd, limit, extra_env=None):
        record = {"step": name, "limit_s": limit, "seconds": 0.1, "status": "ok", "command": ""}
        check.steps.append(record)
        return record, json.dumps(environment) + "\n", ""

    monkeypatch.setattr(check, "run", fake_run)
    try:
        assert check.execute() == 2
    finally:
        check.cleanup()
    assert "run with --smoke" in check.problem
    assert "**Stopped:**" in (tmp_path / "gpu_report.md").read_text()
    assert [s["step"] for s in check.steps] == ["environment"]


def test_unknown_step_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse(["--out", "x", "--steps", "train,nope"])
    assert exc.value.code == 2 and "unknown nope" in capsys.readouterr().err


def test_profile_summary_merges_a_parts_host_range_with_its_gpu_span():
    """On a GPU each labelled part comes twice (host range, GPU span); the GPU's busy time counts
    kernels only, not the spans around them (counting both once reported 126% busy)."""
    from types import SimpleNamespace as Event

    def event(key, device, count=1, cpu=0.0, device_total=0.0, device_self=0.0):
        return Event(key=key, device_type=f"DeviceType.{device}", count=count, cpu_time_total=cpu,
                     self_cpu_time_total=cpu, device_time_total=device_total, self_device_time_total=device_self)

    events = [event("s4GAN step", "CPU", 2, cpu=280_000.0, device_total=40_000.0),
              event("s4GAN step", "CUDA", 2, device_total=240_000.0, device_self=240_000.0),
              event("aten::convolution_backward", "CUDA", 400, device_self=60_000.0),
              event("aten::convolution_backward", "CPU", 400, cpu=9_000.0, device_total=60_000.0),
              event("aten::add_", "CUDA", 2000, device_self=40_000.0)]
    summary = gpu_check_children.summarise_profile(events, iterations=2, on_cuda=True)
    assert summary["parts"] == [{"part": "s4GAN step", "calls": 1.0, "host_ms": 140.0, "device_ms": 120.0}]
    assert summary["device_busy_ms"] == 50.0  # (60 + 40) ms of kernels over 2 iterations


def test_original_flag_adds_the_original_step_and_is_checked(tmp_path, capsys):
    """--original: a folder without train_s4GAN.py is a usage error naming it; a checkout adds the
    original's fp32 step after the rows of this project, before torch.compile (its run:
    tests/crosscheck/test_timing.py)."""
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse(["--out", str(tmp_path / "out"), "--original", str(tmp_path)])
    assert exc.value.code == 2 and f"--original {tmp_path}: no train_s4GAN.py there" in capsys.readouterr().err
    (tmp_path / "train_s4GAN.py").write_text("")
    args = gpu_check.parse(["--out", str(tmp_path / "out"), "--original", str(tmp_path), "--steps", "train,profile,compile"])
    check = gpu_check.Check(args, [])
    check.cleanup()
    check.device = "cuda"
    plan = check.plan()
    assert [r[0] for r in plan] == TRAIN_KEYS + ["profile", "original-fp32", "s4gan-bf16-cl-compile"]
    key, label, kind, script, argv, one, limit = plan[-2]
    assert (kind, script, one, limit) == ("original", "train_s4GAN.py", "off,0", "original")
    assert argv[argv.index("--original") + 1] == str(tmp_path) and argv[argv.index("--batch-size") + 1] == "8"


def test_original_step_renders_with_ours_over_theirs():
    theirs = {"model": "deeplabv2-resnet101", "batch": 8, "crop": "321", "sec_per_iter": 0.2, "images_per_sec": 120.0}
    ours = {"model": "deeplabv2-resnet101", "batch": 8, "crop": "321", "sec_per_iter": 0.1}
    lines = gpu_check_report.render_original({"result": theirs, "status": "ok"}, {"result": ours})
    assert "\n".join(lines).endswith("| original train_s4GAN.py, fp32 | 8 x 3 | 321 | 0.200 | 120.0 | 0.50 |")
    lines = gpu_check_report.render_original({"result": theirs, "status": "ok"}, {"result": {**ours, "crop": "33"}})
    assert "\n".join(lines).endswith("| - (not the same sizes) |")
    lines = gpu_check_report.render_original({"result": None, "status": "timed out after 90 s"}, None)
    assert lines[-1] == "Not measured: timed out after 90 s."
