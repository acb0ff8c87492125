"""Optimizers of the segmenter: standard SGD, or the original's duplicated-list SGD (legacy)."""
import warnings

import torch
from torch.optim import Optimizer


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
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
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


def segmenter_optimizer(model, lr, momentum, weight_decay, mode):
    """`standard`: torch SGD, each tensor once. `legacy`: the original's duplicated parameter lists as
    the PyTorch of the original's time processed them (docs/original.md, "Duplicated SGD parameters"):
    DeepLabv2 (2019, PyTorch 0.4) by LegacySGD; a model with `original_param_lists()` (the WRN-38
    trainer, 2022) by the for-loop torch SGD over the repeated lists, which updates a tensor once per
    repeat (a repeated list cannot go through the fp16 GradScaler: it would unscale a gradient twice)."""
    groups = model.optim_parameters(lr)
    if mode == "standard":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if mode != "legacy":
        raise ValueError(f"unknown SGD mode {mode!r}")
    if hasattr(model, "original_param_lists"):
        groups = [{**group, "params": params} for group, params in zip(groups, model.original_param_lists())]
        with warnings.catch_warnings():  # the repeats are the point here
            warnings.filterwarnings("ignore", message=".*duplicate parameters.*")
            return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=False)
    groups[0]["multiplicity"] = model.legacy_multiplicities()
    return LegacySGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
