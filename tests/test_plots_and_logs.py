"""What a run shows of itself: plots of its metrics, montages, TensorBoard scalars and images (or one
clear line without TensorBoard), and the evaluation's time per image."""
import builtins
import glob
import os

import numpy as np
import pytest

import evaluate
import train_s4GAN
from tests.helpers import run_main, tiny_eval_flags, tiny_train_flags
from utils.plot import plot_runs, smoothed
from utils.progress import TrainingLog
from utils.visualize import montage


def records(n, key="loss_ce", scale=1.0, **extra):
    return [{"iter": i, key: scale * (1 + (-1) ** i * 0.5), "lr": 1e-3, **extra} for i in range(n)]


def test_one_colour_per_run_in_every_panel(tmp_path):
    runs = {"a": records(20), "b": records(20, scale=2.0, loss_D=0.7),
            "c": records(5, above_st=1) + [{"iter": 19, "val_miou": 0.4}, {"iter": 39, "val_miou": 0.5}]}
    fig = plot_runs(runs, str(tmp_path / "c.png"), smooth=5)
    colours = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label()
            if not label.startswith("_"):
                colours.setdefault(label, set()).add(line.get_color())
    assert {k: len(v) for k, v in colours.items()} == {"a": 1, "b": 1, "c": 1}
    assert len({next(iter(v)) for v in colours.values()}) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert "val_miou" in titles and "loss_D" in titles  # a panel for each quantity a run logged
    loss_panel = fig.axes[titles.index("loss_ce")]
    assert any(line.get_alpha() == 0.25 for line in loss_panel.get_lines())  # the raw curve, faint
    assert smoothed([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_montage_tiles_keep_the_aspect_ratio():
    wide = np.zeros((50, 200, 3), np.uint8)
    out = montage([[wide]], tile=(100, 100))
    assert out.shape == (100, 100, 3)
    dark = np.argwhere(out.sum(2) == 0)
    rows, cols = dark[:, 0].max() - dark[:, 0].min() + 1, dark[:, 1].max() - dark[:, 1].min() + 1
    assert (rows, cols) == (25, 100)  # 4:1 kept, white around


def test_tensorboard_scalars_and_montage(voc_root, tmp_path, capsys):
    argv = tiny_train_flags(voc_root, tmp_path / "ck", "--num-steps", "2", "--save-pred-every", "1",
                            "--tensorboard", "--log-every", "1")
    argv += ["--val-list", os.path.join(voc_root, "lists", "val.txt")]
    code, _, err = run_main(train_s4GAN.main, argv, capsys)
    assert code == 0, err
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(glob.glob(str(tmp_path / "ck" / "events.out.tfevents.*"))[0])
    events.Reload()
    assert {"loss_ce", "loss_D", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss_ce")] == [0, 1]
    assert "predictions" in events.Tags()["images"]


def test_tensorboard_missing_is_one_clear_line(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(Exception, match="pip install tensorboard"):
        TrainingLog(str(tmp_path / "m.jsonl"), 0, 2, tensorboard=True)


def test_evaluate_prints_its_time(voc_root, tmp_path, capsys):
    code, _, err = run_main(train_s4GAN.main, tiny_train_flags(voc_root, tmp_path / "ck", "--num-steps", "1"), capsys)
    assert code == 0, err
    code, out, err = run_main(evaluate.main, tiny_eval_flags(voc_root, tmp_path / "ck" / "VOC_1.pth", tmp_path / "r"),
                              capsys)
    assert code == 0, err
    assert "evaluated 3 images in" in out.splitlines()[-1] and "ms per image" in out
