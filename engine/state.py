"""The full training state (latest.pth) and exact resume.

latest.pth holds the models, the optimizers (legacy SGD and the fp16 scaler included), the next
iteration, every RNG state (one per process), each loader's position in its epoch, the split and
the flags, with a digest of all of it. A resumed run continues exactly where the saved one stopped.

Each save moves the previous state to latest.prev.pth first. `--resume auto` checks latest.pth (it
loads, it is a training state of this project, its digest matches) and, if it is damaged or missing
while latest.prev.pth is there, resumes from that previous generation with a warning naming both; a
damaged latest.pth is then moved aside (latest.damaged.pth, kept for inspection), so that no later
save rotates it onto the good generation. A save that a crash interrupted after its file was complete
(between its two renames, say) left the new state in a temporary file: if that file passes the same
checks and is newer, `--resume auto` makes it latest.pth instead of deleting it.
"""
import hashlib
import io
import os

import numpy as np
import torch

from utils.checkpoint import TEMPORARY, atomic_torch_save
from utils.distributed import all_gather_objects, bare, barrier
from utils.errors import UserError
from utils.seeding import rng_state, set_rng_state

LATEST = "latest.pth"
PREVIOUS = "latest.prev.pth"  # the generation before latest.pth
DAMAGED = "latest.damaged.pth"  # a latest.pth that failed the checks, moved aside (then .1, .2, ...)
FORMAT = "semisup-seg-training-state-1"
# Flags that may differ on resume: they change where and how fast a run goes, not what it computes.
# Each one is checked by tests/test_resume_flags.py: a resume that changes it ends bit-identical on CPU.
# Not among them: --channels-last, which changes a convolution's float rounding.
HARMLESS_FLAGS = {"num_workers", "device", "gpu", "log_every", "checkpoint_dir", "restore_from",
                  "restore_from_D", "resume", "resume_with_other_flags", "save_pred_every", "data_dir",
                  "data_list", "split_id",
                  # train_mlmt.py: paths, the ImageNet file (the state holds the weights), printing
                  "val_list", "pkl_file", "pretrained", "exp_name", "output_dir", "verbose",
                  # where logs go and whether TensorBoard also gets them
                  "tensorboard", "out"}

# Flags added to the trainers after runs may have begun, with the behaviour those runs had: a run
# resumed from a state written before the flag existed continues as it began.
BEFORE_THE_FLAG = {"adam_mode": "standard"}


def ids_fingerprint(ids):
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def state_digest(state):
    """sha256 over everything in a training state but its "digest": every tensor's dtype, shape and
    bytes, every other value's repr, in a fixed order."""
    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{x.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            for k in sorted(x, key=repr):
                if k != "digest":
                    h.update(f"K{k!r}".encode())
                    walk(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}".encode())
            for v in x:
                walk(v)
        else:
            h.update(f"V{x!r}".encode())

    walk(state)
    return h.hexdigest()


class DamagedState(Exception):
    pass


def load_state(path):
    """A training state from `path` (weights only), checked: it loads, it is one of ours, its digest
    matches (states written before the digest existed have none). DamagedState says what is wrong."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedState(f"it does not load ({first[:150]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DamagedState("it is not a training state written by this project (VOC_<i>.pth snapshots hold weights "
                           "only; use --restore-from for them)")
    if "digest" in state and state_digest(state) != state["digest"]:
        raise DamagedState("its content does not match its digest (a damaged file)")
    return state


def resume_path(args):
    """--resume auto: <checkpoint-dir>/latest.pth if it exists; --resume PATH: that file."""
    if not args.resume:
        return None
    if args.resume == "auto":
        path = os.path.join(args.checkpoint_dir, LATEST)
        return path if os.path.isfile(path) else None
    if not os.path.isfile(args.resume):
        raise UserError(f"--resume {args.resume} does not exist: give the latest.pth of the run to continue, or "
                        f"--resume auto (its --checkpoint-dir's latest.pth when there is one)")
    return args.resume


def _iteration_of(path):
    try:
        return int(load_state(path)["iteration"])
    except DamagedState:
        return -1


def promote_complete_temporary(folder, say=print):
    """The newest complete state a crash left in a temporary file of latest.pth, made latest.pth
    when it passes load_state's checks (its digest included) and is newer than latest.pth; the
    latest.pth it replaces becomes latest.prev.pth, as the interrupted save would have done. Returns
    the promoted iteration, or None. For the main process, before the temporaries are cleared."""
    if not os.path.isdir(folder):
        return None
    latest, previous = os.path.join(folder, LATEST), os.path.join(folder, PREVIOUS)
    found = []
    for name in os.listdir(folder):
        if TEMPORARY.match(name) and name.endswith("-" + LATEST):
            try:
                state = load_state(os.path.join(folder, name))
            except DamagedState:
                continue  # half-written: cleared with the other temporaries
            if "digest" in state:
                found.append((int(state["iteration"]), name))
    if not found:
        return None
    iteration, name = max(found)
    if os.path.isfile(latest):
        if _iteration_of(latest) >= iteration:
            return None
        os.replace(latest, previous)
    os.replace(os.path.join(folder, name), latest)
    say(f"note: a save interrupted after its file was complete left the state of iteration {iteration} in {name}; "
        f"it passes the checks and is now {latest}")
    return iteration


def move_aside(path):
    """Rename a damaged latest.pth to latest.damaged.pth (.1, .2, ... if taken); returns the new path."""
    folder = os.path.dirname(path)
    for k in range(1000):
        target = os.path.join(folder, DAMAGED if k == 0 else DAMAGED.replace(".pth", f".{k}.pth"))
        if not os.path.exists(target):
            os.replace(path, target)
            return target
    raise UserError(f"{folder} holds 1000 damaged states: remove them")


def _auto_state(args, say, main=True):
    """--resume auto: latest.pth, else (damaged or missing) the previous generation; None: start fresh.
    The main process moves a damaged latest.pth aside when it falls back (the others find it gone)."""
    latest = os.path.join(args.checkpoint_dir, LATEST)
    previous = os.path.join(args.checkpoint_dir, PREVIOUS)
    problem = damaged = None
    if os.path.isfile(latest):
        try:
            return latest, load_state(latest)
        except DamagedState as exc:
            problem, damaged = f"{latest}: {exc}", latest
    elif not os.path.isfile(previous):
        return None, None
    else:
        problem = f"{latest} is missing (a save was interrupted)"
    if not os.path.isfile(previous):
        raise UserError(f"--resume auto: {problem}, and there is no previous generation {previous}: start the run "
                        f"afresh in another --checkpoint-dir, or remove {latest}")
    try:
        state = load_state(previous)
    except DamagedState as exc:
        raise UserError(f"--resume auto: {problem}; the previous generation {previous} too: {exc}") from None
    if damaged and main:
        problem += f" (moved aside to {move_aside(damaged)})"
    say(f"warning: {problem}; resuming from the previous generation {previous} (iteration {state['iteration']})")
    return previous, state


def read_training_state(args, world_size, say=print, main=True):
    """Load the state --resume names (weights only, checked) and refuse it if flags that change the
    run differ. Under torchrun the main process reads first (it may move a damaged file aside)."""
    if args.resume == "auto":
        path, state = _auto_state(args, say, main)
        if state is None:
            return None
    else:
        path = resume_path(args)
        if path is None:
            return None
        try:
            state = load_state(path)
        except DamagedState as exc:
            raise UserError(f"--resume {path}: {exc}") from None
    saved = state["args"]
    for name, value in BEFORE_THE_FLAG.items():
        if name not in saved and getattr(args, name, value) != value:
            say(f"note: {path} was written before --{name.replace('_', '-')} existed: the run continues with "
                f"--{name.replace('_', '-')} {value}, as it began")
            setattr(args, name, value)
    current = {k: _plain(v) for k, v in vars(args).items()}
    differences = [f"--{k.replace('_', '-')} {saved.get(k)!r} -> {current.get(k)!r}"
                   for k in sorted(set(saved) & set(current))  # flags added or removed since the run began are not compared
                   if k not in HARMLESS_FLAGS and saved.get(k) != current.get(k)]
    if state["world_size"] != world_size:  # each process continues its own random numbers: no way round it
        raise UserError(f"--resume {path} was written by {state['world_size']} processes, this run has "
                        f"{world_size}: resume with {state['world_size']}")
    if differences and not args.resume_with_other_flags:
        raise UserError(f"--resume {path} was written with other flags that change the run: "
                        f"{'; '.join(differences)} (--resume-with-other-flags to continue all the same)")
    if differences:
        say(f"warning: resuming {path} with other flags than it was written with: {'; '.join(differences)}; "
            f"the run is not the one an uninterrupted run would give")
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
        self.previous = os.path.join(args.checkpoint_dir, PREVIOUS)
        self._checked = None  # the identity of the latest.pth known to pass the checks

    def _move_aside_if_damaged(self, say):
        """Before latest.pth is rotated onto latest.prev.pth: unless it is the file this run wrote or
        resumed from, check it; one that fails the checks is moved aside, and latest.prev.pth kept."""
        if not os.path.isfile(self.path) or _identity(self.path) == self._checked:
            return
        try:
            load_state(self.path)
        except DamagedState as exc:
            say(f"warning: {self.path}: {exc}; moved aside to {move_aside(self.path)}, {self.previous} kept")

    def save(self, next_iteration, say=print):
        # every process's RNG state, gathered as bytes (all_gather_object mishandles tensors)
        buffer = io.BytesIO()
        torch.save(rng_state(), buffer)
        gathered = all_gather_objects(self.env, buffer.getvalue())
        if not self.env.is_main:
            barrier(self.env)  # until the main process has written it: a process that exits now could
            return             # make torchrun stop the main one in the middle of its write
        rng = [torch.load(io.BytesIO(b), weights_only=True) for b in gathered]
        state = {
            "format": FORMAT,
            "iteration": next_iteration,
            "model": bare(self.modules["model"]).state_dict(),
            "modules": {k: bare(m).state_dict() for k, m in self.modules.items() if k != "model"},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scaler": self.precision.scaler.state_dict(),
            "streams": {k: s.state_dict() for k, s in self.streams.items()},
            "extras": {k: e.state_dict() for k, e in self.extras.items()},
            "rng": rng,
            "split": None if self.split is None else torch.from_numpy(np.asarray(self.split)),
            "dataset": self.fingerprint,
            "world_size": self.env.world_size,
            "args": {k: _plain(v) for k, v in vars(self.args).items()},
        }
        state["digest"] = state_digest(state)
        self._move_aside_if_damaged(say)
        atomic_torch_save(state, self.path, keep_previous=self.previous)
        self._checked = _identity(self.path)
        barrier(self.env)

    def restore(self, state):
        """Load everything from a state read by read_training_state; return the next iteration."""
        if state["dataset"] != self.fingerprint:
            raise UserError(f"--resume {state['path']}: the training list differs from the one the run "
                            f"started with")
        bare(self.modules["model"]).load_state_dict(state["model"])
        for k, m in self.modules.items():
            if k != "model":
                bare(m).load_state_dict(state["modules"][k])
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
        if os.path.abspath(state["path"]) == os.path.abspath(self.path):
            self._checked = _identity(self.path)
        return int(state["iteration"])


def _identity(path):
    """What tells one file from another at one path: a rewrite changes it."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns
