"""Crashes while a checkpoint is written, damaged training states, a full disk, stale temporary files."""
import errno
import os
import signal
import subprocess
import sys

import pytest
import torch

import train_s4GAN
from engine.state import DamagedState, load_state
from model import build_segmenter
from tests.helpers import ROOT, assert_identical, expect_error, run_main, tiny_eval_flags
from tests.test_reliability import final_files, s4gan_flags
from utils import checkpoint
from utils.checkpoint import STAGES
from utils.errors import UserError, run_cli

STEPS = ["--num-steps", "6", "--save-pred-every", "2"]  # latest.pth after iterations 2 (next: 3), 4 (5), 5 (6)


@pytest.fixture(scope="module")
def reference(voc_root, module_tmp):
    """The uninterrupted run."""
    ckpt = module_tmp("reference")
    assert run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS))[0] == 0
    return final_files(ckpt, 6)


def fault_at(stage, action, nth=2, name="latest.pth"):
    """A hook for checkpoint.set_fault: `action` at `stage` of the nth write of `name`."""
    seen = {}

    def hook(at, path):
        if os.path.basename(path) != name:
            return
        if at == STAGES[0]:
            seen["n"] = seen.get("n", 0) + 1
        if at == stage and seen.get("n") == nth:
            action()
    return hook


def loadable(path):
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("stage", STAGES)
def test_a_crash_at_any_stage_of_a_save_keeps_the_last_good_state(voc_root, tmp_path, reference, stage):
    """An exception at each stage of the second latest.pth save: the state saved before stays
    loadable (as latest.pth, or latest.prev.pth when the crash fell between the two renames), the
    snapshots too, no temporary file is left, and --resume auto ends bit-identical."""
    ckpt = tmp_path / "ck"

    def crash():
        raise RuntimeError("simulated crash")

    checkpoint.set_fault(fault_at(stage, crash))
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_s4GAN.main(s4gan_flags(voc_root, ckpt, *STEPS))
    finally:
        checkpoint.set_fault(None)
    names = set(os.listdir(ckpt))
    assert not any(n.startswith(".tmp-") for n in names), names
    assert loadable(ckpt / "VOC_2.pth") and loadable(ckpt / "VOC_4.pth")
    kept = ckpt / ("latest.prev.pth" if stage == "rotated" else "latest.pth")
    expected = 5 if stage == "renamed" else 3  # after the rename the new state is the good one
    assert loadable(kept)["iteration"] == expected
    assert run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto"))[0] == 0
    assert_identical(final_files(ckpt, 6), reference)


@pytest.mark.parametrize("stage", ["written", "synced", "rotated"])
def test_sigkill_in_the_middle_of_a_save_then_resume(voc_root, tmp_path, capsys, reference, stage):
    """A process killed (SIGKILL) while it writes latest.pth: a half-written temporary file is
    removed when the run resumes; a complete one (surely after its fsync, or between the two
    renames, when latest.pth is missing) passes the checks and becomes latest.pth, and the run
    continues from that newer state. Either way it ends bit-identical."""
    ckpt = tmp_path / "ck"
    env = dict(os.environ, SEMISUP_TEST_FAULT=f"latest.pth:{stage}:kill:2", OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "train_s4GAN.py", *s4gan_flags(voc_root, ckpt, *STEPS)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = [n for n in os.listdir(ckpt) if n.startswith(".tmp-")]
    assert len(left) == 1 and left[0].endswith("-latest.pth"), left  # as large as the state
    assert (ckpt / "latest.pth").is_file() == (stage != "rotated")  # killed between the two renames: missing
    (ckpt / ".tmp-notours").write_text("a file of the user's")  # not of our naming pattern: kept
    try:
        complete = "digest" in load_state(str(ckpt / left[0]))
    except DamagedState:
        complete = False
    assert complete or stage == "written"  # killed before its flush, the file may still be whole
    code, out, err = run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto"), capsys)
    assert code == 0, err
    assert f"at iteration {5 if complete else 3}" in out  # the second save's state (next iteration 5)
    assert (f"note: a save interrupted after its file was complete left the state of iteration 5 in {left[0]}"
            in out) == complete
    assert not [n for n in os.listdir(ckpt) if n.startswith(".tmp-") and n != ".tmp-notours"]
    assert (ckpt / ".tmp-notours").is_file()
    assert_identical(final_files(ckpt, 6), reference)


def test_a_malformed_fault_variable_is_one_line(voc_root, tmp_path):
    env = dict(os.environ, SEMISUP_TEST_FAULT="latest.pth:halfway", OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "train_s4GAN.py", *s4gan_flags(voc_root, tmp_path / "ck", *STEPS)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: SEMISUP_TEST_FAULT=latest.pth:halfway is not <file name>:<written|")


def damage(path, how):
    data = open(path, "rb").read()
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = b""
    elif how == "bit-flipped":  # a bit in the middle of the file, where the tensors' bytes are
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1:]
    elif how == "foreign":
        torch.save({"layer1.weight": torch.zeros(3)}, path)  # a weights file, not a training state
        return
    with open(path, "wb") as f:
        f.write(data)


def stopped_after_two_saves(voc_root, ckpt):
    """latest.pth (next iteration 5) and latest.prev.pth (3) of a run stopped at its third save."""
    def stop():
        raise RuntimeError("stop")

    checkpoint.set_fault(fault_at("written", stop, nth=3))
    try:
        with pytest.raises(RuntimeError):
            train_s4GAN.main(s4gan_flags(voc_root, ckpt, *STEPS))
    finally:
        checkpoint.set_fault(None)


@pytest.mark.parametrize("how", ["truncated", "empty", "bit-flipped", "foreign"])
def test_a_damaged_latest_falls_back_to_the_previous_generation(voc_root, tmp_path, capsys, reference, how):
    ckpt = tmp_path / "ck"
    stopped_after_two_saves(voc_root, ckpt)
    assert loadable(ckpt / "latest.pth")["iteration"] == 5 and loadable(ckpt / "latest.prev.pth")["iteration"] == 3
    damage(ckpt / "latest.pth", how)
    line = expect_error(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS, "--resume", str(ckpt / "latest.pth")),
                        capsys, f"--resume {ckpt / 'latest.pth'}")
    assert "Traceback" not in line
    code, out, err = run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto"), capsys)
    assert code == 0, err
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert "latest.pth" in warning and "latest.prev.pth" in warning and "iteration 3" in warning
    assert_identical(final_files(ckpt, 6), reference)


def test_a_second_fault_after_a_fallback_keeps_the_good_generation(voc_root, tmp_path, capsys, reference):
    """latest.pth damaged: the run falls back to latest.prev.pth and moves the damaged file aside.
    Its first save then crashes right after writing its file (where the rename of the damaged file
    onto latest.prev.pth would have been): the good generation is still there, and the run ends
    bit-identical."""
    ckpt = tmp_path / "ck"
    stopped_after_two_saves(voc_root, ckpt)
    damage(ckpt / "latest.pth", "truncated")
    seen = {}

    def hook(at, path):
        if os.path.basename(path) == "latest.pth":
            if seen.get("synced") and at in ("rotated", "renamed"):
                raise RuntimeError("second fault")
            seen["synced"] = seen.get("synced") or at == "synced"

    checkpoint.set_fault(hook)
    try:
        with pytest.raises(RuntimeError, match="second fault"):
            train_s4GAN.main(s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto"))
    finally:
        checkpoint.set_fault(None)
    out = capsys.readouterr().out
    assert f"(moved aside to {ckpt / 'latest.damaged.pth'})" in out
    assert loadable(ckpt / "latest.prev.pth")["iteration"] == 3
    with pytest.raises(Exception):
        loadable(ckpt / "latest.damaged.pth")  # kept as it was, for inspection
    assert run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto"))[0] == 0
    assert_identical(final_files(ckpt, 6), reference)


def test_a_save_checks_a_latest_it_did_not_write_before_rotating_it(voc_root, tmp_path, capsys):
    """A fresh run in a folder whose latest.pth is damaged (a run written over): that file is moved
    aside, not rotated onto latest.prev.pth."""
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / "latest.pth").write_bytes(b"not a state")
    argv = s4gan_flags(voc_root, ckpt, "--num-steps", "4", "--save-pred-every", "2")
    code, out, err = run_main(train_s4GAN.main, argv, capsys)
    assert code == 0, err
    assert f"moved aside to {ckpt / 'latest.damaged.pth'}" in out
    assert (ckpt / "latest.damaged.pth").read_bytes() == b"not a state"
    assert loadable(ckpt / "latest.prev.pth")["iteration"] == 3 and loadable(ckpt / "latest.pth")["iteration"] == 4


def test_both_generations_damaged_is_one_line(voc_root, tmp_path, capsys):
    ckpt = tmp_path / "ck"
    assert run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS))[0] == 0
    damage(ckpt / "latest.pth", "truncated")
    damage(ckpt / "latest.prev.pth", "empty")
    expect_error(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto"), capsys,
                 "latest.pth", "latest.prev.pth", "does not load")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_full_disk_or_io_error_while_saving(voc_root, tmp_path, capsys, reference, code):
    """One line naming the folder and the size needed, exit 2, the previous files intact; --resume
    auto later continues from the last good state, bit-identical."""
    ckpt = tmp_path / "ck"

    def fail():
        raise OSError(code, os.strerror(code))

    checkpoint.set_fault(fault_at("written", fail))
    try:
        line = expect_error(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS), capsys, "cannot write",
                            str(ckpt), "MB needed", os.strerror(code), "--resume auto")
    finally:
        checkpoint.set_fault(None)
    assert "free" in line
    assert loadable(ckpt / "latest.pth")["iteration"] == 3 and loadable(ckpt / "VOC_4.pth")
    assert not [n for n in os.listdir(ckpt) if n.startswith(".tmp-")]
    assert run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto"))[0] == 0
    assert_identical(final_files(ckpt, 6), reference)


def limit_file_size(limit):
    """For a child process: writes past `limit` bytes fail in the kernel (EFBIG), as on a full disk."""
    def set_limit():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def test_a_write_that_fails_in_the_kernel_is_one_line(voc_root, tmp_path, reference):
    """A real failing write (not an injected exception): torch.save itself reports it only as
    'unexpected pos'. The process exits 2 with one line naming the file, the cause and the folder,
    no temporary file is left, the state saved before is intact, and --resume auto ends bit-identical."""
    ckpt = tmp_path / "ck"

    def stop():
        raise RuntimeError("stop")

    checkpoint.set_fault(fault_at("written", stop, nth=2))  # stop at the second state save
    try:
        with pytest.raises(RuntimeError):
            train_s4GAN.main(s4gan_flags(voc_root, ckpt, *STEPS))
    finally:
        checkpoint.set_fault(None)
    assert loadable(ckpt / "latest.pth")["iteration"] == 3
    proc = subprocess.run([sys.executable, "train_s4GAN.py", *s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto")],
                          cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="2"), capture_output=True, text=True,
                          timeout=300, preexec_fn=limit_file_size(2**20))  # every weights file is larger
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: cannot write {ckpt / 'VOC_4.pth'}: {os.strerror(errno.EFBIG)} (in {ckpt}"), lines
    assert "unexpected pos" not in lines[0] and "--resume auto" in lines[0]
    assert not [n for n in os.listdir(ckpt) if n.startswith(".tmp-")]
    assert loadable(ckpt / "latest.pth")["iteration"] == 3
    assert run_main(train_s4GAN.main, s4gan_flags(voc_root, ckpt, *STEPS, "--resume", "auto"))[0] == 0
    assert_identical(final_files(ckpt, 6), reference)


@pytest.mark.parametrize("images", [False, True], ids=["result.txt", "predictions"])
def test_evaluate_on_a_full_disk_is_one_line(voc_root, tmp_path, images):
    """evaluate.py's writes failing in the kernel: one line naming the file, exit 2, and no partial
    file left (result.txt is written whole or not at all)."""
    weights = tmp_path / "m.pth"
    torch.save(build_segmenter("resnet18", 21).state_dict(), weights)
    out = tmp_path / "out"
    extra = ["--save-output-images"] if images else []
    proc = subprocess.run([sys.executable, "evaluate.py", *tiny_eval_flags(voc_root, weights, out, *extra)], cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="2"), capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size(300))  # the table and every prediction PNG are larger
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    name = "2007_val_000.png" if images else "result.txt"
    assert lines[0].startswith(f"error: cannot write {out / name}: {os.strerror(errno.EFBIG)} (in {out}"), lines
    assert os.listdir(out) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failed_output_write_removes_only_a_partial_file(tmp_path, code):
    """reported_writes: out of space, the file was truncated and is removed; a file that could not
    be opened (no permission) is the user's and stays."""
    path = tmp_path / "a.png"
    path.write_bytes(b"the user's")
    with pytest.raises(UserError, match=f"cannot write {path}: {os.strerror(code)}"):
        with checkpoint.reported_writes(str(path)):
            raise OSError(code, os.strerror(code))
    assert path.exists() == (code == errno.EACCES)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_any_other_write_on_a_full_disk_is_one_line(capsys, code):
    """The backstop for writes without a message of their own (logs, TensorBoard): one line, exit 2;
    an OSError of another kind keeps its traceback."""
    def main(argv):
        raise OSError(code, os.strerror(code), "/some/file")

    with pytest.raises(SystemExit) as stop:
        run_cli(main, [])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err == f"error: a write failed: {os.strerror(code)} (/some/file); free some space and run again\n"

    def other(argv):
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        run_cli(other, [])


def test_the_suite_refuses_to_start_without_the_disk_space_it_needs(tmp_path):
    """Not a hundred failures when the disk is too full for the checkpoints: one line up front."""
    env = dict(os.environ, SEMISUP_TESTS_NEED_GB="1e9")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                           str(tmp_path / "base"), "tests/test_structure.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert f"error: the tests need about 1000000000.0 GB free in {tmp_path}" in proc.stdout + proc.stderr
    assert " passed" not in proc.stdout


def test_endurance_benchmark_in_small(tmp_path):
    """benchmarks/bench_endurance.py at a small size: a run stopped at random moments by SIGTERM and
    SIGKILL and resumed each time ends bit-identical to the uninterrupted one; memory is sampled."""
    import argparse
    import random
    from benchmarks import bench_endurance as bench
    args = argparse.Namespace(steps=24, save_every=4, interruptions=3, threads=2, num_workers=2)
    data = bench.data_dir_or_synthetic(None, num_train=64, num_val=8, max_size=64)
    duration, samples = bench.reference_run(args, data, str(tmp_path / "reference"))
    assert samples and all(mb > 0 for _, mb in samples)
    events, attempts = bench.interrupted_run(args, data, str(tmp_path / "interrupted"), duration, random.Random(1))
    assert len(events) == 3 and attempts == 4
    assert bench.differences(bench.final_state(str(tmp_path / "reference"), 24),
                             bench.final_state(str(tmp_path / "interrupted"), 24)) == []
