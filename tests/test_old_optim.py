"""The old PyTorch optimizers the crosscheck gives the original's scripts (tests/crosscheck/old_optim.py),
on values worked out by hand: one scalar p = 1 listed twice in its group, gradient 0.5 at every
step, lr 0.1, momentum 0.9, weight decay 0.1 (SGD); betas (0.9, 0.99) and a large eps (Adam)."""
import pytest
import torch

from tests.crosscheck.old_optim import SGD041, SGD1x, Adam041


def two_steps(optimizer_class, listed_twice=True, **options):
    p = torch.ones((), dtype=torch.float64, requires_grad=True)
    opt = optimizer_class([{"params": [p, p] if listed_twice else [p]}], **options)
    seen = []
    for _ in range(2):
        opt.zero_grad()
        p.grad = torch.full_like(p, 0.5) if p.grad is None else p.grad.add_(0.5)
        opt.step()
        state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()}
        seen.append((p.item(), p.grad.item(), state))
    return seen


def test_sgd_of_pytorch_04_applies_decay_in_place_and_one_buffer_per_tensor():
    (p1, g1, _), (p2, g2, state) = two_steps(SGD041, lr=0.1, momentum=0.9, weight_decay=0.1)
    # step 1, entry 1: g = 0.5 + 0.1 * 1 = 0.6 (into p.grad); buf = 0.6; p = 1 - 0.06 = 0.94
    #         entry 2: g = 0.6 + 0.1 * 0.94 = 0.694; buf = 0.9 * 0.6 + 0.694 = 1.234; p = 0.94 - 0.1234 = 0.8166
    assert p1 == pytest.approx(0.8166, abs=1e-12) and g1 == pytest.approx(0.694, abs=1e-12)
    # step 2, entry 1: g = 0.5 + 0.08166 = 0.58166; buf = 1.1106 + 0.58166 = 1.69226; p = 0.647374
    #         entry 2: g = 0.58166 + 0.0647374 = 0.6463974; buf = 1.523034 + 0.6463974 = 2.1694314;
    #                  p = 0.647374 - 0.21694314 = 0.43043086
    assert p2 == pytest.approx(0.43043086, abs=1e-12) and g2 == pytest.approx(0.6463974, abs=1e-12)
    assert state["momentum_buffer"].item() == pytest.approx(2.1694314, abs=1e-12)


def test_sgd_of_pytorch_1x_gives_each_repeat_its_own_first_buffer_and_keeps_the_gradient():
    (p1, g1, state1), (p2, g2, state2) = two_steps(SGD1x, lr=0.1, momentum=0.9, weight_decay=0.1)
    # step 1: buffers (none, none); entry 1: d = 0.5 + 0.1 = 0.6, buf_a = 0.6, p = 0.94
    #         entry 2: d = 0.5 + 0.094 = 0.594, buf_b = 0.594 (its own), p = 0.94 - 0.0594 = 0.8806
    assert p1 == pytest.approx(0.8806, abs=1e-12) and g1 == 0.5
    assert state1["momentum_buffer"].item() == pytest.approx(0.594, abs=1e-12)  # the last entry's
    # step 2: both entries share buf = 0.594; entry 1: d = 0.5 + 0.08806 = 0.58806,
    #         buf = 0.5346 + 0.58806 = 1.12266, p = 0.8806 - 0.112266 = 0.768334
    #         entry 2: d = 0.5 + 0.0768334 = 0.5768334, buf = 1.010394 + 0.5768334 = 1.5872274,
    #         p = 0.768334 - 0.15872274 = 0.60961126
    assert p2 == pytest.approx(0.60961126, abs=1e-12) and g2 == 0.5
    assert state2["momentum_buffer"].item() == pytest.approx(1.5872274, abs=1e-12)


def test_the_two_old_sgd_rules_agree_on_a_tensor_listed_once():
    """Without repeats both are plain SGD: step 1 p = 1 - 0.1 * 0.6 = 0.94; step 2 d = 0.5 + 0.094 =
    0.594, buf = 0.54 + 0.594 = 1.134, p = 0.94 - 0.1134 = 0.8266."""
    for rule in (SGD041, SGD1x):
        (p1, _, _), (p2, _, _) = two_steps(rule, listed_twice=False, lr=0.1, momentum=0.9, weight_decay=0.1)
        assert p1 == pytest.approx(0.94, abs=1e-12) and p2 == pytest.approx(0.8266, abs=1e-12)


def test_nesterov_sgd_of_pytorch_04():
    """The MLMT student's optimizer. Step 1: g = 0.6, buf = 0.6, d = 0.6 + 0.9 * 0.6 = 1.14, p = 0.886;
    step 2: g = 0.5 + 0.0886 = 0.5886, buf = 0.54 + 0.5886 = 1.1286, d = 0.5886 + 1.01574 = 1.60434,
    p = 0.886 - 0.160434 = 0.725566."""
    (p1, _, _), (p2, _, _) = two_steps(SGD041, listed_twice=False, lr=0.1, momentum=0.9, weight_decay=0.1,
                                       nesterov=True)
    assert p1 == pytest.approx(0.886, abs=1e-12) and p2 == pytest.approx(0.725566, abs=1e-12)


def test_adam_of_pytorch_04_adds_eps_before_the_bias_correction():
    (p1, _, _), (p2, _, state) = two_steps(Adam041, listed_twice=False, lr=0.1, betas=(0.9, 0.99), eps=0.1)
    # step 1: m = 0.05, v = 0.0025, denom = 0.05 + 0.1 = 0.15, step = 0.1 * sqrt(0.01) / 0.1 = 0.1,
    #         p = 1 - 0.1 * 0.05 / 0.15 = 0.966666...
    assert p1 == pytest.approx(1 - 0.1 / 3, abs=1e-12)
    # step 2: m = 0.095, v = 0.004975, denom = sqrt(0.004975) + 0.1 = 0.1705337, bias corrections
    #         0.19 and 0.0199, step = 0.1 * sqrt(0.0199) / 0.19 = 0.07424598, p = p1 - 0.07424598 * 0.095 / 0.1705337
    assert p2 == pytest.approx(0.9253061, abs=1e-7)
    assert state["step"] == 2 and state["exp_avg"].item() == pytest.approx(0.095, abs=1e-12)
    # today's Adam divides sqrt(v) by sqrt(0.01) first: p = 1 - 1 * 0.05 / (0.5 + 0.1) = 0.916666...
    q = torch.ones((), dtype=torch.float64, requires_grad=True)
    today = torch.optim.Adam([q], lr=0.1, betas=(0.9, 0.99), eps=0.1)
    q.grad = torch.full_like(q, 0.5)
    today.step()
    assert q.item() == pytest.approx(1 - 0.05 / 0.6, abs=1e-12)


def test_a_tensor_in_two_groups_is_refused_as_the_old_releases_did():
    p = torch.ones(1, requires_grad=True)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD041([{"params": [p]}, {"params": iter([p])}], lr=0.1)
