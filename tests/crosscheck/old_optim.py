"""The optimizers of the PyTorch releases the authors trained with, for the original's side of the
crosscheck (driver.py gives them to the original's scripts in place of torch.optim's).

Today's torch.optim cannot stand in for them: the original's segmenter groups list most tensors
several times (docs/original.md, "Duplicated SGD parameters"), and what an optimizer does with a
repeated tensor, and where Adam adds its epsilon, changed between releases. Each rule below is
written from the release's documented update, one list entry at a time, repeats included; they
only use torch's element-wise operations. tests/test_old_optim.py checks each on values worked out
by hand.

- `SGD041`: torch.optim.SGD of PyTorch 0.4 (the DeepLabv2 trainers, 2019). For every entry p of a
  group, in order: the weight decay is added *in place* into p.grad (so it accumulates over the
  repeats of p), p's one momentum buffer is created (zeros, then momentum * buf + g) or updated
  (buf = momentum * buf + g), and p moves by -lr * buf.
- `SGD1x`: the for-loop torch.optim.SGD of PyTorch 1.9-1.11 (the WRN-38 trainer, 2022). The step
  first collects, for every entry, the gradient tensor and p's momentum buffer as it is *before* the
  step (none on the first step); then, entry by entry, g = p.grad + weight_decay * p (a new tensor:
  p.grad keeps its value), the entry's buffer is created from g when it had none (on the first step
  every repeat gets its own) or updated in place, and p moves by -lr * buf; afterwards p's state is
  the buffer of its last entry.
- `Adam041`: torch.optim.Adam of PyTorch 0.4: denominator sqrt(v) + eps, step size
  lr * sqrt(1 - beta2^t) / (1 - beta1^t) (releases from 1.6 divide sqrt(v) by sqrt(1 - beta2^t)
  before adding eps).
"""
import math
import warnings

import torch


class _Optimizer(torch.optim.Optimizer):
    """Parameter groups as the old releases built them: each group's params become a list (repeats
    kept, today's warning about them silenced), a tensor in two groups is refused, missing options
    come from the defaults. A torch.optim.Optimizer, so that learning-rate schedulers accept it."""

    def __init__(self, params, defaults):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*duplicate parameters.*")
            super().__init__(params, defaults)

    def _state(self, p):
        return self.state[p]

    def zero_grad(self, set_to_none=False):
        """The old releases zeroed the gradients in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.detach_()
                    p.grad.zero_()


class _SGD(_Optimizer):
    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))


class SGD041(_SGD):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            momentum, dampening = group["momentum"], group["dampening"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"] != 0:
                    g.add_(p, alpha=group["weight_decay"])
                if momentum != 0:
                    state = self._state(p)
                    if "momentum_buffer" not in state:
                        buf = state["momentum_buffer"] = torch.zeros_like(p)
                        buf.mul_(momentum).add_(g)
                    else:
                        buf = state["momentum_buffer"]
                        buf.mul_(momentum).add_(g, alpha=1 - dampening)
                    g = g.add(buf, alpha=momentum) if group["nesterov"] else buf
                p.add_(g, alpha=-group["lr"])


class SGD1x(_SGD):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            momentum, dampening = group["momentum"], group["dampening"]
            entries = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in entries]
            buffers = [self._state(p).get("momentum_buffer") for p in entries]
            for k, p in enumerate(entries):
                g = grads[k]
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                if momentum != 0:
                    if buffers[k] is None:
                        buffers[k] = torch.clone(g).detach()
                    else:
                        buffers[k].mul_(momentum).add_(g, alpha=1 - dampening)
                    g = g.add(buffers[k], alpha=momentum) if group["nesterov"] else buffers[k]
                p.add_(g, alpha=-group["lr"])
            if momentum != 0:
                for p, buf in zip(entries, buffers):
                    self._state(p)["momentum_buffer"] = buf


class Adam041(_Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self._state(p)
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                if group["weight_decay"] != 0:
                    g.add_(p, alpha=group["weight_decay"])
                state["exp_avg"].mul_(beta1).add_(g, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = state["exp_avg_sq"].sqrt().add_(group["eps"])
                step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                p.addcdiv_(state["exp_avg"], denom, value=-step_size)
