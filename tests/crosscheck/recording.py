"""Our side of the training comparisons: what our trainers' steps receive and compute, recorded while
the trainer runs for real (main() with its flags), so that the original's loop can be given the same
batches, random states and thresholds (driver.py `train_loop`, `mlmt`), and both sides compared."""
import contextlib
import os

import numpy as np
import torch

import methods.s4gan
from data.sampler import BatchStream
from utils.optim import LegacyAdam, LegacySGD


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
    `multiplicity` counts as that many listings), gradients, parameters after the step and the
    optimizer's state of each tensor (momentum buffer, Adam's moments)."""
    listed = [(p, k) for g in opt.param_groups
              for p, k in zip(g["params"], g.get("multiplicity") or [1] * len(g["params"]))]
    repeats, unique = {}, {}
    for p, k in listed:
        repeats[names[id(p)]] = repeats.get(names[id(p)], 0) + k
        unique[names[id(p)]] = p
    entry = {"lr": [g["lr"] for g in opt.param_groups], "repeats": repeats,
             "grads": {n: p.grad.detach().clone() for n, p in unique.items() if p.grad is not None}}
    apply()
    entry["after"] = {n: p.detach().clone() for n, p in unique.items()}
    entry["state"] = optimizer_state(opt, unique)
    return entry


def optimizer_state(opt, unique):
    """{name: {key: tensor}}: each tensor's state in the optimizer after its step."""
    return {n: {k: v.detach().clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor) and v.dim()}
            for n, p in unique.items() if p in opt.state}


class OurRun:
    """Records what a step class (S4GANStep, SupervisedStep) receives and computes in a run of one of
    our trainers: per iteration the batches, the global RNG state at the step's start, the epoch of
    each stream's batch, S's state at the step's start, D's outputs, the self-training pseudo-labels,
    the values, and each optimizer step (optimizer_entry); the initial and final weights; the streams
    (BatchStream) in draw order.

    choose_thresholds: at each iteration, --threshold-st is set between two of D's scores on the
    unlabeled batch (the widest gap), so that self-training takes some images and leaves others; the
    thresholds are recorded for the original's run.

    The tensors of a whole network (S's state at the step's start, each optimizer step's gradients,
    parameters after it and state) go to one file per iteration in `folder` (iteration_file(i);
    `heavy(i)` loads it), so that only one iteration of them is in memory at a time; the optimizers'
    states only at iteration `state_at`."""

    def __init__(self, folder, step_class, s_optimizer_class, d_optimizer_class=None, choose_thresholds=False,
                 state_at=None):
        self.folder, self.state_at = str(folder), state_at
        os.makedirs(self.folder, exist_ok=True)
        self.step_class, self.s_optimizer_class = step_class, s_optimizer_class
        self.d_optimizer_class = d_optimizer_class
        self.choose_thresholds = choose_thresholds
        self.iterations, self.initial, self.names = [], None, {}
        self.streams, self._drawn = [], []
        self.model = self.model_d = self.step = None
        self._heavy = None

    def iteration_file(self, i):
        return os.path.join(self.folder, f"ours_{i}.pt")

    def heavy(self, i):
        """Iteration i's file, with S's whole state at the step's start as 'start_s': the initial state,
        the parameters as the previous step left them, the buffers (BN statistics) saved at the start."""
        heavy = torch.load(self.iteration_file(i), weights_only=False)
        start = dict(self.initial["S"])
        if i > 0:
            start.update(torch.load(self.iteration_file(i - 1), weights_only=False)["sgd"]["after"])
        start.update(heavy["buffers"])
        heavy["start_s"] = start
        return heavy

    def _flush(self):
        if self._heavy is not None:
            torch.save(self._heavy, self.iteration_file(self.now()["iteration"]))
            self._heavy = None

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
            else:
                run._flush()
            run.iterations.append({"iteration": i, "batches": clone(batches), "rng": torch.get_rng_state(),
                                   "epochs": run._drawn[-len(batches):], "d_calls": []})
            parameters = {id(p) for p in run.model.parameters()}  # their values: the last step's 'after'
            run._heavy = {"buffers": {k: v.detach().clone() for k, v in run.model.state_dict(keep_vars=True).items()
                                      if id(v) not in parameters}}
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
        # the classes the trainers build for S and D, whichever the flags choose
        kinds = {"sgd": {self.s_optimizer_class, torch.optim.SGD, LegacySGD},
                 "adam": {self.d_optimizer_class, torch.optim.Adam, LegacyAdam} if self.d_optimizer_class else set()}
        for key, classes in kinds.items():
            for cls in classes:
                patched.append((cls, "step", self._recording_step(cls.step, key)))
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
        for owner, name, value in patched:
            setattr(owner, name, value)
        try:
            yield self
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)
        self._flush()
        self.final = self._states()
        self.model = self.model_d = self.step = None  # the run's networks and optimizers can go now

    def _recording_step(self, real, key):
        run = self

        def step(opt, closure=None):
            entry = optimizer_entry(opt, run.names, lambda: real(opt, closure))
            run._heavy[key] = {k: entry.pop(k) for k in ("grads", "after", "state")}
            if run.now()["iteration"] != run.state_at:  # the optimizer's state: at one iteration only
                del run._heavy[key]["state"]
            run.now()[key] = entry
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
