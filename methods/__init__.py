"""The methods' objectives: s4GAN (s4gan.py), the supervised baseline (supervised.py) and the MLMT
classifier (the mlmt package: its objective, data, validation and fusion). A step takes an
iteration's batches and returns its logged values; the loop around it is in the training script,
the machinery it calls (data, schedules, snapshots, resume) in engine/.

The contract every step keeps (`TrainingStep`), checked over `METHODS` by tests/test_contracts.py:

- `streams`: {stream name: pool}, the batches it takes, each drawn from the "labeled" or the
  "unlabeled" images of the split. A stream's random order is seeded by its position in this
  mapping, so a new stream goes at the end (the others keep their orders).
- `__call__(iteration, [epoch,] **batches)`: one update from one batch of each stream (given by
  name); returns {name: value} to log (numbers, or device tensors that the run reads when it logs).
"""
from typing import Any, Dict, Mapping, Protocol, runtime_checkable

POOLS = ("labeled", "unlabeled")


@runtime_checkable
class TrainingStep(Protocol):
    streams: Mapping[str, str]

    def __call__(self, iteration: int, *args: Any, **batches: Any) -> Dict[str, Any]: ...


def methods():
    """Name -> step class of every method (imported on use: the MLMT package pulls in its data code)."""
    from methods.mlmt.objective import MLMTStep
    from methods.s4gan import S4GANStep
    from methods.supervised import SupervisedStep
    return {"supervised": SupervisedStep, "s4gan": S4GANStep, "mlmt": MLMTStep}
