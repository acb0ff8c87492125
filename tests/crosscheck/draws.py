"""Random draws: recorded where our pipelines make them, replayed where the original makes its own.

Our datasets draw every random number of a sample from `np.random.default_rng(key)`; the original
draws from Python's `random`, `np.random`, `torch.rand` and torchvision's ColorJitter. To compare a
sample item by item, the test records our draws (`recording_rngs`), translates them into the calls
the original makes (`Draw` lists, in the original's order), and the driver answers the original's
calls from that list (`ForcedDraws`), checking that each call is the one expected, with the same
bounds: a draw over another range, or one draw too many or too few, is a difference and fails.

numpy and the standard library only: imported on both sides.
"""
import contextlib
from collections import namedtuple

import numpy as np

# kind: random | randint | uniform | np_choice | torch_rand | jitter; bounds: what the call must ask
Draw = namedtuple("Draw", "kind bounds value")


class DrawMismatch(AssertionError):
    pass


class Recorder:
    """A numpy Generator that records (method, bounds, value) of each draw it makes."""

    def __init__(self, generator):
        self._generator = generator
        self.draws = []

    def _record(self, method, bounds, value):
        self.draws.append((method, bounds, value.tolist() if isinstance(value, np.ndarray) else
                           (value.item() if isinstance(value, np.generic) else value)))
        return value

    def random(self):
        return self._record("random", (), self._generator.random())

    def integers(self, low, high=None):
        return self._record("integers", (int(low), int(high)), self._generator.integers(low, high))

    def uniform(self, low, high):
        return self._record("uniform", (float(low), float(high)), self._generator.uniform(low, high))

    def permutation(self, n):
        return self._record("permutation", (int(n),), self._generator.permutation(n))


@contextlib.contextmanager
def recording_rngs():
    """Within the block every np.random.default_rng(...) is a Recorder; yields the list of them."""
    created = []
    real = np.random.default_rng

    def recording(*args, **kwargs):
        created.append(Recorder(real(*args, **kwargs)))
        return created[-1]

    np.random.default_rng = recording
    try:
        yield created
    finally:
        np.random.default_rng = real


def randint(draw):
    """Our integers(low, high) (high exclusive) as the original's random.randint(low, high - 1)."""
    method, (low, high), value = draw
    assert method == "integers", draw
    return Draw("randint", (low, high - 1), value)


def plain(draw, kind=None):
    """Our random() / uniform(a, b) as the same call of Python's random module."""
    method, bounds, value = draw
    assert method in ("random", "uniform"), draw
    return Draw(kind or method, bounds or None, value)


class ForcedDraws:
    """Answers the original's random calls from a list of Draws, in order (driver side)."""

    def __init__(self, draws):
        self.queue = [Draw(*d) for d in draws]
        self.used = 0

    def take(self, kind, bounds=None):
        if not self.queue:
            raise DrawMismatch(f"the original drew {kind}{tuple(bounds) if bounds else '()'} after the "
                               f"{self.used} draws ours made")
        draw = self.queue.pop(0)
        if draw.kind != kind or (draw.bounds is not None and tuple(draw.bounds) != tuple(bounds or ())):
            raise DrawMismatch(f"draw {self.used + 1}: the original asked {kind}{tuple(bounds or ())}, "
                               f"ours drew {draw.kind}{tuple(draw.bounds or ())}")
        self.used += 1
        return draw.value

    def finish(self):
        if self.queue:
            raise DrawMismatch(f"ours drew {len(self.queue)} more values than the original asked for: "
                               f"{[tuple(d[:2]) for d in self.queue]}")

    # Python's random module, as the original's modules call it
    def random(self):
        return self.take("random")

    def randint(self, a, b):
        return self.take("randint", (a, b))

    def uniform(self, a, b):
        return self.take("uniform", (a, b))
