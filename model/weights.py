"""Loading weights: ImageNet ResNets, COCO DeepLab, checkpoints of this project and of the original.

Every file is read with `torch.load(weights_only=True)`: a checkpoint cannot run code when loaded.
"""
import argparse
import os
import pickle
import sys

import torch

from utils.checkpoint import atomic_torch_save
from utils.errors import UserError

# torchvision's first-generation ImageNet files (the original used resnet101-5d3b4d8f.pth)
TORCHVISION_URL = "https://download.pytorch.org/models/{}"
TORCHVISION_FILES = ("resnet101-5d3b4d8f.pth", "resnet50-19c8e357.pth", "resnet18-5c106cde.pth")
PRETRAINED_DIR = "./pretrained_models"


def _missing_file_message(path, flag):
    name = os.path.basename(path)
    if name in TORCHVISION_FILES:
        return (f"{flag} {path} does not exist: download the ImageNet weights from "
                f"{TORCHVISION_URL.format(name)} and put the file there "
                f"(or pass {flag} none to train from random initialisation)")
    hints = {"--restore-from": "check the path, or pass --restore-from none to start from random initialisation",
             "--restore-from-D": "check the path, or leave the flag out to start D from random initialisation"}
    return f"{flag} {path} does not exist" + (f": {hints[flag]}" if flag in hints else "")


def read_state_dict(path, flag="--restore-from"):
    """Read a checkpoint file and return a flat {name: tensor} dict without `module.` prefixes.

    Accepts bare state dicts (ImageNet, COCO, the original's VOC_<i>.pth with or without `module.`)
    and this project's training states (the segmenter's weights under 'model').
    """
    if path.startswith(("http://", "https://")):
        try:
            state = torch.hub.load_state_dict_from_url(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # network errors, bad files
            raise UserError(f"{flag} {path}: could not download or read it ({exc})") from None
    else:
        if not os.path.isfile(path):
            raise UserError(_missing_file_message(path, flag))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
            raise UserError(f"{flag} {path} is refused: it holds objects other than tensors and "
                            f"plain containers, and loading it could run code ({first})") from None
        except Exception as exc:
            raise UserError(f"{flag} {path} is not a readable PyTorch checkpoint ({exc})") from None
    return _flatten(state, path, flag)


def _flatten(state, path, flag):
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training state written by this project
    elif isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise UserError(f"{flag} {path} holds no state dict")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = str(key)
        out[key[len("module."):] if key.startswith("module.") else key] = value
    if not out:
        raise UserError(f"{flag} {path} holds no tensors")
    return out


def load_matching(model, state, path, flag="--restore-from"):
    """The original rule: copy each tensor whose name and shape match the model's; return the count.

    Copying zero tensors is an error (a wrong file would otherwise train from scratch silently).
    """
    own = model.state_dict()
    loaded, mismatched = 0, []
    with torch.no_grad():
        for name, target in own.items():
            source = state.get(name)
            if source is None:
                continue
            if source.shape != target.shape:
                mismatched.append(name)
                continue
            target.copy_(source)
            loaded += 1
    if loaded == 0:
        raise UserError(f"{flag} {path}: no tensor matches the model by name and shape "
                        f"(is it a checkpoint for another model or --backbone?)")
    return loaded, mismatched


def load_exact(model, state, path, flag="--restore-from"):
    """Load a checkpoint that must fit the model: every tensor present with the right shape.

    `num_batches_tracked` may be missing (files from PyTorch 0.4.0 did not have it).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        detail = "; ".join(wrong[:2] + [f"missing {k}" for k in missing[:2]])
        raise UserError(f"{flag} {path} does not fit the model: {len(wrong)} tensors of another shape, "
                        f"{len(missing)} missing ({detail}); check --backbone and --num-classes")
    load_matching(model, state, path, flag)


def export_original(path, out):
    """Write the segmenter weights of `path` (a VOC_<i>.pth or latest.pth of this project) as the
    original evaluate.py loads them: a state dict whose keys start with `module.` (DataParallel)."""
    state = read_state_dict(path, "checkpoint")
    atomic_torch_save({"module." + k: v for k, v in state.items()}, out)
    return len(state)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m model.weights",
                                     description="Convert checkpoints for the original code.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export-original",
                            help="write a snapshot with the `module.` key prefix the original evaluate.py needs")
    export.add_argument("checkpoint", help="VOC_<iter>.pth or latest.pth written by this project")
    export.add_argument("out", help="output file, e.g. VOC_40000_original.pth")
    args = parser.parse_args(argv)
    count = export_original(args.checkpoint, args.out)
    print(f"wrote {args.out}: {count} tensors with the module. prefix (load it with the original evaluate.py)")


if __name__ == "__main__":
    from utils.errors import run_cli
    run_cli(main, sys.argv[1:])
