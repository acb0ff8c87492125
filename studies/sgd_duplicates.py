"""What torch.optim.SGD does with the original's duplicated parameter lists (DeepLabv3+ WRN-38).

The original passed lists in which every tensor appears k times (trunk 3-6, head 1-4; see
`DeepLabV3PlusWRN38.original_param_lists`). This script gives SGD those lists (lr 1x / 10x,
momentum 0.9, weight decay 5e-4) with foreach=False, foreach=True and fused=True, feeds every run the
same fixed gradients for a few steps, and compares the displacement of each tensor with
  single: SGD with each tensor once (optim_parameters),
  k-modern: k back-to-back updates of today's rule (decay added out of place, one buffer per tensor),
  k-0.4: k back-to-back updates of PyTorch 0.4's rule (decay added into p.grad in place).
Usage: python studies/sgd_duplicates.py [--steps 2]
"""
import argparse
import os
import sys
import warnings
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model.deeplabv3p import DeepLabV3PlusWRN38  # noqa: E402

LR, MOMENTUM, DECAY = 0.01, 0.9, 5e-4


def fresh_model():
    torch.manual_seed(0)
    return DeepLabV3PlusWRN38(5, width_mult=1 / 16)


def fixed_grads(model, steps):
    gen = torch.Generator().manual_seed(1)
    return [[torch.randn(p.shape, generator=gen) for p in model.parameters()] for _ in range(steps)]


def run_torch_sgd(grads, duplicated, **impl):
    model = fresh_model()
    if duplicated:
        lists = model.original_param_lists()
        groups = [{"params": lists[0], "lr": LR}, {"params": lists[1], "lr": 10 * LR}]
    else:
        groups = model.optim_parameters(LR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM, weight_decay=DECAY, **impl)
    return step_all(model, opt.step, grads), [str(w.message) for w in caught]


def run_k_updates(grads, in_place_decay):
    """Each tensor updated k times per step, k its multiplicity, with one momentum buffer per tensor."""
    model = fresh_model()
    lrs = {id(p): g["lr"] for g in model.optim_parameters(LR) for p in g["params"]}
    repeats = {}
    for listed in model.original_param_lists():
        for p in listed:
            repeats[id(p)] = repeats.get(id(p), 0) + 1
    buffers = {}

    @torch.no_grad()
    def step():
        for p in model.parameters():
            for _ in range(repeats[id(p)]):
                if in_place_decay:  # 0.4: p.grad itself grows by wd * p at every repeat
                    g = p.grad.add_(p, alpha=DECAY)
                else:
                    g = p.grad.add(p, alpha=DECAY)
                buf = buffers.get(id(p))
                buffers[id(p)] = buf = g.clone() if buf is None else buf.mul_(MOMENTUM).add_(g)
                p.add_(buf, alpha=-lrs[id(p)])
    return step_all(model, step, grads)


def step_all(model, step, grads):
    """Displacement of every tensor after each step."""
    start = [p.detach().clone() for p in model.parameters()]
    moves = []
    for step_grads in grads:
        for p, g in zip(model.parameters(), step_grads):
            p.grad = g.clone()
        step()
        moves.append([p.detach() - s for p, s in zip(model.parameters(), start)])
    return moves


def scalar_rules(k, grads, mu):
    """p after each step, as plain arithmetic, for one tensor listed k times (lr 1, no decay)."""
    out = {}
    for rule in ("single", "foreach=False", "foreach=True", "k updates"):
        p, buf, trace = 0.0, None, []
        for g in grads:
            if rule in ("single", "k updates"):  # one buffer, updated once per copy
                for _ in range(1 if rule == "single" else k):
                    buf = g if buf is None else mu * buf + g
                    p -= buf
            elif buf is None:  # first step: every copy starts its own buffer (= g) and steps with it
                p, buf = p - k * g, g
            elif rule == "foreach=False":  # then the copies share the kept buffer, one in-place update each
                for _ in range(k):
                    buf = mu * buf + g
                    p -= buf
            else:  # foreach: all copies scale and add to the shared buffer, then each steps with the result
                buf = mu ** k * buf + k * g
                p -= k * buf
            trace.append(p)
        out[rule] = trace
    return out


def scalar_demo(k=3, grads=(1.0, 1.0, 1.0), mu=MOMENTUM):
    print(f"one scalar tensor listed {k} times, grad {grads[0]} at every step, lr 1, momentum {mu}, no decay:")
    rules = scalar_rules(k, grads, mu)
    for label, impl in (("single", dict(foreach=False)), ("foreach=False", dict(foreach=False)),
                        ("foreach=True", dict(foreach=True)), ("fused=True", dict(fused=True))):
        p = torch.zeros(1, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = torch.optim.SGD([p] * (1 if label == "single" else k), lr=1.0, momentum=mu, **impl)
        trace = []
        for g in grads:
            p.grad = torch.full_like(p, g)
            opt.step()
            trace.append(p.item())
        rule = rules["foreach=False" if label == "fused=True" else label]
        print(f"  {label:14} p = {', '.join(f'{v:8.4f}' for v in trace)}   "
              f"(rule: {', '.join(f'{v:8.4f}' for v in rule)})")
    print(f"  {'k updates':14} p = {', '.join(f'{v:8.4f}' for v in rules['k updates'])}   (PyTorch 0.4)\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    model = fresh_model()
    grads = fixed_grads(model, args.steps)
    names = [n for n, _ in model.named_parameters()]
    mult = dict(zip(map(id, model.parameters()), names))
    k_of = {}
    for group, listed in zip(("trunk", "head"), model.original_param_lists()):
        for p in listed:
            k_of[mult[id(p)]] = (group, k_of.get(mult[id(p)], (group, 0))[1] + 1)

    print(f"torch {torch.__version__}; model DeepLabV3PlusWRN38 width 1/16: {len(names)} tensors; "
          f"lr {LR} (trunk) / {10 * LR} (head), momentum {MOMENTUM}, weight decay {DECAY}\n")
    scalar_demo()
    single, _ = run_torch_sgd(grads, duplicated=False)
    refs = {"single": single, "k-modern": run_k_updates(grads, False), "k-0.4": run_k_updates(grads, True)}
    runs = {}
    for label, impl in (("foreach=False", dict(foreach=False)), ("foreach=True", dict(foreach=True)),
                        ("fused=True", dict(fused=True))):
        try:
            runs[label], messages = run_torch_sgd(grads, duplicated=True, **impl)
        except Exception as exc:  # an implementation may refuse
            print(f"{label}: refused: {type(exc).__name__}: {exc}")
            continue
        print(f"{label}: warnings at construction: {messages or 'none'}")

    for step in range(args.steps):
        print(f"\nafter step {step + 1}: |displacement| / |single-update displacement|, per (group, k);"
              " and max relative difference to each reference")
        print(f"{'':14}" + "".join(f"{g[0] + str(k):>8}" for g, k in sorted(set(k_of.values()))))
        for label, moves in {**{f"ref {k}": v for k, v in refs.items() if k != "single"}, **runs}.items():
            ratios = defaultdict(list)
            for name, move, base in zip(names, moves[step], single[step]):
                ratios[k_of[name]].append((move.norm() / base.norm()).item())
            cells = "".join(f"{sum(r) / len(r):8.3f}" for _, r in sorted(ratios.items()))
            diffs = ", ".join(f"{ref} {relative_gap(moves[step], refs[ref][step]):.2e}" for ref in refs)
            print(f"{label:14}{cells}   vs {diffs}")


def relative_gap(moves, reference):
    return max(((m - r).abs().max() / r.abs().max()).item() for m, r in zip(moves, reference))


if __name__ == "__main__":
    main()
