"""evaluate.py --with-mlmt: the MLMT classifier's class-presence probabilities remove the classes it
finds absent from an image's segmentation."""
import numpy as np
import torch

from utils.errors import UserError

MLMT_THRESHOLD = 0.2  # MLMT probabilities >= 0.2 mean "class present", as the original


class MLMTFusion:
    """Class-presence gating from the MLMT branch (`--with-mlmt`).

    multiply (original): the upsampled raw logits of absent classes are multiplied by 0, so an
    'absent' class can still win where every remaining logit is negative; mask: set to -inf.
    """

    def __init__(self, path, num_images, num_classes, mode="multiply"):
        try:
            table = np.loadtxt(path, ndmin=2)
        except OSError:
            raise UserError(f"--mlmt-file {path} does not exist: give an output_ema_raw_<epoch>.txt that "
                            f"train_mlmt.py wrote (in ./mlmt_output/<exp-name>/)") from None
        except ValueError as exc:
            raise UserError(f"--mlmt-file {path} is not a table of numbers ({exc})") from None
        if table.shape[0] != num_images or table.shape[1] < num_classes:
            raise UserError(f"--mlmt-file {path} has {table.shape[0]} rows x {table.shape[1]} columns; "
                            f"expected one row per image of the list ({num_images}) and {num_classes} columns")
        self.present = torch.from_numpy(table[:, :num_classes] >= MLMT_THRESHOLD)
        self.mode = mode

    def __call__(self, logits, indices):
        present = self.present[indices.cpu()].to(logits.device)[:, :, None, None]
        if self.mode == "multiply":
            return logits * present.to(logits.dtype)
        return logits.masked_fill(~present, float("-inf"))
