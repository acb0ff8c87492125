"""Our side of the training comparisons: what our trainers' steps receive and compute, recorded while
the trainer runs for real (main() with its flags), so that the original's loop can be given the same
batches, random states and thresholds (driver.py `train_loop`, `mlmt`), and both sides compared."""
import contextlib

import numpy as np
import torch

import methods.s4gan
from data.sampler import BatchStream


def clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone(o) for o in obj)
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    return obj


def optimizer_entry(opt, names, apply):
    """Record one optimizer step: learning rates, how many times each tensor is listed (LegacySGD's
    `multiplicity` counts as that many listings), gradients, parameters before and after."""
    listed = [(p, k) for g in opt.param_groups
              for p, k in zip(g["params"], g.get("multiplicity") or [1] * len(g["params"]))]
    repeats = {}
    for p, k in listed:
        repeats[names[id(p)]] = repeats.get(names[id(p)], 0) + k
    entry = {"lr": [g["lr"] for g in opt.param_groups], "repeats": repeats,
             "grads": {names[id(p)]: p.grad.detach().clone() for p, _ in listed if p.grad is not None},
             "before": {names[id(p)]: p.detach().clone() for p, _ in listed}}
    apply()
    entry["after"] = {names[id(p)]: p.detach().clone() for p, _ in listed}
    return entry


class OurRun:
    """Records what a step class (S4GANStep, SupervisedStep) receives and computes in a run of one of
    our trainers: per iteration the batches, the global RNG state at the step's start, the epoch of
    each stream's batch, S's state at the step's start, D's outputs, the self-training pseudo-labels,
    the values, and each optimizer step (optimizer_entry); the initial and final weights; the streams
    (BatchStream) in draw order.

    choose_thresholds: at each iteration, --threshold-st is set between two of D's scores on the
    unlabeled batch (the widest gap), so that self-training takes some images and leaves others; the
    thresholds are recorded for the original's run."""

    def __init__(self, step_class, s_optimizer_class, d_optimizer_class=None, choose_thresholds=False):
        self.step_class, self.s_optimizer_class = step_class, s_optimizer_class
        self.d_optimizer_class = d_optimizer_class
        self.choose_thresholds = choose_thresholds
        self.iterations, self.initial, self.names = [], None, {}
        self.streams, self._drawn = [], []
        self.model = self.model_d = self.step = None

    def now(self):
        return self.iterations[-1]

    def _states(self):
        out = {"S": clone(self.model.state_dict())}
        if self.model_d is not None:
            out["D"] = clone(self.model_d.state_dict())
        return out

    def _first_call(self, step):
        self.step = step
        self.model = getattr(step.model, "module", step.model)
        self.names = {id(p): n for n, p in self.model.named_parameters()}
        self.model_d = getattr(step, "model_d_without_ddp", None)
        if self.model_d is not None:
            self.names.update({id(p): n for n, p in self.model_d.named_parameters()})
            self.model_d.register_forward_hook(self._d_hook)
        self.initial = self._states()

    def _d_hook(self, module, inputs, outputs):
        entry = self.now()
        entry["d_calls"].append(tuple(o.detach().clone() for o in outputs))
        if self.choose_thresholds and len(entry["d_calls"]) == 1:  # the unlabeled batch, S phase
            scores = np.sort(outputs[0].detach().double().reshape(-1).numpy())
            gaps = np.diff(scores)
            k = int(np.argmax(gaps))
            assert gaps[k] > 1e-4, f"D's scores are too close to put a threshold between them: {scores}"
            entry["threshold"] = float((scores[k] + scores[k + 1]) / 2)
            self.step.threshold_st = entry["threshold"]

    @contextlib.contextmanager
    def recording(self):
        run = self
        real_call, real_next = self.step_class.__call__, BatchStream.__next__
        real_st = methods.s4gan.self_training_loss

        def call(step, i, **batches):
            if run.model is None:
                run._first_call(step)
            run.iterations.append({"iteration": i, "batches": clone(batches), "rng": torch.get_rng_state(),
                                   "epochs": run._drawn[-len(batches):], "d_calls": []})
            if i > 0:
                run.now()["start_s"] = clone(run.model.state_dict())
            run._drawn = []
            run.now()["values"] = real_call(step, i, **batches)
            return run.now()["values"]

        def next_batch(stream):
            batch = real_next(stream)
            if stream not in run.streams:
                run.streams.append(stream)
            run._drawn.append(stream.epoch)
            return batch

        def self_training_loss(logits, d_prob, threshold):
            selected = d_prob.reshape(-1) > threshold
            run.now()["pseudo_labels"] = logits.detach().argmax(1)[selected].clone()
            return real_st(logits, d_prob, threshold)

        patched = [(self.step_class, "__call__", call), (BatchStream, "__next__", next_batch),
                   (methods.s4gan, "self_training_loss", self_training_loss)]
        for cls, key in ((self.s_optimizer_class, "sgd"), (self.d_optimizer_class, "adam")):
            if cls is not None:
                patched.append((cls, "step", self._recording_step(cls.step, key)))
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
        for owner, name, value in patched:
            setattr(owner, name, value)
        try:
            yield self
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)
        self.final = self._states()

    def _recording_step(self, real, key):
        run = self

        def step(opt, closure=None):
            run.now()[key] = optimizer_entry(opt, run.names, lambda: real(opt, closure))
        return step

    def passes(self, for_the_original=lambda batch: batch):
        """Each stream's batches grouped by its epochs: {stream number: [[batches of epoch 0], ...]}."""
        out = {}
        for k in range(len(self.iterations[0]["epochs"])):
            name = list(self.iterations[0]["batches"])[k]
            epochs = {}
            for o in self.iterations:
                epochs.setdefault(o["epochs"][k], []).append(for_the_original(o["batches"][name]))
            out[k] = [epochs[e] for e in sorted(epochs)]
        return out
