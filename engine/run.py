"""The run: what every trainer does around its method, so that the script shows only the method.

    with TrainingRun(args, streams=("labeled", "unlabeled", "real"), split_file=...) as run:
        ...build models and optimizers...
        run.track(models={"model": model, "D": model_d}, optimizers={"S": optimizer, "D": optimizer_d},
                  base_lrs={"S": args.learning_rate, "D": args.learning_rate_D})
        for i, batches in run.iterations():
            values = step(i, **batches)
            run.log(i, values)

Before each iteration `iterations()` sets the poly learning rates and draws one batch per stream;
after it, it writes the snapshots VOC_<i>.pth (every --save-pred-every and at the end, as the
original), the full training state latest.pth (at the same moments and on SIGINT/SIGTERM), and
refuses to save weights that are not finite. `--resume` restores everything in `track()`.

Epoch-based trainers (train_mlmt.py) pass their own data (`data=`) and loop over epochs instead:

    for epoch in run.epochs(num_epochs, epoch_length, restart=("unlabeled",)):
        for i, batches in run.epoch_iterations(epoch):
            values = step(i, epoch, **batches)
            run.log(i, values)
        ...end-of-epoch work (scheduler, validation)...
        run.log_epoch(epoch, summary)

latest.pth is then written at the end of every epoch (after the end-of-epoch work) and on
SIGINT/SIGTERM; there are no VOC_<i>.pth snapshots.
"""
import json
import os
import signal

import torch
import torch.distributed as dist

from data import get_dataset
from engine import setup
from engine.evaluator import prediction_montage, validation_dataset
from engine.state import TrainingState, promote_complete_temporary, read_training_state
from methods.common import host_values
from model import SEGMENTERS
from utils.amp import Precision
from utils.checkpoint import atomic_torch_save, remove_stale_temporaries
from utils.distributed import all_gather_objects, bare, broadcast_object, cleanup
from utils.errors import UserError
from utils.progress import TrainingLog
from utils.runlock import RunLock
from utils.schedules import apply_poly_lr


class TrainingRun:
    def __init__(self, args, streams, split_file, data=None, log_dir=None, batch_sizes=None, drop_last=False):
        """`data`: None for the segmentation trainers; else a function (args, env, saved split or None)
        -> (training dataset with `.ids`, split permutation, {stream name: BatchStream}) that builds
        a trainer's own datasets and streams (`streams` and `split_file` are then not used).
        `log_dir`: where metrics.jsonl goes (default --checkpoint-dir); `batch_sizes`: per-stream
        batch sizes other than --batch-size; `drop_last`: every stream drops incomplete batches."""
        self.args = args
        self.log_dir = log_dir or args.checkpoint_dir
        self.env = setup.start_run(args)
        self._lock = RunLock(args.checkpoint_dir, say=self.say)
        try:
            self._start(args, streams, split_file, data, batch_sizes, drop_last)
        except BaseException:
            self._lock.release()
            raise

    def _start(self, args, streams, split_file, data, batch_sizes, drop_last):
        refused = None
        if self.env.is_main:
            try:
                self._settle_folder(args)
            except UserError as exc:
                refused = exc
        # the others read once the main process has settled the folder, or stop with it
        message = broadcast_object(self.env, None if refused is None else str(refused))
        if refused is not None or message is not None:
            raise refused or UserError(message)
        if not self.env.is_main:
            self.resume = read_training_state(args, self.env.world_size, say=self.say, main=False)
        check_same_start(self.env, self.resume)
        saved_split = self.resume["split"] if self.resume else None
        if data is not None:
            self.dataset, self.split, self.streams = data(args, self.env, saved_split)
        else:
            # a model that cannot train on a batch of one image never gets an incomplete batch
            drop_last = drop_last or (hasattr(args, "model") and SEGMENTERS[args.model].min_batch > 1)
            self.dataset, num_listed = setup.make_train_dataset(args)
            self.split = setup.make_split(args, num_listed, saved_split)
            self.streams = setup.make_streams(args, self.env, self.dataset, self.split, streams, num_listed,
                                              batch_sizes, drop_last)
        self._split_file = split_file
        self.precision = Precision(args.amp, self.env.device)
        self.models, self.optimizers, self.base_lrs = {}, {}, {}
        self.state, self.start, self.lr = None, 0, None
        self._log = self._iterations = None
        self._stop, self._epoch_length = None, None
        if self.resume:
            self.say(f"resuming from {self.resume['path']} at iteration {self.resume['iteration']}")

    def __enter__(self):
        return self

    def _settle_folder(self, args):
        """The main process: take the folder's lock, keep a complete state an interrupted save left,
        clear what killed writes left half-way, and read the state to resume."""
        self._lock.acquire()
        if args.resume == "auto":
            promote_complete_temporary(args.checkpoint_dir, say=self.say)
        for folder in {args.checkpoint_dir, self.log_dir}:
            removed = remove_stale_temporaries(folder)
            if removed:
                self.say(f"removed {len(removed)} temporary file(s) a killed write left in {folder}: "
                         f"{', '.join(removed[:3])}")
        self.resume = read_training_state(args, self.env.world_size, say=self.say)

    def __exit__(self, *exc):
        if self._iterations is not None:
            self._iterations.close()  # restores the signal handlers
        if self._log is not None:
            self._log.close()
        for stream in getattr(self, "streams", {}).values():
            stream.close()  # its workers ignore stop signals: they end when told to
        self._lock.release()
        cleanup(self.env)
        return False

    def say(self, text):
        if self.env.is_main:
            print(text, flush=True)

    # ------------------------------------------------------------ models
    def segmenter(self):
        """The segmenter of --model/--backbone on the device, in train mode (BN uses batch statistics,
        as the original); --restore-from is loaded unless the run resumes."""
        model = setup.segmenter(self.args, restore=self.resume is None, say=self.say)
        return model.to(self.env.device).train()

    def discriminator(self):
        return setup.discriminator(self.args, restore=self.resume is None, say=self.say).to(self.env.device).train()

    def distribute(self, module, sync_bn=False):
        """channels-last if asked, and DistributedDataParallel under torchrun."""
        return setup.prepare_module(module, self.args, self.env, sync_bn)[0]

    def track(self, models, optimizers, base_lrs=None, extras=None):
        """What is saved and scheduled: models ('model' -> VOC_<i>.pth, 'D' -> VOC_<i>_D.pth), the
        optimizers (each group's lr = poly(base lr) x the group's `lr_mult`; epoch-based runs leave
        their learning rates to their own scheduler), `extras` (objects with state_dict(), saved in
        latest.pth: a scheduler, running meters; one with a snapshot_warning() method is also asked
        at every snapshot, and a message it returns is printed). Restores --resume."""
        self.models, self.optimizers, self.base_lrs = models, optimizers, base_lrs or {}
        self.state = TrainingState(self.args, self.env, models, optimizers, self.precision, self.streams,
                                   self.split, self.dataset.ids, extras)
        if self.resume:
            self.start = self.state.restore(self.resume)
        if self.env.is_main:  # written once every input (data, split, weights) has been read: a refused run
            args = self.args  # overwrites nothing of an earlier one
            setup.write_args(args)
            if os.path.abspath(self.log_dir) != os.path.abspath(args.checkpoint_dir):
                os.makedirs(self.log_dir, exist_ok=True)
                setup.write_args(args, self.log_dir)  # beside metrics.jsonl too, for the plot
            if self._split_file and self.split is not None:
                setup.save_split(args, self.split, self._split_file)

    # ------------------------------------------------------------ the loop
    def iterations(self):
        """Yield (i, {stream name: batch}) for i = start .. --num-steps - 1."""
        if self.state is None:
            raise RuntimeError("call run.track(...) before run.iterations()")
        args = self.args
        if self.env.is_main:
            os.makedirs(self.log_dir, exist_ok=True)
        self._log = TrainingLog(os.path.join(self.log_dir, "metrics.jsonl"), self.start, args.num_steps,
                                args.log_every, enabled=self.env.is_main, tensorboard=getattr(args, "tensorboard", False))
        self._prepare_montage()
        self._iterations = self._loop(args.num_steps, args.save_pred_every)
        return self._iterations

    def log(self, i, values, force=False):
        """Print and record iteration i's values every --log-every iterations (always with `force`).
        Values a step kept on the device are read only then (one transfer; a NaN/Inf stops the run
        there, on every rank); in between nothing waits for the device."""
        if not self._log.due(i, force):
            self._log.tick()
            return
        self._log.update(i, {**host_values(i, values), "lr": self.lr}, force)

    # ------------------------------------------------------------ the epoch-based loop
    def epochs(self, num_epochs, epoch_length, restart=()):
        """Yield the epochs left (from the resumed one). Each epoch is `epoch_length` iterations,
        numbered on from the previous epoch's. The streams named in `restart` start a fresh
        shuffle at the start of every epoch. After the body of an epoch (its iterations and the
        end-of-epoch work), latest.pth is written, and a pending SIGINT/SIGTERM stops the run."""
        if self.state is None:
            raise RuntimeError("call run.track(...) before run.epochs()")
        total = num_epochs * epoch_length
        self._epoch_length = epoch_length
        if self.env.is_main:
            os.makedirs(self.log_dir, exist_ok=True)
        self._log = TrainingLog(os.path.join(self.log_dir, "metrics.jsonl"), self.start, total,
                                self.args.log_every, enabled=self.env.is_main,
                                tensorboard=getattr(self.args, "tensorboard", False))
        self._iterations = self._epoch_loop(num_epochs, epoch_length, restart)
        return self._iterations

    def _epoch_loop(self, num_epochs, epoch_length, restart):
        with StopRequested(self.env) as stop:
            self._stop = stop
            for epoch in range(self.start // epoch_length, num_epochs):
                if self.start <= epoch * epoch_length:  # not an epoch that a resumed run is inside
                    for name in restart:
                        self.streams[name].start_new_epoch()
                yield epoch
                end = (epoch + 1) * epoch_length
                check_finite_weights(self.models, end - 1)
                self.state.save(end)
                if stop.requested() and epoch != num_epochs - 1:
                    raise Interrupted(f"stopped by signal {stop.signum} after epoch {epoch + 1}; the training "
                                      f"state is saved: run the same command with --resume auto to continue",
                                      stop.signum)

    def epoch_iterations(self, epoch):
        """Yield (i, {stream name: batch}) for the iterations of `epoch` left. A signal stops the run
        after the current iteration, unless it is the epoch's last (the epoch's end comes first)."""
        first, end = epoch * self._epoch_length, (epoch + 1) * self._epoch_length
        for i in range(max(first, self.start), end):
            self.lr = next(iter(self.optimizers.values())).param_groups[0]["lr"]
            batches = self._next_batches(i, self._stop)
            yield i, batches
            if i != end - 1 and self._stop.requested():
                check_finite_weights(self.models, i)
                self.state.save(i + 1)
                raise Interrupted(f"stopped by signal {self._stop.signum} after iteration {i}; the training state "
                                  f"is saved: run the same command with --resume auto to continue", self._stop.signum)

    def log_epoch(self, epoch, values, text=None):
        """Print an epoch's summary (`text`, else the values) and add it to metrics.jsonl as a record
        of the epoch's last iteration (so a resumed run drops and rewrites it like the others)."""
        if not self.env.is_main:
            return
        if text is None:
            text = f"epoch {epoch + 1}: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in values.items())
        self._log.message(text)
        record = {"iter": (epoch + 1) * self._epoch_length - 1, "epoch": epoch + 1, **values}
        with open(os.path.join(self.log_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    def _set_lrs(self, i):
        lrs = [apply_poly_lr(opt, self.base_lrs[name], i, self.args.num_steps, self.args.power)
               for name, opt in self.optimizers.items()]
        self.lr = lrs[0]

    def _loop(self, num_steps, save_every):
        with StopRequested(self.env) as stop:
            for i in range(self.start, num_steps):
                self._set_lrs(i)
                batches = self._next_batches(i, stop)
                yield i, batches
                last = i == num_steps - 1
                periodic = last or (i % save_every == 0 and i != 0)
                stopping = stop.requested() and not last
                if periodic or stopping:
                    check_finite_weights(self.models, i)
                if periodic:
                    self._snapshot_warnings()
                if periodic and self.env.is_main:
                    self._save_snapshots(num_steps if last else i)
                    if self._montage_data is not None:
                        self._log.image("predictions", self._montage(), i)
                if periodic or stopping:
                    self.state.save(i + 1)
                if stopping:
                    raise Interrupted(f"stopped by signal {stop.signum} after iteration {i}; the training state "
                                      f"is saved: run the same command with --resume auto to continue", stop.signum)
        self.say(f"done: {snapshot_path(self.args.checkpoint_dir, num_steps)}")

    def _next_batches(self, i, stop):
        positions = {name: s.state_dict() for name, s in self.streams.items()}
        try:
            return {name: next(s) for name, s in self.streams.items()}
        except Exception:
            if stop.signum is None or self.env.distributed:  # no save the other processes did not agree on
                raise
            # a loader's worker ended by a signal of its own (SIGKILL, say) after the stop was asked
            # for: the state after the last completed iteration is still whole, so save it
            for name, s in self.streams.items():
                s.load_state_dict(positions[name])
            check_finite_weights(self.models, i - 1)
            self.state.save(i)
            raise Interrupted(f"stopped by signal {stop.signum} before iteration {i}; the training state "
                              f"is saved: run the same command with --resume auto to continue", stop.signum)

    def _montage(self):
        """Image | ground truth | prediction of the first validation images, for TensorBoard."""
        return prediction_montage(self.models["model"], self._montage_data, get_dataset(self.args.dataset).palette,
                                  self.env.device)

    def _prepare_montage(self):
        """--tensorboard: the validation images of the montage, found now rather than at the first snapshot."""
        self._montage_data = None
        if getattr(self.args, "tensorboard", False) and self.env.is_main:
            try:
                self._montage_data = validation_dataset(self.args)
            except UserError as exc:
                self.say(f"warning: no prediction montage in TensorBoard: {exc}")

    def _snapshot_warnings(self):
        for extra in (self.state.extras or {}).values():
            message = extra.snapshot_warning() if hasattr(extra, "snapshot_warning") else None
            if message:
                self._log.message(message)

    def _save_snapshots(self, i):
        for name, module in self.models.items():
            suffix = "" if name == "model" else f"_{name}"
            atomic_torch_save(bare(module).state_dict(),
                              snapshot_path(self.args.checkpoint_dir, i, suffix))


class BestCheckpoint:
    """best.pth: the weights of the best validation score so far, written atomically by the main
    process. Pass it to `run.track(extras=...)` so that the best score survives --resume."""

    def __init__(self, path, env):
        self.path, self.env, self.score = path, env, None

    def update(self, score, module):
        """Save `module` if `score` beats every earlier one; return whether it did."""
        if self.score is not None and score <= self.score:
            return False
        self.score = score
        if self.env.is_main:
            atomic_torch_save(bare(module).state_dict(), self.path)
        return True

    def state_dict(self):
        return {"score": self.score}

    def load_state_dict(self, state):
        self.score = state["score"]


def check_same_start(env, resume):
    """Under torchrun each process reads the state itself: all must start from the same iteration
    (a --checkpoint-dir that is not one shared folder would give each its own)."""
    if not env.distributed:
        return
    starts = all_gather_objects(env, int(resume["iteration"]) if resume else None)
    if len(set(starts)) > 1:
        by_rank = ", ".join("fresh" if s is None else f"iteration {s}" for s in starts)
        raise UserError(f"the processes would start from different states (by rank: {by_rank}): "
                        f"--checkpoint-dir must be one folder that every process sees")


def snapshot_path(checkpoint_dir, iteration, suffix=""):
    return os.path.join(checkpoint_dir, f"VOC_{iteration}{suffix}.pth")


def check_finite_weights(modules, iteration):
    """Refuse to save weights that a step has made NaN/Inf (the previous checkpoints stay good)."""
    for name, module in modules.items():
        for key, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise UserError(f"{name} tensor {key} is not finite after iteration {iteration}: stopping "
                                f"without saving; checkpoints already written are kept (try a lower learning rate)")


class StopRequested:
    """Turns SIGINT/SIGTERM into a flag checked between iterations (the state is then saved).

    Under torchrun every process must stop after the same iteration, or the next collective
    would hang: `requested()` agrees across processes (one tiny all-reduce per iteration)."""

    def __init__(self, env):
        self.env, self.signum = env, None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def requested(self):
        if not self.env.distributed:
            return self.signum is not None
        flag = torch.tensor([self.signum or 0], device=self.env.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        agreed = int(flag.item())
        if agreed:  # never cleared: a signal that arrived during the all-reduce counts at the next one
            self.signum = agreed
        return agreed != 0

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class Interrupted(UserError):
    """Not an error: the run stopped on request after saving its state."""

    prefix = ""

    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + signum
