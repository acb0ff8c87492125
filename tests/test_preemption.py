"""Pre-emption as clusters deliver it (a stop signal to the whole process group, loader workers
included) and one run per checkpoint folder (run.lock)."""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import torch

import train_s4GAN
from engine import run as run_module, state as state_module
from tests.helpers import ROOT, assert_identical, expect_error, run_main
from tests.test_distributed import run_until
from tests.test_reliability import s4gan_flags
from utils.amp import Precision
from utils.distributed import Env
from utils.errors import UserError
from utils.runlock import NAME as LOCK

STEPS = 40  # a signal sent at iteration 3 lands well before the end on a loaded machine


def group_flags(voc_root, ckpt, *extra):
    return s4gan_flags(voc_root, ckpt, "--num-steps", str(STEPS), "--save-pred-every", "1000", *extra)


def final(ckpt):
    latest = torch.load(ckpt / "latest.pth", weights_only=True)
    return {"model": torch.load(ckpt / f"VOC_{STEPS}.pth", weights_only=True),
            "D": torch.load(ckpt / f"VOC_{STEPS}_D.pth", weights_only=True), "optimizers": latest["optimizers"],
            "streams": latest["streams"], "iteration": latest["iteration"]}


@pytest.fixture(scope="module")
def group_reference(voc_root, module_tmp):
    ckpt = module_tmp("group_reference")
    assert run_main(train_s4GAN.main, group_flags(voc_root, ckpt))[0] == 0
    return final(ckpt)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_to_the_process_group_with_loader_workers(voc_root, tmp_path, group_reference, sig):
    """As Slurm pre-empts: the signal reaches the trainer and its two loader workers at once. The
    workers leave the decision to the trainer, which ends the iteration, saves once and exits
    128 + signal without a traceback; --resume auto then ends bit-identical."""
    ckpt = tmp_path / "ck"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")  # the reference's threads: the same sums
    proc = subprocess.Popen([sys.executable, "train_s4GAN.py", *group_flags(voc_root, ckpt, "--num-workers", "2")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        run_until(proc, "iter      3/")
        os.killpg(proc.pid, sig)
        output = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig and "Traceback" not in output, output[-3000:]
    stopped = re.findall(rf"stopped by signal {int(sig)} after iteration (\d+)", output)
    assert len(stopped) == 1, output[-3000:]
    assert torch.load(ckpt / "latest.pth", weights_only=True)["iteration"] == int(stopped[0]) + 1
    assert not (ckpt / LOCK).exists()
    assert run_main(train_s4GAN.main, group_flags(voc_root, ckpt, "--resume", "auto"))[0] == 0
    assert_identical(final(ckpt), group_reference)


# ---------------------------------------------------------------- one run per checkpoint folder

def write_lock(ckpt, host, pid):
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / LOCK).write_text(json.dumps({"host": host, "pid": pid, "started": "2026-12-01 08:00:00"}))


def a_dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_on_a_live_lock_stops_and_touches_nothing(voc_root, tmp_path, capsys):
    ckpt = tmp_path / "ck"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(ckpt, socket.gethostname(), sleeper.pid)
        (ckpt / ".tmp-abcdefgh-latest.pth").write_bytes(b"the first run's save, in progress")
        expect_error(train_s4GAN.main, group_flags(voc_root, ckpt, "--num-steps", "2"), capsys,
                     f"--checkpoint-dir {ckpt} is in use by the run of PID {sleeper.pid} on {socket.gethostname()}, "
                     f"started 2026-12-01 08:00:00")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(os.listdir(ckpt)) == [".tmp-abcdefgh-latest.pth", LOCK]  # its lock and its file untouched


def test_a_lock_of_another_host_is_never_taken_over(voc_root, tmp_path, capsys):
    ckpt = tmp_path / "ck"
    write_lock(ckpt, "node-17.cluster", a_dead_pid())
    expect_error(train_s4GAN.main, group_flags(voc_root, ckpt, "--num-steps", "2"), capsys,
                 "is in use by the run of PID", "on node-17.cluster", f"remove {ckpt / LOCK}")


def test_a_stale_lock_on_this_host_is_taken_over_and_every_run_releases_its_own(voc_root, tmp_path, capsys):
    ckpt = tmp_path / "ck"
    pid = a_dead_pid()
    write_lock(ckpt, socket.gethostname(), pid)
    code, out, err = run_main(train_s4GAN.main, group_flags(voc_root, ckpt, "--num-steps", "2"), capsys)
    assert code == 0, err
    assert f"note: {ckpt / LOCK} of PID {pid} (started 2026-12-01 08:00:00) is stale" in out
    assert not (ckpt / LOCK).exists()
    # a refused run releases it too
    expect_error(train_s4GAN.main, group_flags(voc_root, ckpt, "--resume", "auto", "--batch-size", "1"), capsys,
                 "--batch-size 2 -> 1")
    assert not (ckpt / LOCK).exists()


# ---------------------------------------------------------------- torchrun: the same start everywhere

def test_processes_that_would_start_from_different_states_stop(monkeypatch):
    env = Env(torch.device("cpu"), 0, 2, 0)
    monkeypatch.setattr(run_module, "all_gather_objects", lambda env, start: [5, None])
    with pytest.raises(UserError, match=r"different states \(by rank: iteration 5, fresh\): --checkpoint-dir must "
                                        r"be one folder"):
        run_module.check_same_start(env, {"path": "ck/latest.pth", "iteration": 5})
    monkeypatch.setattr(run_module, "all_gather_objects", lambda env, start: [start, start])
    run_module.check_same_start(env, {"path": "ck/latest.pth", "iteration": 5})


def test_a_signal_that_arrives_during_the_agreement_is_not_lost(monkeypatch):
    """Under torchrun the processes agree on the stop by an all-reduce; a signal handled while it
    runs is not in this iteration's agreement, and must count at the next one."""
    stop = run_module.StopRequested(Env(torch.device("cpu"), 0, 2, 0))

    def all_reduce(flag, op):  # the other process had no signal; ours arrives meanwhile
        stop._handle(signal.SIGTERM, None)

    monkeypatch.setattr(run_module.dist, "all_reduce", all_reduce)
    assert not stop.requested()
    assert stop.requested() and stop.signum == signal.SIGTERM


@pytest.mark.parametrize("rank", [0, 1])
def test_the_other_processes_leave_a_save_only_once_the_main_one_has_written_it(tmp_path, monkeypatch, rank):
    """Under torchrun a process that left save() at once could exit (after a stop) and make the
    launcher stop the main process in the middle of its write: every process meets at a barrier,
    the main one only once latest.pth is in place."""
    events = []
    monkeypatch.setattr(state_module, "all_gather_objects", lambda env, obj: [obj, obj])
    monkeypatch.setattr(state_module, "barrier", lambda env: events.append((tmp_path / "latest.pth").is_file()))
    cpu = torch.device("cpu")
    state = state_module.TrainingState(argparse.Namespace(checkpoint_dir=str(tmp_path)), Env(cpu, rank, 2, 0),
                                       {"model": torch.nn.Linear(2, 2)}, {}, Precision("off", cpu), {}, None, ["a", "b"])
    state.save(1)
    assert events == [rank == 0]  # one barrier; the main process's after its file exists


def test_a_stream_nobody_closed_does_not_keep_the_process_from_exiting():
    """A stream's workers ignore stop signals and persist between epochs; at exit, multiprocessing
    signals them and waits. A stream the program never closed is closed before that wait (without
    it, this process waits out the workers' 10-minute grace period)."""
    script = ("import numpy as np\n"
              "from data.sampler import BatchStream, SeededEpochSampler\n"
              "from utils.seeding import init_worker\n"
              "class Items:\n"
              "    def __len__(self): return 64\n"
              "    def __getitem__(self, item): return item[0]\n"
              "stream = BatchStream(Items(), SeededEpochSampler(np.arange(64), 0, 0), 2, num_workers=2,\n"
              "                     worker_init_fn=init_worker)\n"
              "print(next(stream).tolist())\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("["), proc.stderr[-2000:]
