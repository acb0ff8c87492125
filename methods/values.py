"""What every training step does with its values (losses, counts, scores): where they are read.

On a CPU reading a value costs nothing, so a step reads its values at once and stops before its
update is applied when one is not finite. On a GPU every read waits for the queued work; there a step
keeps its values on the device (`deferred`), and the run reads them, with one transfer, only at the
iterations it logs (--log-every), stopping there when one is not finite; a non-finite loss leaves the
weights non-finite, and those are never saved (engine/run.py checks them at every snapshot)."""
import torch

from utils.errors import UserError


class NonFiniteLoss(UserError):
    pass


def host_values(iteration, values):
    """The tensors among `values` as Python numbers, with one transfer (integer tensors as ints); a
    value that is not finite stops the run, naming it."""
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    numbers = torch.stack([v.detach().double().reshape(()) for v in tensors.values()]).tolist() if tensors else []
    out = dict(values)
    for (key, tensor), number in zip(tensors.items(), numbers):
        out[key] = number if tensor.is_floating_point() else int(number)
    for key, value in out.items():
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise NonFiniteLoss(f"{key} is {value} at iteration {iteration}: stopping; weights that are not finite "
                                f"are never saved, the checkpoints already written are kept (try a lower learning rate)")
    return out


def defer_reads(device):
    """Whether a step on `device` keeps its values there (see the module's note): on accelerators."""
    return device.type != "cpu"


def step_values(iteration, values, deferred):
    """A step's values: as Python numbers, checked now (before the step's update), or, `deferred`,
    as detached device tensors for the run to read at its logged iterations (no synchronisation)."""
    if deferred:
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
    return host_values(iteration, values)
