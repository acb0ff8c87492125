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

    Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the main process decides
    when to stop (after saving its state). SIGTERM keeps its default: the loader uses it to end
    workers that do not stop by themselves."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
