import math

import pytest
import torch
import torch.nn.functional as F

from methods.s4gan import bce_on_probabilities, feature_matching_loss, self_training_loss
from utils.losses import masked_cross_entropy, one_hot
from utils.metrics import class_iou, confusion_matrix, format_iou_table, mean_iou
from utils.schedules import apply_poly_lr, poly_lr


def test_cross_entropy_is_zero_not_nan_on_all_ignore():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.full((2, 4, 4), 255), 255)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_cross_entropy_means_over_valid_pixels_only():
    logits = torch.randn(1, 3, 2, 2)
    target = torch.tensor([[[0, 255], [2, -1]]])
    expected = (F.cross_entropy(logits[..., 0, 0], target[:, 0, 0]) + F.cross_entropy(logits[..., 1, 0], target[:, 1, 0])) / 2
    assert masked_cross_entropy(logits, target, 255).item() == pytest.approx(expected.item(), rel=1e-6)


def test_one_hot_gives_zero_vectors_for_ignored_pixels():
    labels = torch.tensor([[[0, 2], [255, -1]]])
    out = one_hot(labels, 3)
    assert out.shape == (1, 3, 2, 2)
    assert out[0, :, 0, 0].tolist() == [1, 0, 0] and out[0, :, 0, 1].tolist() == [0, 0, 1]
    assert out[0, :, 1, 0].sum() == 0 and out[0, :, 1, 1].sum() == 0


def test_feature_matching_is_l1_between_batch_means():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(2, 2, 1, 1)
    fake = torch.tensor([[0.0, 0.0], [0.0, 8.0]]).view(2, 2, 1, 1)
    # means: real (2, 3), fake (0, 4) -> |2| + |-1| over 2 channels
    assert feature_matching_loss(real, fake).item() == pytest.approx(1.5)


def test_self_training_selects_strictly_above_threshold_with_argmax_labels():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 5, 5, requires_grad=True)
    d_prob = torch.tensor([[0.61], [0.6], [0.9], [0.1]])
    loss, count = self_training_loss(logits, d_prob, 0.6)
    assert count.item() == 2  # 0.6 itself is not above 0.6
    chosen = logits[[0, 2]]
    expected = F.cross_entropy(chosen, chosen.argmax(1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[[1, 3]].abs().sum() == 0 and logits.grad[[0, 2]].abs().sum() > 0


def test_self_training_with_nothing_selected_is_zero():
    loss, count = self_training_loss(torch.randn(2, 3, 4, 4), torch.tensor([[0.1], [0.2]]), 0.6)
    assert count.item() == 0 and loss.item() == 0.0


def test_bce_on_probabilities_matches_bceloss():
    prob = torch.tensor([[0.2], [0.7]])
    assert bce_on_probabilities(prob, 1.0).item() == pytest.approx(torch.nn.BCELoss()(prob, torch.ones(2, 1)).item())


def test_confusion_matrix_by_bincount_matches_counting():
    torch.manual_seed(0)
    gt = torch.randint(0, 4, (3, 7, 9))
    gt[0, 0] = 255
    pred = torch.randint(0, 4, (3, 7, 9))
    m = confusion_matrix(gt, pred, 4)
    slow = torch.zeros(4, 4, dtype=torch.int64)
    for g, p in zip(gt.flatten().tolist(), pred.flatten().tolist()):
        if g < 4:
            slow[g, p] += 1
    assert torch.equal(m, slow)


def test_iou_and_miou_on_hand_computed_matrices():
    m = torch.tensor([[3, 1, 0], [1, 2, 0], [0, 0, 0]])
    iou = class_iou(m)
    assert iou[0].item() == pytest.approx(3 / 5) and iou[1].item() == pytest.approx(2 / 4)
    assert math.isnan(iou[2].item())  # never seen nor predicted
    # the original's formula: sum over classes with true positives, divided by C (not by 2)
    assert mean_iou(m) == pytest.approx((3 / 5 + 2 / 4) / 3)
    # a class predicted but never right contributes 0
    m2 = torch.tensor([[4, 0], [2, 0]])
    assert mean_iou(m2) == pytest.approx((4 / 6) / 2)
    lines = format_iou_table(m, ["a", "b", "c"])
    assert lines[1].startswith("class  1 b") and "0.5000" in lines[1] and "n/a" in lines[2]
    assert lines[-1] == f"meanIOU: {mean_iou(m)}"


def test_poly_lr():
    assert poly_lr(1.0, 0, 100, 0.9) == 1.0
    assert poly_lr(2.5e-4, 50, 100, 0.9) == pytest.approx(2.5e-4 * 0.5 ** 0.9)
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr_mult": 1},
                           {"params": [torch.zeros(1, requires_grad=True)], "lr_mult": 10}], lr=1.0)
    apply_poly_lr(opt, 1e-3, 10, 20, 0.9)
    assert opt.param_groups[1]["lr"] == pytest.approx(10 * opt.param_groups[0]["lr"])
