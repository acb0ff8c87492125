"""The training loop shared by every trainer: schedule, step, log, checkpoint, stop on request."""
import os
import signal

import torch
import torch.distributed as dist

from utils.checkpoint import atomic_torch_save
from utils.errors import UserError


class StopRequested:
    """Turns SIGINT/SIGTERM into a flag checked between iterations (the state is then saved).

    Under torchrun every process must stop after the same iteration, or the next collective
    would hang: `requested()` agrees across processes (one tiny all-reduce per iteration)."""

    def __init__(self, env):
        self.env, self.signum = env, None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def requested(self):
        if not self.env.distributed:
            return self.signum is not None
        flag = torch.tensor([self.signum or 0], device=self.env.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.signum = int(flag.item()) or None
        return self.signum is not None

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class Interrupted(UserError):
    """Not an error: the run stopped on request after saving its state."""

    prefix = ""

    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + signum


def snapshot_path(checkpoint_dir, iteration, suffix=""):
    return os.path.join(checkpoint_dir, f"VOC_{iteration}{suffix}.pth")


def check_finite_weights(modules, iteration):
    """Refuse to save weights that a step has made NaN/Inf (the previous checkpoints stay good)."""
    for name, module in modules.items():
        for key, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise UserError(f"{name} tensor {key} is not finite after iteration {iteration}: stopping "
                                f"without saving; checkpoints already written are kept (try a lower learning rate)")


def run_training(*, env, start, num_steps, save_every, step, streams, set_lrs, log, save_snapshot, save_state,
                 modules):
    """Iterations start..num_steps-1 of `step(i, *batches)`.

    `set_lrs(i)` sets the learning rates and returns the segmenter's (for the log). Snapshots
    VOC_<i>.pth at every i % save_every == 0 (i > 0) and VOC_<num_steps>.pth at the end, as the
    original; the full training state (latest.pth) at the same moments and on SIGINT/SIGTERM.
    """
    with StopRequested(env) as stop:
        for i in range(start, num_steps):
            lr = set_lrs(i)
            positions = [s.state_dict() for s in streams]
            try:
                batches = [next(s) for s in streams]
            except Exception:
                if stop.signum is None:
                    raise
                # a signal sent to the whole job also ended the loader's workers: the state after
                # the last completed iteration is still whole, so save it
                for s, position in zip(streams, positions):
                    s.load_state_dict(position)
                check_finite_weights(modules, i - 1)
                save_state(i)
                raise Interrupted(f"stopped by signal {stop.signum} before iteration {i}; the training state "
                                  f"is saved: run the same command with --resume auto to continue", stop.signum)
            values = step(i, *batches)
            log.update(i, {**values, "lr": lr})
            last = i == num_steps - 1
            periodic = last or (i % save_every == 0 and i != 0)
            stopping = stop.requested() and not last
            if periodic or stopping:
                check_finite_weights(modules, i)
            if periodic and env.is_main:
                save_snapshot(num_steps if last else i)
            if periodic or stopping:
                save_state(i + 1)
            if stopping:
                raise Interrupted(f"stopped by signal {stop.signum} after iteration {i}; the training state is "
                                  f"saved: run the same command with --resume auto to continue", stop.signum)


def save_model_snapshot(path, module):
    atomic_torch_save(module.state_dict(), path)
