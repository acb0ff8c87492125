"""The full training state (latest.pth) and exact resume.

latest.pth holds the models, the optimizers (legacy SGD and the fp16 scaler included), the next
iteration, every RNG state (one per process), each loader's position in its epoch, the split and
the flags. A resumed run continues exactly where the saved one stopped.
"""
import hashlib
import io
import os

import numpy as np
import torch

from utils.checkpoint import atomic_torch_save
from utils.distributed import all_gather_objects
from utils.errors import UserError
from utils.seeding import rng_state, set_rng_state

LATEST = "latest.pth"
FORMAT = "semisup-seg-training-state-1"
# Flags that may differ on resume: they change where and how fast a run goes, not what it computes.
HARMLESS_FLAGS = {"num_workers", "device", "gpu", "log_every", "checkpoint_dir", "restore_from",
                  "restore_from_D", "resume", "save_pred_every", "channels_last", "data_dir",
                  "data_list", "split_id",
                  # train_mlmt.py: paths, the ImageNet file (the state holds the weights), printing
                  "val_list", "pkl_file", "pretrained", "exp_name", "output_dir", "verbose",
                  # where logs go and whether TensorBoard also gets them
                  "tensorboard", "out"}


def ids_fingerprint(ids):
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def resume_path(args):
    """--resume auto: <checkpoint-dir>/latest.pth if it exists; --resume PATH: that file."""
    if not args.resume:
        return None
    if args.resume == "auto":
        path = os.path.join(args.checkpoint_dir, LATEST)
        return path if os.path.isfile(path) else None
    if not os.path.isfile(args.resume):
        raise UserError(f"--resume {args.resume} does not exist")
    return args.resume


def read_training_state(args, world_size):
    """Load latest.pth (weights only) and refuse it if flags that change the run differ."""
    path = resume_path(args)
    if path is None:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"--resume {path} is not a readable training state ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"--resume {path} is not a training state written by this project "
                        f"(VOC_<i>.pth snapshots hold weights only; use --restore-from for them)")
    saved, current = state["args"], {k: _plain(v) for k, v in vars(args).items()}
    differences = [f"--{k.replace('_', '-')} {saved.get(k)!r} -> {current.get(k)!r}"
                   for k in sorted(set(saved) & set(current))  # flags added or removed since the run began are not compared
                   if k not in HARMLESS_FLAGS and saved.get(k) != current.get(k)]
    if state["world_size"] != world_size:
        differences.append(f"processes {state['world_size']} -> {world_size}")
    if differences:
        raise UserError(f"--resume {path} was written with other flags that change the run: "
                        f"{'; '.join(differences)}")
    state["path"] = path
    return state


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


class TrainingState:
    def __init__(self, args, env, modules, optimizers, precision, streams, split, dataset_ids, extras=None):
        self.args, self.env = args, env
        self.modules, self.optimizers, self.precision, self.streams = modules, optimizers, precision, streams
        # anything else with state_dict()/load_state_dict() (an LR scheduler, running meters)
        self.extras = extras or {}
        self.split = split
        self.fingerprint = ids_fingerprint(dataset_ids)
        self.path = os.path.join(args.checkpoint_dir, LATEST)

    def save(self, next_iteration):
        # every process's RNG state, gathered as bytes (all_gather_object mishandles tensors)
        buffer = io.BytesIO()
        torch.save(rng_state(), buffer)
        gathered = all_gather_objects(self.env, buffer.getvalue())
        if not self.env.is_main:
            return
        rng = [torch.load(io.BytesIO(b), weights_only=True) for b in gathered]
        atomic_torch_save({
            "format": FORMAT,
            "iteration": next_iteration,
            "model": _bare(self.modules["model"]).state_dict(),
            "modules": {k: _bare(m).state_dict() for k, m in self.modules.items() if k != "model"},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scaler": self.precision.scaler.state_dict(),
            "streams": {k: s.state_dict() for k, s in self.streams.items()},
            "extras": {k: e.state_dict() for k, e in self.extras.items()},
            "rng": rng,
            "split": None if self.split is None else torch.from_numpy(np.asarray(self.split)),
            "dataset": self.fingerprint,
            "world_size": self.env.world_size,
            "args": {k: _plain(v) for k, v in vars(self.args).items()},
        }, self.path)

    def restore(self, state):
        """Load everything from a state read by read_training_state; return the next iteration."""
        if state["dataset"] != self.fingerprint:
            raise UserError(f"--resume {state['path']}: the training list differs from the one the run "
                            f"started with")
        _bare(self.modules["model"]).load_state_dict(state["model"])
        for k, m in self.modules.items():
            if k != "model":
                _bare(m).load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            # the learning-rate multipliers are the model's, whatever a saved state says
            multipliers = [g.get("lr_mult") for g in o.param_groups]
            o.load_state_dict(state["optimizers"][k])
            for group, mult in zip(o.param_groups, multipliers):
                if mult is not None:
                    group["lr_mult"] = mult
        if state["scaler"]:
            self.precision.scaler.load_state_dict(state["scaler"])
        for k, s in self.streams.items():
            s.load_state_dict(state["streams"][k])
        for k, e in self.extras.items():
            if k in state["extras"]:  # an extra that a later version added starts afresh
                e.load_state_dict(state["extras"][k])
        set_rng_state(state["rng"][self.env.rank])
        return int(state["iteration"])


def _bare(module):
    return module.module if hasattr(module, "module") else module
