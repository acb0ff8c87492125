"""The optimizers: the segmenter's SGD (standard, or the original's duplicated lists as PyTorch 0.4 applied
them: legacy) and the discriminator's Adam (today's, or PyTorch 0.4's: legacy)."""
import math
import warnings
from typing import List, Protocol, runtime_checkable

import torch
from torch.optim import Optimizer


@runtime_checkable
class OriginalParamLists(Protocol):
    """Optional segmenter hook (model.SegmenterModel): the original's parameter lists, one per group of
    `optim_parameters()`, each tensor repeated as often as the original listed it (the WRN-38 trainer)."""

    def original_param_lists(self) -> List[list]: ...


@runtime_checkable
class LegacyMultiplicities(Protocol):
    """Optional segmenter hook (model.SegmenterModel): how often the original listed each tensor of
    `optim_parameters()[0]["params"]`, in that order (DeepLabv2); the other groups' tensors once."""

    def legacy_multiplicities(self) -> List[int]: ...


def evaluate_closure(closure):
    """An optimizer's optional closure (it recomputes the loss), evaluated with gradients on."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class LegacySGD(Optimizer):
    """SGD as PyTorch 0.4 applied it to a parameter list that names some tensors several times.

    The original built its backbone group by walking every submodule and adding each one's
    *recursive* parameters, so most backbone tensors appear 3 times and the downsample convs 4 times
    (docs/original.md, "Duplicated SGD parameters"). PyTorch 0.4's step walked that list in order and, for every entry p:

        g = p.grad                       the same tensor object at every repeat
        g += weight_decay * p            in place: the decay accumulates in p.grad, repeat by repeat
        buf = g (copy) if p has no buffer yet, else buf = momentum * buf + g     one buffer per tensor
        p -= lr * buf

    Distinct tensors do not interact, so applying each tensor's k repeats back to back gives the
    same result as the list order. Groups hold each tensor once, with `multiplicity` (one int per
    tensor, default 1) saying how often it appeared, so GradScaler, DDP and state_dict see ordinary
    groups.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, foreach=True):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, multiplicity=None))
        self.foreach = foreach
        for group in self.param_groups:
            if group["multiplicity"] is None:
                group["multiplicity"] = [1] * len(group["params"])
            if len(group["multiplicity"]) != len(group["params"]):
                raise ValueError("multiplicity needs one count per parameter")

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            (self._step_foreach if self.foreach else self._step_per_tensor)(group)
        return loss

    def _step_per_tensor(self, group):
        """The rule above, tensor by tensor (one small kernel per operation and repeat)."""
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        for p, repeats in zip(group["params"], group["multiplicity"]):
            if p.grad is None:
                continue
            g = p.grad
            state = self.state[p]
            for _ in range(repeats):
                if decay != 0:
                    g.add_(p, alpha=decay)
                update = g
                if momentum != 0:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.clone()
                    else:
                        buf.mul_(momentum).add_(g)
                    update = buf
                p.add_(update, alpha=-lr)

    def _step_foreach(self, group):
        """The same rule in rounds: round r applies the r-th repeat of every tensor listed more than r
        times, with multi-tensor (foreach) operations: the same element-wise arithmetic in the same
        order for each tensor, so the same bits as tensor by tensor, in a few kernels per round."""
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        listed = [(p, k) for p, k in zip(group["params"], group["multiplicity"]) if p.grad is not None]
        for r in range(max((k for _, k in listed), default=0)):
            params = [p for p, k in listed if k > r]
            grads = [p.grad for p in params]
            if decay != 0:
                torch._foreach_add_(grads, params, alpha=decay)
            updates = grads
            if momentum != 0:
                fresh = {id(p) for p in params if "momentum_buffer" not in self.state[p]}
                for p in params:
                    if id(p) in fresh:
                        self.state[p]["momentum_buffer"] = p.grad.clone()
                known = [p for p in params if id(p) not in fresh]
                if known:
                    bufs = [self.state[p]["momentum_buffer"] for p in known]
                    torch._foreach_mul_(bufs, momentum)
                    torch._foreach_add_(bufs, [p.grad for p in known])
                updates = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_add_(params, updates, alpha=-lr)


def segmenter_optimizer(model, lr, momentum, weight_decay, mode, say=print):
    """`standard`: torch SGD, each tensor once. `legacy`: the original's duplicated parameter lists as
    the PyTorch of the original's time processed them (docs/original.md, "Duplicated SGD parameters"):
    DeepLabv2 (2019, PyTorch 0.4) by LegacySGD; a model with `original_param_lists()` (the WRN-38
    trainer, 2022) by the for-loop torch SGD over the repeated lists, which updates a tensor once per
    repeat (a repeated list cannot go through the fp16 GradScaler: it would unscale a gradient twice).
    A model with neither hook (both are optional: model.SegmenterModel) has no repeated lists to
    reproduce: standard SGD, said once through `say`."""
    groups = model.optim_parameters(lr)
    if mode not in ("standard", "legacy"):
        raise ValueError(f"unknown SGD mode {mode!r}")
    if mode == "legacy" and isinstance(model, OriginalParamLists):
        groups = [{**group, "params": params} for group, params in zip(groups, model.original_param_lists())]
        with warnings.catch_warnings():  # the repeats are the point here
            warnings.filterwarnings("ignore", message=".*duplicate parameters.*")
            return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=False)
    if mode == "legacy" and isinstance(model, LegacyMultiplicities):
        groups[0]["multiplicity"] = model.legacy_multiplicities()
        return LegacySGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if mode == "legacy":
        say(f"--sgd-mode legacy: standard SGD for {type(model).__name__}, which has no repeated parameter lists "
            f"(neither original_param_lists() nor legacy_multiplicities())")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


class LegacyAdam(Optimizer):
    """Adam as PyTorch 0.4 applied it (docs/original.md, "The discriminator's Adam"): with t the
    tensor's step count,

        m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
        p -= lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)

    Releases from 1.6 on (torch.optim.Adam today) divide sqrt(v) by sqrt(1 - beta2^t) before adding
    eps, so in the first few hundred steps eps weighs up to 1 / sqrt(1 - beta2) times more here
    (10x at beta2 = 0.99): tensors with gradients near eps move differently. Multi-tensor (foreach)
    operations, the same arithmetic per element as the per-tensor rule. The state has torch.optim.Adam's
    keys, so either loads the other's."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            (beta1, beta2), states = group["betas"], [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] = int(state["step"]) + 1
            grads = [p.grad for p in params]
            exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
            torch._foreach_mul_(exp_avgs, beta1)
            torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
            denominators = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_add_(denominators, group["eps"])
            steps = [-group["lr"] * math.sqrt(1 - beta2 ** s["step"]) / (1 - beta1 ** s["step"]) for s in states]
            torch._foreach_addcdiv_(params, exp_avgs, denominators, steps)
        return loss


def discriminator_optimizer(model_d, lr, mode):
    """D's Adam (betas 0.9, 0.99, as the original): `legacy` is PyTorch 0.4's rule (the DeepLabv2
    trainer, 2019), `standard` today's torch.optim.Adam (the rule since PyTorch 1.6: the WRN-38 trainer, 2022)."""
    if mode == "standard":
        return torch.optim.Adam(model_d.parameters(), lr=lr, betas=(0.9, 0.99))
    if mode != "legacy":
        raise ValueError(f"unknown Adam mode {mode!r}")
    return LegacyAdam(model_d.parameters(), lr=lr, betas=(0.9, 0.99))
