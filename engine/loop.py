"""The training loop shared by every trainer: schedule, step, log, checkpoint, stop on request."""
import os
import signal

from utils.checkpoint import atomic_torch_save
from utils.errors import UserError


class StopRequested:
    """Turns SIGINT/SIGTERM into a flag checked between iterations (the state is then saved)."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

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


def run_training(*, start, num_steps, save_every, step, streams, set_lrs, log, save_snapshot, save_state,
                 is_main=True):
    """Iterations start..num_steps-1 of `step(i, *batches)`.

    `set_lrs(i)` sets the learning rates and returns the segmenter's (for the log). Snapshots
    VOC_<i>.pth at every i % save_every == 0 (i > 0) and VOC_<num_steps>.pth at the end, as the
    original; the full training state (latest.pth) at the same moments and on SIGINT/SIGTERM.
    """
    with StopRequested() as stop:
        for i in range(start, num_steps):
            lr = set_lrs(i)
            batches = [next(s) for s in streams]
            values = step(i, *batches)
            log.update(i, {**values, "lr": lr})
            last = i == num_steps - 1
            if last or (i % save_every == 0 and i != 0):
                if is_main:
                    save_snapshot(num_steps if last else i)
                save_state(i + 1)
            elif stop.signum is not None:
                save_state(i + 1)
            if stop.signum is not None and not last:
                raise Interrupted(f"stopped by signal {stop.signum} after iteration {i}; the training state "
                                  f"is saved: run the same command with --resume auto to continue", stop.signum)


def save_model_snapshot(path, module):
    atomic_torch_save(module.state_dict(), path)
