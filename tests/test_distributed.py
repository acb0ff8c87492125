"""torchrun on CPU (gloo): DDP gradients equal a single-process step on the concatenated batch, and
a 2-process run writes one set of checkpoints that a single process can load."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from methods.s4gan import S4GANStep
from tests.ddp_grad_worker import build, fixed_batches, gradients, make_step
from tests.helpers import ROOT, assert_identical, tiny_eval_flags, tiny_train_flags


def torchrun(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_ddp_gradients_equal_single_process_on_the_whole_batch(tmp_path):
    proc = torchrun(os.path.join(ROOT, "tests", "ddp_grad_worker.py"), "--out", str(tmp_path / "grads.pth"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "grads.pth", weights_only=True)
    seg, d = build()
    make_step(seg, d)(1, **dict(zip(S4GANStep.streams, fixed_batches())))
    single = gradients(seg, d)
    assert ddp.keys() == single.keys() and any(k.startswith("D.") for k in single)
    assert not any("conv2d_list.2" in k or "conv2d_list.3" in k for k in single)  # unused branches: no grad
    for name, grad in single.items():
        scale = grad.abs().max().item() + 1e-12
        assert torch.allclose(ddp[name], grad, rtol=1e-4, atol=1e-5 * scale), name


def test_two_process_run_writes_one_set_of_checkpoints(voc_root, tmp_path):
    ckpt = tmp_path / "ck"
    proc = torchrun("train_s4GAN.py", *tiny_train_flags(voc_root, ckpt, "--num-steps", "2", "--labeled-ratio", "0.5"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(ckpt)) == sorted(["VOC_2.pth", "VOC_2_D.pth", "latest.pth", "args.json", "metrics.jsonl",
                                               "train_voc_split.pkl"])
    assert proc.stdout.count("iter      1/2") == 1  # only rank 0 prints
    state = torch.load(ckpt / "latest.pth", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    proc = subprocess.run([sys.executable, "evaluate.py", *tiny_eval_flags(voc_root, ckpt / "VOC_2.pth", tmp_path / "r")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "meanIOU" in proc.stdout, proc.stderr


# ---------------------------------------------------------------- faults under torchrun

def torchrun_popen(args):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_until(proc, prefix):
    """Read the run's output up to the first line starting with `prefix`; returns the lines read."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError("".join(lines[-20:]))


def rank_pid(launcher, rank):
    """The pid of the worker process of `rank` among the launcher's children."""
    children = subprocess.run(["ps", "--ppid", str(launcher.pid), "-o", "pid="], capture_output=True,
                              text=True).stdout.split()
    for pid in children:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if f"RANK={rank}".encode() in f.read().split(b"\0"):
                return int(pid)
    raise AssertionError(f"no worker of rank {rank} among {children}")


STEPS = 40  # enough that a signal sent at iteration 2 lands before the end on a loaded machine (8 did not; 20 raced
# once in a full suite run)


def two_process_flags(voc_root, ckpt, *extra):
    return tiny_train_flags(voc_root, ckpt, "--num-steps", str(STEPS), "--save-pred-every", "2", "--labeled-ratio", "0.5",
                            "--log-every", "1", "--random-mirror", *extra)


def final_state(ckpt):
    latest = torch.load(ckpt / "latest.pth", weights_only=True)
    return {"model": torch.load(ckpt / f"VOC_{STEPS}.pth", weights_only=True),
            "D": torch.load(ckpt / f"VOC_{STEPS}_D.pth", weights_only=True), "optimizers": latest["optimizers"], "rng": latest["rng"], "streams": latest["streams"]}


@pytest.fixture(scope="module")
def two_process_reference(voc_root, module_tmp):
    ckpt = module_tmp("ddp_reference")
    proc = torchrun("train_s4GAN.py", *two_process_flags(voc_root, ckpt))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return final_state(ckpt)


def test_sigterm_to_the_launcher_saves_one_state_then_resume_is_bit_identical(voc_root, tmp_path, two_process_reference):
    """Both ranks stop after the same iteration (they agree on it through the process group), one
    latest.pth holds it, and --resume auto under torchrun ends bit-identical to the uninterrupted run."""
    ckpt = tmp_path / "ck"
    launcher = torchrun_popen(["train_s4GAN.py", *two_process_flags(voc_root, ckpt)])
    run_until(launcher, "iter      2/")
    launcher.send_signal(signal.SIGTERM)
    output = launcher.communicate(timeout=120)[0]
    stopped = re.findall(r"stopped by signal 15 after iteration (\d+)", output)
    assert len(stopped) == 2 and stopped[0] == stopped[1], output[-3000:]  # one line per rank
    assert torch.load(ckpt / "latest.pth", weights_only=True)["iteration"] == int(stopped[0]) + 1
    proc = torchrun("train_s4GAN.py", *two_process_flags(voc_root, ckpt, "--resume", "auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(final_state(ckpt), two_process_reference)


def launch_ranks(argv):
    """The two workers of a run as a launcher starts them (the environment torchrun sets), without one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
        procs.append(subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def test_each_rank_exits_143_on_sigterm(voc_root, tmp_path):
    """Each worker sent SIGTERM: each saves its part of the same state and exits with 128 + 15."""
    ckpt = tmp_path / "ck"
    procs = launch_ranks(["train_s4GAN.py", *two_process_flags(voc_root, ckpt)])
    run_until(procs[0], "iter      2/")
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [143, 143], outputs[1][-2000:]
    stopped = [re.findall(r"stopped by signal 15 after iteration (\d+)", out) for out in outputs]
    assert stopped[0] == stopped[1] and len(stopped[0]) == 1
    assert torch.load(ckpt / "latest.pth", weights_only=True)["iteration"] == int(stopped[0][0]) + 1


def test_a_rank_that_dies_stops_the_run_naming_it_then_resume(voc_root, tmp_path, two_process_reference):
    """SIGKILL to rank 1: the launcher stops rank 0 and exits within 60 s, its report naming rank 1 as
    the first failure; --resume auto continues from the last state saved and ends bit-identical."""
    ckpt = tmp_path / "ck"
    launcher = torchrun_popen(["train_s4GAN.py", *two_process_flags(voc_root, ckpt)])
    run_until(launcher, "iter      4/")  # latest.pth after iteration 2 exists
    os.kill(rank_pid(launcher, 1), signal.SIGKILL)
    start = time.time()
    output = launcher.communicate(timeout=60)[0]
    assert time.time() - start < 60 and launcher.returncode != 0
    root_cause = output[output.index("Root Cause"):]
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)", root_cause) and "SIGKILL" in root_cause, output[-3000:]
    proc = torchrun("train_s4GAN.py", *two_process_flags(voc_root, ckpt, "--resume", "auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(final_state(ckpt), two_process_reference)


def test_without_a_launcher_the_survivor_names_the_rank_that_died(voc_root, tmp_path):
    """No agent to stop it: rank 0 finds its peer gone at the next collective and exits at once with
    one line naming rank 1 (not a traceback, not a hang until the process group's timeout)."""
    procs = launch_ranks(["train_s4GAN.py", *two_process_flags(voc_root, tmp_path / "ck", "--num-steps", "40")])
    run_until(procs[0], "iter      2/")
    procs[1].kill()
    start = time.time()
    output = procs[0].communicate(timeout=60)[0]
    procs[1].wait()
    assert time.time() - start < 60 and procs[0].returncode == 1, output[-2000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rank 1 of this run stopped" in errors[0] and "--resume auto" in errors[0]
    assert "Traceback" not in output


def wait_for_iterations(ckpt, count, proc, timeout=120):
    """Until rank 0's metrics.jsonl holds `count` iterations (its output goes to torchrun's log files)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (ckpt / "metrics.jsonl").is_file() and len((ckpt / "metrics.jsonl").read_text().splitlines()) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"the run did not reach iteration {count} (exit status {proc.poll()})")


def test_sigterm_to_the_whole_job_with_loader_workers(voc_root, tmp_path, two_process_reference):
    """As Slurm pre-empts a torchrun job: SIGTERM to every process of the group, the launcher, the
    ranks and their loader workers (2 each). Both ranks stop after the same iteration without a
    traceback (each rank's own output, kept by torchrun in --log-dir), one state holds it, and
    --resume auto ends bit-identical."""
    ckpt, logs = tmp_path / "ck", tmp_path / "logs"
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 "--log-dir", str(logs), "--redirects", "3", "train_s4GAN.py",
                                 *two_process_flags(voc_root, ckpt, "--num-workers", "2")],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    try:
        wait_for_iterations(ckpt, 3, launcher)
        os.killpg(launcher.pid, signal.SIGTERM)
        launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    errors = {rank: next(logs.rglob(f"attempt_0/{rank}/stderr.log")).read_text() for rank in (0, 1)}
    stopped = [re.findall(r"stopped by signal 15 after iteration (\d+)", errors[rank]) for rank in (0, 1)]
    assert len(stopped[0]) == 1 and stopped[0] == stopped[1], errors
    assert not any("Traceback" in text for text in errors.values()), errors
    assert torch.load(ckpt / "latest.pth", weights_only=True)["iteration"] == int(stopped[0][0]) + 1
    proc = torchrun("train_s4GAN.py", *two_process_flags(voc_root, ckpt, "--resume", "auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(final_state(ckpt), two_process_reference)
