"""Training progress: a tqdm bar on a terminal, plain periodic lines otherwise, metrics.jsonl, and
optionally the same scalars to TensorBoard."""
import json
import os
import sys
import time

from tqdm import tqdm

from utils.errors import UserError


def _format(values):
    parts = []
    for key, value in values.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.3g}" if key == "lr" else f"{key} {value:.4f}")
        else:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


def truncate_jsonl(path, before_iteration):
    """Drop records of iterations >= before_iteration (a resumed run logs them again)."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line).get("iter", -1) < before_iteration]
    with open(path, "w") as f:
        f.writelines(keep)


def tensorboard_writer(log_dir):
    """A TensorBoard SummaryWriter, or a clear error when the optional `tensorboard` package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the optional tensorboard package: pip install tensorboard "
                        "(metrics.jsonl and `python -m utils.plot` work without it)") from None
    return SummaryWriter(log_dir)


class TrainingLog:
    def __init__(self, jsonl_path, start, total, log_every=10, enabled=True, stream=None, tensorboard=False):
        self.start, self.total, self.log_every = start, total, max(1, log_every)
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.jsonl_path = jsonl_path if enabled else None
        self.t0 = time.time()
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, file=self.stream)
        if self.jsonl_path:
            truncate_jsonl(self.jsonl_path, start)
        self.tensorboard = tensorboard_writer(os.path.dirname(jsonl_path)) if enabled and tensorboard else None

    def due(self, iteration, force=False):
        """Whether iteration `iteration` is recorded (every --log-every, the last, or `force`); the
        same on every rank, so all of them read their values at the same iterations."""
        return force or iteration % self.log_every == 0 or iteration == self.total - 1

    def tick(self):
        """An iteration that is not recorded: only the progress bar moves."""
        if self.enabled and self.bar is not None:
            self.bar.update(1)

    def update(self, iteration, values, force=False):
        """Record iteration `iteration` (0-based) with its scalar values (`force`: even between the
        --log-every iterations, e.g. a validation score)."""
        if not self.enabled:
            return
        due = self.due(iteration, force)
        if self.bar is not None:
            self.bar.update(1)
            if due:
                self.bar.set_postfix_str(_format(values), refresh=False)
        elif due:
            done = iteration + 1 - self.start
            eta = (time.time() - self.t0) / max(done, 1) * (self.total - iteration - 1)
            print(f"iter {iteration:6d}/{self.total}  {_format(values)}  eta {_hms(eta)}",
                  file=self.stream, flush=True)
        if due and self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, iteration)
        if due and self.jsonl_path:
            record = {"iter": iteration, "time": round(time.time() - self.t0, 3), **values}
            with open(self.jsonl_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def message(self, text):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=self.stream, flush=True)

    def image(self, tag, rgb, iteration):
        """An RGB uint8 HxWx3 picture to TensorBoard (nothing without --tensorboard)."""
        if self.tensorboard is not None:
            self.tensorboard.add_image(tag, rgb, iteration, dataformats="HWC")

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.bar is not None:
            self.bar.close()


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
