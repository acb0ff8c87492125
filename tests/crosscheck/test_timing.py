"""The timing of the authors' s4GAN step that benchmarks/gpu_check.py reports with --original: their
train_s4GAN.py loop runs (here on the CPU, one image of 321x321, the smallest their D accepts) and
every iteration is timed."""
import os
import sys

import pytest

from tests.helpers import ROOT
from tests.voc_fixture import make_voc

pytestmark = pytest.mark.original
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def test_the_original_step_is_timed(original, tmp_path):
    import gpu_check_children
    data = make_voc(str(tmp_path / "voc"), sizes_train=[(330, 340)], sizes_val=[(330, 340)], seed=1)
    row = gpu_check_children.original_row(["--batch-size", "1", "--crop", "321", "--iters", "1", "--warmup", "1",
                                           "--device", "cpu", "--data-dir", data, "--original", original])
    assert row["printed_iterations"] == 3  # warm-up, timed, and the last (saving, not timed)
    assert row["sec_per_iter"] > 0 and row["images_per_sec"] == pytest.approx(3 / row["sec_per_iter"], rel=0.01)
    assert (row["model"], row["batch"], row["crop"], row["amp"]) == ("deeplabv2-resnet101", 1, "321", "off")


def test_evaluate_against_the_original_benchmark_runs(original, tmp_path):
    """benchmarks/bench_eval_original.py: both evaluations run on the same images; one JSON line each,
    ours with the share of pixels predicted as its first flag set."""
    import json
    import subprocess
    proc = subprocess.run([sys.executable, "benchmarks/bench_eval_original.py", "--original", original, "--images", "1",
                           "--repeats", "1", "--workdir", str(tmp_path), "--ours=", "--ours=--fold-bn --channels-last"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["command"] for r in rows] == ["original", "evaluate.py", "evaluate.py --fold-bn --channels-last"]
    assert rows[0]["agreement"] is None and rows[1]["agreement"] == 1.0 and rows[2]["agreement"] > 0.99
    assert all(r["seconds"] > 0 for r in rows) and rows[0]["speedup_vs_original"] == 1.0
    assert os.path.isfile(tmp_path / "theirs" / "result.txt") and os.path.isfile(tmp_path / "ours1" / "result.txt")
