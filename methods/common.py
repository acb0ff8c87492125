"""What every training step does with its loss values."""
import torch

from utils.errors import UserError


class NonFiniteLoss(UserError):
    pass


def losses_to_floats(iteration, losses):
    """One host sync per step: the loss values as floats; a NaN/Inf stops the run naming the term."""
    names = list(losses)
    values = torch.stack([losses[n].detach().float().reshape(()) for n in names]).tolist()
    for name, value in zip(names, values):
        if value != value or value in (float("inf"), float("-inf")):
            raise NonFiniteLoss(f"{name} is {value} at iteration {iteration}: stopping before this step "
                                f"is applied; checkpoints already written are kept (try a lower learning rate)")
    return dict(zip(names, values))
