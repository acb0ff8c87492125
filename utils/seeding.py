"""Seeding and the random-number-generator state of a process (for exact resume)."""
import random
import signal

import numpy as np
import torch


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def init_worker(worker_id):
    """DataLoader worker_init_fn: python/numpy seeded from torch's per-worker seed (base seed + id).

    Ctrl-C, Slurm's pre-emption and torchrun's shutdown signal the whole process group; the main
    process decides when to stop (after the current iteration, with its state saved), and a worker
    ended by the signal would instead fail the loader in the middle of that iteration. So workers
    ignore SIGINT, and SIGTERM for WORKER_GRACE_S: the main process ends them before then
    (BatchStream.close, or the loader at the end of its epoch), and they exit by themselves when it
    is gone. The grace period only bounds a case nothing ends them in; SIGKILL still ends them."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _end_after_grace)


WORKER_GRACE_S = 600


def _end_after_grace(signum, frame):
    """A loader worker's SIGTERM: SIGALRM (whose default ends the process) after WORKER_GRACE_S."""
    remaining = signal.alarm(WORKER_GRACE_S)
    if remaining:  # an earlier SIGTERM's alarm was running: keep its time
        signal.alarm(remaining)


def rng_state():
    """Every RNG this process draws from, in a form torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
