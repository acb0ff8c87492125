"""The training loop is written in each script: a newcomer changes the snapshot schedule, adds a
learning-rate warm-up or a stop rule by editing the script alone (engine/ unchanged)."""
import json
import os
import types

import pytest

from tests.helpers import ROOT, run_main, tiny_train_flags

SCRIPTS = ("train_full.py", "train_s4GAN.py")


def edited(script, old, new):
    """The script's module with `old` (found once) replaced by `new`, as a user would edit the file."""
    source = open(os.path.join(ROOT, script)).read()
    assert source.count(old) == 1, f"{script} no longer reads {old!r}"
    module = types.ModuleType(script[:-3] + "_edited")
    module.__file__ = os.path.join(ROOT, script)
    exec(compile(source.replace(old, new), script, "exec"), module.__dict__)
    return module


def metrics(folder):
    return [json.loads(line) for line in open(folder / "metrics.jsonl")]


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_trainer_writes_its_loop_in_the_script(script):
    source = open(os.path.join(ROOT, script)).read()
    for call in ("for i in range(run.start, args.num_steps):", "run.set_poly_learning_rates(i)",
                 "step(i, **run.next_batches(i))", "run.log(i, values", "run.save_snapshot(i",
                 "run.stop_if_requested(i)"):
        assert call in source, (script, call)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_snapshot_schedule_written_in_the_script(script, voc_root, tmp_path, capsys):
    module = edited(script, "if original_snapshot_due(i, args.save_pred_every, args.num_steps):", "if True:")
    code, _, err = run_main(module.main, tiny_train_flags(voc_root, tmp_path, "--num-steps", "3"), capsys)
    assert code == 0, err
    # after every iteration; the last one under the original's name VOC_<num-steps>
    assert sorted(p.name for p in tmp_path.glob("VOC_?.pth")) == ["VOC_0.pth", "VOC_1.pth", "VOC_3.pth"]


def test_a_warm_up_written_in_the_script(voc_root, tmp_path, capsys):
    warm_up = ("run.set_poly_learning_rates(i)\n"
               "            for group in optimizer.param_groups:\n"
               "                group['lr'] *= min(1.0, (i + 1) / 4)")
    module = edited("train_full.py", "run.set_poly_learning_rates(i)", warm_up)
    argv = tiny_train_flags(voc_root, tmp_path, "--num-steps", "4", "--log-every", "1", "--learning-rate", "0.01")
    code, _, err = run_main(module.main, argv, capsys)
    assert code == 0, err
    # poly: 0.01 * (1 - i/4) ** 0.9, times the warm-up (i+1)/4; the log shows the rate that was used
    expected = [0.01 * (1 - i / 4) ** 0.9 * (i + 1) / 4 for i in range(4)]
    assert [r["lr"] for r in metrics(tmp_path) if "loss_ce" in r] == pytest.approx(expected, rel=1e-12)
