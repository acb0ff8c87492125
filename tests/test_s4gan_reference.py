"""Guard for the s4GAN step: one whole iteration restated line by line from the original training loop
(docs/original.md, "One s4GAN iteration"), compared with S4GANStep: all five losses and every gradient
of S and D, at a batch where some unlabeled images pass the self-training threshold and one does not."""
import pytest
import torch
import torch.nn.functional as F

from methods.s4gan import S4GANStep
from model import build_discriminator, build_segmenter
from utils.amp import Precision

CROP, C, B = (41, 41), 4, 3
LAMBDA_FM, LAMBDA_ST = 0.1, 1.0


def original_ce(pred, target, ignore_label):
    """The original CrossEntropy2d: mean CE over pixels with 0 <= label != ignore (NCHW -> pixels)."""
    mask = (target >= 0) & (target != ignore_label)
    pixels = pred.permute(0, 2, 3, 1)[mask]  # (n, C) in N, H, W order, as the original's view/transposes
    return F.cross_entropy(pixels, target[mask])


def original_iteration(S, D, i, batches, threshold):
    """One iteration of the original s4GAN loop, in its order, with its per-image Python loops."""
    (x_l, y_l), (x_u, _), (x_g, y_g) = batches
    interp = lambda t: F.interpolate(t, size=CROP, mode="bilinear", align_corners=True)  # noqa: E731
    for p in D.parameters():
        p.requires_grad = False
    # supervised CE
    pred = interp(S(x_l))
    loss_ce = original_ce(pred, y_l, 255)
    # unlabeled: softmax (+) batch-min-max-scaled image through the frozen D
    pred_remain = interp(S(x_u))
    images_remain = (x_u - x_u.min()) / (x_u.max() - x_u.min())
    pred_cat = torch.cat((F.softmax(pred_remain, dim=1), images_remain), dim=1)
    D_out_z, D_out_y_pred = D(pred_cat)
    # self-training: whole argmax maps of the images D scores above the threshold
    count, selected, labels = 0, torch.zeros_like(pred_remain), torch.zeros(B, *CROP, dtype=torch.long)
    for j in range(B):
        if D_out_z[j].item() > threshold:
            selected[count] = pred_remain[j]
            labels[count] = pred_remain[j].detach().argmax(0)
            count += 1
    # real: one-hot ground truth (+) image scaled by the *labeled* batch's range
    images_gt = (x_g - x_g.min()) / (x_l.max() - x_l.min())
    one_hot = torch.zeros(B, C, *CROP)
    for j in range(B):
        for c in range(C):
            one_hot[j, c] = (y_g[j] == c).float()
    D_gt_v_cat = torch.cat((one_hot, images_gt), dim=1)
    D_out_z_gt, D_out_y_gt = D(D_gt_v_cat)
    loss_fm = torch.mean(torch.abs(torch.mean(D_out_y_gt, 0) - torch.mean(D_out_y_pred, 0)))
    if count > 0 and i > 0:
        loss_st = original_ce(selected[:count], labels[:count], 255)
        loss_S = loss_ce + LAMBDA_FM * loss_fm + LAMBDA_ST * loss_st
    else:
        loss_st = torch.zeros(())
        loss_S = loss_ce + LAMBDA_FM * loss_fm
    loss_S.backward()
    # D: the detached prediction is fake (0), the ground truth real (1)
    for p in D.parameters():
        p.requires_grad = True
    D_out_z, _ = D(pred_cat.detach())
    D_out_z_gt, _ = D(D_gt_v_cat)
    bce = torch.nn.BCELoss()
    loss_D = (bce(D_out_z, torch.zeros_like(D_out_z)) + bce(D_out_z_gt, torch.ones_like(D_out_z_gt))) / 2
    loss_D.backward()
    return {"loss_ce": loss_ce, "loss_fm": LAMBDA_FM * loss_fm, "loss_st": loss_st, "loss_S": loss_S,
            "loss_D": loss_D, "above_st": count}


def batches():
    g = torch.Generator().manual_seed(0)
    y_l = torch.randint(0, C, (B, *CROP), generator=g)
    y_l[0, :5] = 255  # void pixels are not scored
    x_l = torch.randn(B, 3, *CROP, generator=g) * 50
    x_u = torch.randn(B, 3, *CROP, generator=g) * 60
    x_g = torch.randn(B, 3, *CROP, generator=g) * 40
    y_g = torch.randint(0, C, (B, *CROP), generator=g)
    y_g[1, -4:] = 255  # all-zero one-hot vectors in the real maps
    return (x_l, y_l), (x_u, y_l.clone()), (x_g, y_g)


def models():
    torch.manual_seed(0)
    S, D = build_segmenter("resnet18", C), build_discriminator(C)
    with torch.no_grad():  # a larger last layer spreads D's scores so that a threshold separates them
        D.fc.weight.mul_(200.0)
    return S.train(), D.train()


def threshold_between_scores(seed):
    """A threshold that D's (dropout-seeded) scores of the unlabeled batch pass for all but one image."""
    S, D = models()
    (x_l, y_l), (x_u, _), _ = batches()
    with torch.no_grad():
        S(x_l)  # the same calls in the same order as the step, so dropout draws the same masks
        pred = F.interpolate(S(x_u), size=CROP, mode="bilinear", align_corners=True)
        torch.manual_seed(seed)
        scores = D(torch.cat((F.softmax(pred, 1), (x_u - x_u.min()) / (x_u.max() - x_u.min())), 1))[0].flatten()
    low, second = scores.sort().values[:2].tolist()
    assert second - low > 1e-3, scores
    return (low + second) / 2


@pytest.mark.parametrize("iteration", [0, 1])
def test_step_equals_the_original_iteration(iteration):
    threshold = threshold_between_scores(seed=7)
    S_ref, D_ref = models()
    torch.manual_seed(7)
    expected = original_iteration(S_ref, D_ref, iteration, batches(), threshold)
    assert expected["above_st"] == B - 1

    S, D = models()
    optimizer_s = torch.optim.SGD([p for p in S.parameters() if p.requires_grad], lr=0.0)
    optimizer_d = torch.optim.Adam(D.parameters(), lr=0.0)  # lr 0: the gradients stay to compare
    step = S4GANStep(S, D, optimizer_s, optimizer_d, Precision("off", torch.device("cpu")), num_classes=C,
                     ignore_label=255, input_size=CROP, lambda_fm=LAMBDA_FM, lambda_st=LAMBDA_ST,
                     threshold_st=threshold, device=torch.device("cpu"))
    labeled, unlabeled, real = batches()
    torch.manual_seed(7)
    values = step(iteration, labeled=labeled, unlabeled=unlabeled, real=real)

    assert values["above_st"] == expected["above_st"]
    for name in ("loss_ce", "loss_fm", "loss_st", "loss_S", "loss_D"):
        assert values[name] == pytest.approx(expected[name].item(), rel=1e-5, abs=1e-7), name
    if iteration == 0:
        assert values["loss_st"] == 0.0
    for (name, ours), theirs in zip(list(S.named_parameters()) + list(D.named_parameters()),
                                    list(S_ref.parameters()) + list(D_ref.parameters())):
        if theirs.grad is None:
            assert ours.grad is None or not ours.grad.any(), name
            continue
        scale = theirs.grad.abs().max().item()
        assert torch.allclose(ours.grad, theirs.grad, rtol=1e-4, atol=1e-5 * scale + 1e-12), name
