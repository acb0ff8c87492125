"""Where a training step's values are read on the host: at once on CPU; on accelerators (`deferred`)
only at the iterations the run logs, so that the other steps never wait for the device.

A CPU has no device queue to wait on, so these tests force the deferred form on CPU and count the
Python-level reads (`item`, `tolist`, `float(t)`, `bool(t)`, ...); tests/test_cuda.py checks the same
step with CUDA's own synchronisation detector."""
import json
import sys

import pytest
import torch

import engine.run
import methods.values
import train_full
import train_s4GAN
from methods.s4gan import SelfTrainingMonitor
from tests.helpers import expect_error, run_main, tiny_train_flags
from tests.test_reliability import final_files, s4gan_flags
from tests.test_s4gan_diagnostics import step_of
from tests.test_s4gan_reference import batches, models

READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


def optimizer_step_count(frame):
    """torch.optim reads its `step` counters, which it keeps on the host also for CUDA parameters
    (unless capturable): reading those waits for nothing."""
    return frame.f_code.co_name == "_get_value" and frame.f_globals.get("__name__") == "torch.optim.optimizer"


@pytest.fixture()
def host_reads(monkeypatch):
    """A list that gets one entry per Python-level read of a tensor's value."""
    reads = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if not optimizer_step_count(sys._getframe(1)):
                reads.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def test_the_counter_sees_a_read(host_reads):
    assert torch.ones(()).item() == 1.0 and host_reads == ["item"]


def test_a_deferred_s4gan_step_reads_nothing_and_its_values_match_the_immediate_step(host_reads):
    S, D = models()
    step = step_of(S, D, threshold=-1.0)
    step.deferred = True
    labeled, unlabeled, real = batches()
    deferred = [step(i, labeled=labeled, unlabeled=unlabeled, real=real) for i in range(2)]
    assert host_reads == []
    assert all(isinstance(v, torch.Tensor) for values in deferred for v in values.values())

    S, D = models()
    step = step_of(S, D, threshold=-1.0)
    immediate = [step(i, labeled=labeled, unlabeled=unlabeled, real=real) for i in range(2)]
    for now, later in zip(immediate, deferred):
        assert methods.values.host_values(0, later) == now  # same numbers, same types (above_st an int)
    assert isinstance(immediate[1]["above_st"], int) and immediate[1]["st_share"] == 0.5


def test_the_monitor_keeps_device_counts_and_saves_numbers():
    monitor = SelfTrainingMonitor(0.6, window=2)
    share = monitor.update(1, torch.tensor(3), 4, torch.tensor(0.25), torch.tensor(0.5))
    assert isinstance(share, torch.Tensor) and share.item() == 0.75
    state = monitor.state_dict()
    assert state["recent"] == [[3, 4]] and type(state["recent"][0][0]) is int
    assert state["since"]["trained"] == 3 and state["since"]["score_fake"] == 0.5
    json.dumps(state)  # plain numbers, as a checkpoint of an immediate run holds


def defer_everywhere(monkeypatch):
    monkeypatch.setattr(methods.values, "defer_reads", lambda device: True)


def reads_by_iteration(monkeypatch):
    iterations = []

    def recorded(iteration, values):
        iterations.append(iteration)
        return methods.values.host_values(iteration, values)
    monkeypatch.setattr(engine.run, "host_values", recorded)
    return iterations


def metrics(ckpt):
    rows = [json.loads(line) for line in open(ckpt / "metrics.jsonl")]
    return [{k: v for k, v in row.items() if k != "time"} for row in rows]


def test_a_deferred_run_reads_at_logged_iterations_only_and_ends_identical(voc_root, tmp_path, capsys, monkeypatch):
    flags = ["--num-steps", "7", "--save-pred-every", "7"]
    assert run_main(train_s4GAN.main, s4gan_flags(voc_root, tmp_path / "now", *flags, "--log-every", "3"), capsys)[0] == 0

    defer_everywhere(monkeypatch)
    read_at = reads_by_iteration(monkeypatch)
    assert run_main(train_s4GAN.main, s4gan_flags(voc_root, tmp_path / "later", *flags, "--log-every", "3"), capsys)[0] == 0
    assert read_at == [0, 3, 6]  # every --log-every and the last

    assert metrics(tmp_path / "later") == metrics(tmp_path / "now")
    now, later = final_files(tmp_path / "now", 7), final_files(tmp_path / "later", 7)
    for part in ("model", "D"):
        assert all(torch.equal(now[part][k], later[part][k]) for k in now[part]), part
    assert later["extras"] == now["extras"]  # the self-training monitor, saved as numbers either way


@pytest.mark.parametrize("script, flags", [(train_full, tiny_train_flags), (train_s4GAN, s4gan_flags)])
def test_a_deferred_nan_stops_at_the_next_logged_iteration_and_saves_no_nan(voc_root, tmp_path, capsys, monkeypatch,
                                                                           script, flags):
    defer_everywhere(monkeypatch)
    read_at = reads_by_iteration(monkeypatch)
    line = expect_error(script.main, flags(voc_root, tmp_path, "--num-steps", "40", "--log-every", "4",
                                           "--save-pred-every", "3", "--learning-rate", "1e12"), capsys, "iteration")
    assert "nan" in line or "inf" in line or "not finite" in line
    assert all(i % 4 == 0 for i in read_at)
    for path in tmp_path.glob("*.pth"):
        state = torch.load(path, weights_only=True)
        tensors = state["model"] if "model" in state else state
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()), path.name
