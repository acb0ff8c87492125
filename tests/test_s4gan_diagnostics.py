"""Is s4GAN doing anything? D's scores, the self-trained share, the snapshot warning, the plot panel."""
import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import studies.study_s4gan as study
import train_s4GAN
from methods.s4gan import S4GANStep, SelfTrainingMonitor, discriminator_input
from tests.helpers import crash_at, run_main, tiny_train_flags
from tests.test_s4gan_reference import B, C, CROP, batches, models
from utils.amp import Precision
from utils.losses import one_hot
from utils.plot import main as plot_main
from utils.plot import plot_runs

LAMBDA_ST = 0.5


def scores_by_direct_calls(S, D):
    """D's scores of the unlabeled batch's predictions and of the real batch, called directly."""
    (x_l, _), (x_u, _), (x_g, y_g) = batches()
    with torch.no_grad():
        pred = F.interpolate(S(x_u), size=CROP, mode="bilinear", align_corners=True)
        fake = D(discriminator_input(torch.softmax(pred, 1), x_u))[0].flatten()
        real = D(discriminator_input(one_hot(y_g, C), x_g, range_of=x_l))[0].flatten()
    return fake, real


def step_of(S, D, threshold):
    return S4GANStep(S, D, torch.optim.SGD(S.parameters(), lr=0.0), torch.optim.Adam(D.parameters(), lr=0.0),
                     Precision("off", torch.device("cpu")), num_classes=C, ignore_label=255, input_size=CROP,
                     lambda_fm=0.1, lambda_st=LAMBDA_ST, threshold_st=threshold, device=torch.device("cpu"))


@pytest.fixture()
def undropped_models():
    S, D = models()
    D.drop = nn.Identity()  # no dropout: the step's D calls and direct calls see the same network
    return S, D


def test_logged_scores_and_share_equal_direct_calls_of_d(undropped_models):
    S, D = undropped_models
    fake, real = scores_by_direct_calls(S, D)
    ordered = fake.sort().values.tolist()
    gap, k = max((ordered[k + 1] - ordered[k], k) for k in range(B - 1))
    assert gap > 1e-3, fake
    step = step_of(S, D, threshold=ordered[k] + gap / 2)  # B - 1 - k images pass, at least one fails
    labeled, unlabeled, real_batch = batches()
    values = step(1, labeled=labeled, unlabeled=unlabeled, real=real_batch)
    assert values["score_fake"] == pytest.approx(fake.mean().item(), rel=1e-5)
    assert values["score_real"] == pytest.approx(real.mean().item(), rel=1e-5)
    selected = B - 1 - k
    assert values["above_st"] == selected and values["st_share"] == pytest.approx(selected / B)
    assert values["st_term"] == pytest.approx(LAMBDA_ST * values["loss_st"]) and values["loss_st"] > 0
    assert values["loss_S"] == pytest.approx(values["loss_ce"] + values["loss_fm"] + values["st_term"], rel=1e-5)


def test_iteration_0_trains_no_image_and_the_share_is_a_running_mean(undropped_models):
    S, D = undropped_models
    step = step_of(S, D, threshold=-1.0)  # every image passes
    step.monitor = SelfTrainingMonitor(-1.0, window=2)
    shares = [step(i, **dict(zip(("labeled", "unlabeled", "real"), batches())))["st_share"] for i in range(3)]
    assert shares == [0.0, 0.5, 1.0]  # iteration 0: L_st is off; then windows of (0, 3) and (3, 3) of 3 + 3


def test_snapshot_warning_fires_below_one_percent_and_names_the_causes():
    monitor = SelfTrainingMonitor(0.6)
    assert monitor.snapshot_warning() is None  # nothing seen yet
    for i in range(1, 201):
        monitor.update(i, 0, 4, 0.51, 0.49)
    warning = monitor.snapshot_warning()
    assert warning.startswith("warning: self-training acted on 0 of 800 unlabeled images (0.0%) in iterations 1-200")
    assert "\n" not in warning and "near chance" in warning and "winning" in warning
    assert "--threshold-st" in warning and "--learning-rate-D" in warning
    assert "these scores look like D near chance" in warning
    assert monitor.snapshot_warning() is None  # counts start again after each snapshot
    for i in range(201, 401):
        monitor.update(i, 1 if i % 25 == 0 else 0, 4, 0.97, 0.03)  # 8 of 800 = 1%: no warning
    assert monitor.snapshot_warning() is None
    for i in range(401, 601):
        monitor.update(i, 1 if i % 29 == 0 else 0, 4, 0.97, 0.03)  # 7 of 800 (406, 435, ..., 580)
    warning = monitor.snapshot_warning()
    assert "acted on 7 of 800" in warning and "these scores look like D winning" in warning


def test_monitor_state_round_trip():
    a = SelfTrainingMonitor(0.6, window=3)
    for i in range(5):
        a.update(i, i % 2, 2, 0.5, 0.5)
    b = SelfTrainingMonitor(0.6, window=3)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.update(5, 1, 2, 0.5, 0.5) == a.update(5, 1, 2, 0.5, 0.5)
    assert b.snapshot_warning() == a.snapshot_warning()


@pytest.mark.parametrize("threshold, warned", [("1.0", True), ("-1", False)])
def test_training_logs_the_diagnostics_and_warns_at_snapshots(voc_root, tmp_path, capsys, threshold, warned):
    argv = tiny_train_flags(voc_root, tmp_path, "--num-steps", "3", "--save-pred-every", "2", "--log-every", "1",
                            "--labeled-ratio", "0.5", "--threshold-st", threshold)
    code, out, err = run_main(train_s4GAN.main, argv, capsys)
    assert code == 0, err
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {"score_real", "score_fake", "st_share", "st_term"} <= set(records[-1])
    assert all(0.0 <= r["score_real"] <= 1.0 and 0.0 <= r["score_fake"] <= 1.0 for r in records)
    warnings = [line for line in out.splitlines() if line.startswith("warning: self-training")]
    if warned:  # a snapshot at iteration 2 (iterations 0-2) and the final one (nothing since): one warning
        assert len(warnings) == 1 and "acted on 0 of " in warnings[0] and "iterations 0-2" in warnings[0]
        assert records[-1]["st_share"] == 0.0
    else:  # every image selected, so above_st is the batch size; iteration 0 trains none
        batch = [r["above_st"] for r in records]
        assert warnings == [] and records[-1]["st_share"] == pytest.approx(sum(batch[1:]) / sum(batch))


def test_plot_draws_the_discriminator_panel_with_the_threshold(tmp_path):
    records = [{"iter": i, "loss_D": 0.7, "score_real": 0.9, "score_fake": 0.2, "st_share": 0.0} for i in range(5)]
    fig = plot_runs({"a": records, "b": [{"iter": 0, "loss_ce": 1.0}]}, str(tmp_path / "c.png"), thresholds={"a": 0.6})
    titles = [ax.get_title() for ax in fig.axes]
    assert "discriminator" in titles and "score_real" not in titles and "score_fake" not in titles
    panel = fig.axes[titles.index("discriminator")]
    ys = [tuple(line.get_ydata()) for line in panel.get_lines()]
    assert (0.6, 0.6) in ys and (0.9,) * 5 in ys and (0.2,) * 5 in ys
    # the command reads --threshold-st from the folder's args.json
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "args.json").write_text(json.dumps({"threshold_st": 0.35}))
    plot_main([str(run), "--out", str(tmp_path / "p.png")])
    assert os.path.getsize(tmp_path / "p.png") > 0


def test_study_plans_the_grid_and_pairs_each_seed_with_its_baseline(tmp_path, monkeypatch):
    monkeypatch.setattr(study.demo_recipe, "make_split", lambda recipe, path, seed: path)
    args, recipe = study.parse(["--seeds", "0,1", "--thresholds", "0.6,0.2", "--lrs-d", "1e-4", "--steps", "7"])
    runs = study.plan(args, recipe, str(tmp_path), "DATA", 6)
    assert [r[0] for r in runs] == ["baseline_s0", "s4gan_t0.6_lrd0.0001_s0", "s4gan_t0.2_lrd0.0001_s0",
                                    "baseline_s1", "s4gan_t0.6_lrd0.0001_s1", "s4gan_t0.2_lrd0.0001_s1"]
    train, evaluate_argv = runs[2][5]
    assert train[0] == "train_s4GAN.py" and train[train.index("--threshold-st") + 1] == "0.2"
    assert train[len(train) - 1 - train[::-1].index("--log-every") + 1] == "1"  # the last --log-every wins
    assert train[train.index("--num-steps") + 1] == "7" and train[train.index("--random-seed") + 1] == "0"
    assert evaluate_argv[0] == "evaluate.py" and evaluate_argv[evaluate_argv.index("--restore-from") + 1].endswith(
        os.path.join("s4gan_t0.2_lrd0.0001_s0", "VOC_7.pth"))
    record = dict(st_share_run=0.5, st_share_last=0.25, score_real_last=0.9, score_fake_last=0.1)
    records = [{"seed": 0, "threshold_st": None, "learning_rate_D": None, "miou": 0.50},
               {"seed": 1, "threshold_st": None, "learning_rate_D": None, "miou": 0.60},
               {"seed": 0, "threshold_st": 0.6, "learning_rate_D": 1e-4, "miou": 0.53, **record},
               {"seed": 1, "threshold_st": 0.6, "learning_rate_D": 1e-4, "miou": 0.59, **record}]
    rows = study.report(records, recipe, "0,1").splitlines()
    assert "| baseline | - | - | 55.0 (50.0 / 60.0) |" in rows[-2]
    assert rows[-1].startswith("| s4GAN | 0.6 | 0.0001 | 56.0 (53.0 / 59.0) | +1.0 (+3.0 / -1.0) | 1 of 2 | 50.0% | 25.0% "
                               "| 0.90 | 0.10 |")


def test_a_training_state_without_the_monitor_resumes(voc_root, tmp_path, capsys):
    """A latest.pth written before the monitor existed resumes; the monitor then starts afresh."""
    argv = tiny_train_flags(voc_root, tmp_path, "--num-steps", "3", "--save-pred-every", "1", "--labeled-ratio", "0.5")
    with crash_at(S4GANStep, 2):
        run_main(train_s4GAN.main, argv)
    state = torch.load(tmp_path / "latest.pth", weights_only=True)
    assert state["iteration"] == 2 and "self_training" in state["extras"]
    del state["extras"]["self_training"]
    del state["digest"]  # as a state written before the monitor (and the digest) existed
    torch.save(state, tmp_path / "latest.pth")
    code, out, err = run_main(train_s4GAN.main, argv + ["--resume", "auto"], capsys)
    assert code == 0, err
    recent = torch.load(tmp_path / "latest.pth", weights_only=True)["extras"]["self_training"]["recent"]
    assert len(recent) == 1  # afresh: iteration 2 only
