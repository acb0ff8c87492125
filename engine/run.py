"""The run: what a trainer calls around its method; the loop itself is written in the script.

    with TrainingRun(args, run_config(args), S4GANStep.streams, segmentation=segmentation_config(args),
                     split_file="train_voc_split.pkl") as run:
        ...build models and optimizers...
        run.track(models={"model": model, "D": model_d}, optimizers={"S": optimizer, "D": optimizer_d},
                  base_lrs={"S": args.learning_rate, "D": args.learning_rate_D})
        run.begin(args.num_steps)
        for i in range(run.start, args.num_steps):
            run.set_poly_learning_rates(i)
            values = step(i, **run.next_batches(i))
            run.log(i, values)
            if original_snapshot_due(i, args.save_pred_every, args.num_steps):
                run.save_snapshot(i)        # VOC_<i>.pth and latest.pth
            run.stop_if_requested(i)        # SIGINT/SIGTERM: latest.pth, then exit
        run.finish()

`track()` restores everything of --resume (then `run.start` is the next iteration); `begin()` opens
the log and turns stop signals into a request that `stop_if_requested` answers between iterations.
Weights that are not finite are never saved. An epoch-based trainer (train_mlmt.py) writes its
epochs in the same way, calling `save_state` at each epoch's end and `log_epoch` for its summary.
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
from methods.values import host_values
from utils.amp import Precision
from data.splits import save_permutation
from utils.checkpoint import atomic_torch_save, remove_stale_temporaries
from utils.distributed import all_gather_objects, bare, broadcast_object, cleanup
from utils.errors import UserError
from utils.progress import TrainingLog
from utils.runlock import RunLock
from utils.schedules import apply_poly_lr


class TrainingRun:
    def __init__(self, flags, config, streams, *, segmentation=None, split_file=None, data=None):
        """`flags`: the parsed flags, which the run records (args.json, latest.pth) and compares when it
        resumes; `config`: the RunConfig (engine/config.py); `streams`: the method's {stream: pool}.
        The segmentation trainers give `segmentation` (SegmentationConfig: data, model, split) and the
        name their split file has in the checkpoint folder (`split_file`); a trainer with data of its
        own gives `data`: (env, saved split or None) -> (training dataset with `.ids`, split
        permutation, {stream name: BatchStream})."""
        self.flags, self.config, self.segmentation = flags, config, segmentation
        self.env = setup.start_run(config.device, config.gpu, config.random_seed, config.checkpoint_dir)
        self._lock = RunLock(config.checkpoint_dir, say=self.say)
        try:
            self._start(streams, split_file, data)
        except BaseException:
            self._lock.release()
            raise

    def _start(self, streams, split_file, data):
        refused = None
        if self.env.is_main:
            try:
                self._settle_folder()
            except UserError as exc:
                refused = exc
        # the others read once the main process has settled the folder, or stop with it
        message = broadcast_object(self.env, None if refused is None else str(refused))
        if refused is not None or message is not None:
            raise refused or UserError(message)
        if not self.env.is_main:
            self.resume = read_training_state(self.flags, self.env.world_size, say=self.say, main=False)
        check_same_start(self.env, self.resume)
        saved_split = self.resume["split"] if self.resume else None
        if data is not None:
            self.dataset, self.split, self.streams = data(self.env, saved_split)
        else:
            seg = self.segmentation
            self.dataset, num_listed = setup.make_train_dataset(seg.data)
            listed = setup.listed_images(seg.split, seg.data, self.dataset, num_listed)
            self.split = setup.make_split(seg.split, self.config.random_seed, num_listed, saved_split, listed.labeled)
            self.streams = setup.make_streams(seg.split, self.env, self.dataset, self.split, streams, num_listed,
                                              self.config.random_seed, self.config.num_workers, listed)
        self._split_file = split_file
        self.precision = Precision(self.config.amp, self.env.device)
        self.models, self.optimizers, self.base_lrs = {}, {}, {}
        self.state, self.start = None, 0
        self._log = self._stop = self._saved_at = None
        if self.resume:
            self.say(f"resuming from {self.resume['path']} at iteration {self.resume['iteration']}")

    def __enter__(self):
        return self

    def _settle_folder(self):
        """The main process: take the folder's lock, keep a complete state an interrupted save left,
        clear what killed writes left half-way, and read the state to resume."""
        self._lock.acquire()
        if self.config.resume == "auto":
            promote_complete_temporary(self.config.checkpoint_dir, say=self.say)
        for folder in {self.config.checkpoint_dir, self.config.log_dir}:
            removed = remove_stale_temporaries(folder)
            if removed:
                self.say(f"removed {len(removed)} temporary file(s) a killed write left in {folder}: "
                         f"{', '.join(removed[:3])}")
        self.resume = read_training_state(self.flags, self.env.world_size, say=self.say)

    def __exit__(self, *exc):
        if self._stop is not None:
            self._stop.__exit__()  # the signal handlers as they were
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
        model = setup.segmenter(self.segmentation.model, restore=self.resume is None, say=self.say)
        return model.to(self.env.device).train()

    def discriminator(self, restore_from=None):
        """s4GAN's D for the segmenter's classes; `restore_from` (--restore-from-D) is loaded unless the
        run resumes (its latest.pth holds D)."""
        model = setup.discriminator(self.segmentation.model.num_classes, restore_from if self.resume is None else None,
                                    say=self.say)
        return model.to(self.env.device).train()

    def distribute(self, module, sync_bn=False):
        """channels-last if asked, and DistributedDataParallel under torchrun."""
        return setup.prepare_module(module, self.env, self.config.channels_last, sync_bn)[0]

    def track(self, models, optimizers, base_lrs=None, extras=None):
        """What is saved and scheduled: models ('model' -> VOC_<i>.pth, 'D' -> VOC_<i>_D.pth), the
        optimizers (each group's lr = poly(base lr) x the group's `lr_mult`; epoch-based runs leave
        their learning rates to their own scheduler), `extras` (objects with state_dict(), saved in
        latest.pth: a scheduler, running meters). Restores --resume."""
        self.models, self.optimizers, self.base_lrs = models, optimizers, base_lrs or {}
        self.state = TrainingState(self.flags, self.env, models, optimizers, self.precision, self.streams,
                                   self.split, self.dataset.ids, extras)
        if self.resume:
            self.start = self.state.restore(self.resume)
        if self.env.is_main:  # written once every input (data, split, weights) has been read: a refused run
            folder = self.config.checkpoint_dir  # overwrites nothing of an earlier one
            setup.write_args(self.flags, folder)
            if os.path.abspath(self.config.log_dir) != os.path.abspath(folder):
                os.makedirs(self.config.log_dir, exist_ok=True)
                setup.write_args(self.flags, self.config.log_dir)  # beside metrics.jsonl too, for the plot
            if self._split_file and self.split is not None:
                save_permutation(os.path.join(folder, self._split_file), self.split)

    # ------------------------------------------------------------ what the script's loop calls
    def begin(self, num_iterations):
        """The loop over iterations run.start .. num_iterations - 1 begins: metrics.jsonl opens, and from
        now on SIGINT/SIGTERM only ask the run to stop (at the next `stop_if_requested`)."""
        if self.state is None:
            raise RuntimeError("call run.track(...) before run.begin(...)")
        self.num_iterations = num_iterations
        if self.env.is_main:
            os.makedirs(self.config.log_dir, exist_ok=True)
        self._log = TrainingLog(os.path.join(self.config.log_dir, "metrics.jsonl"), self.start, num_iterations,
                                self.config.log_every, enabled=self.env.is_main, tensorboard=self.config.tensorboard)
        self._prepare_montage()
        self._stop = StopRequested(self.env).__enter__()

    def set_poly_learning_rates(self, i):
        """Every optimizer group's lr = poly(its optimizer's base lr, i) x the group's `lr_mult`, the
        original's schedule over the run's iterations."""
        for name, optimizer in self.optimizers.items():
            apply_poly_lr(optimizer, self.base_lrs[name], i, self.num_iterations, self.segmentation.optim.power)

    def next_batches(self, i):
        """{stream name: its next batch} for iteration i. A loader worker that a signal of its own ended
        after a stop was asked for leaves the state of iteration i - 1, which is then saved."""
        positions = {name: s.state_dict() for name, s in self.streams.items()}
        try:
            return {name: next(s) for name, s in self.streams.items()}
        except Exception:
            if self._stop.signum is None or self.env.distributed:  # no save the other processes did not agree on
                raise
            for name, s in self.streams.items():
                s.load_state_dict(positions[name])
            check_finite_weights(self.models, i - 1)
            self.state.save(i)
            raise Interrupted(f"stopped by signal {self._stop.signum} before iteration {i}; the training state "
                              f"is saved: run the same command with --resume auto to continue", self._stop.signum)

    def log(self, i, values, force=False):
        """Print and record iteration i's values every --log-every iterations (always with `force`).
        Values a step kept on the device are read only then (one transfer; a NaN/Inf stops the run
        there, on every rank); in between nothing waits for the device."""
        if not self._log.due(i, force):
            self._log.tick()
            return
        lr = next(iter(self.optimizers.values())).param_groups[0]["lr"]  # the first group's, as it was used
        self._log.update(i, {**host_values(i, values), "lr": lr}, force)

    def log_epoch(self, i, epoch, values, text=None):
        """Print an epoch's summary (`text`, else the values) and add it to metrics.jsonl as a record of
        the epoch's last iteration i (so a resumed run drops and rewrites it like the others)."""
        if not self.env.is_main:
            return
        if text is None:
            text = f"epoch {epoch + 1}: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in values.items())
        self._log.message(text)
        with open(os.path.join(self.config.log_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"iter": i, "epoch": epoch + 1, **values}) + "\n")

    def save_snapshot(self, i, note=None):
        """After iteration i: VOC_<i>.pth of every tracked model ('D' -> VOC_<i>_D.pth; after the last
        iteration VOC_<num_iterations>.pth, the original's names), the prediction montage with
        --tensorboard, and latest.pth; `note`, if any, is printed and logged with it. Weights that are
        not finite are refused (earlier files stay)."""
        check_finite_weights(self.models, i)
        if note:
            self._log.message(note)
        if self.env.is_main:
            self._save_snapshots(self.num_iterations if i == self.num_iterations - 1 else i)
            if self._montage_data is not None:
                self._log.image("predictions", self._montage(), i)
        self.state.save(i + 1)
        self._saved_at = i + 1

    def save_state(self, next_iteration):
        """latest.pth: everything needed to continue at `next_iteration` (written once per iteration;
        weights that are not finite are refused)."""
        if self._saved_at == next_iteration:
            return
        check_finite_weights(self.models, next_iteration - 1)
        self.state.save(next_iteration)
        self._saved_at = next_iteration

    def stop_if_requested(self, i, after=None):
        """If SIGINT/SIGTERM arrived (on any process, under torchrun: all agree), save latest.pth and stop
        after iteration i (`after`: what the message calls that point). After the run's last iteration
        there is nothing to stop."""
        if i == self.num_iterations - 1 or not self._stop.requested():
            return
        self.save_state(i + 1)
        raise Interrupted(f"stopped by signal {self._stop.signum} after {after or f'iteration {i}'}; the training "
                          f"state is saved: run the same command with --resume auto to continue", self._stop.signum)

    def finish(self):
        self.say(f"done: {snapshot_path(self.config.checkpoint_dir, self.num_iterations)}")

    def _montage(self):
        """Image | ground truth | prediction of the first validation images, for TensorBoard."""
        return prediction_montage(self.models["model"], self._montage_data,
                                  get_dataset(self.segmentation.data.dataset).palette, self.env.device)

    def _prepare_montage(self):
        """--tensorboard of a segmentation run: the validation images of the montage, found now rather
        than at the first snapshot."""
        self._montage_data = None
        if self.config.tensorboard and self.env.is_main and self.segmentation is not None:
            try:
                self._montage_data = validation_dataset(self.segmentation.data.listing(self.segmentation.val_list))
            except UserError as exc:
                self.say(f"warning: no prediction montage in TensorBoard: {exc}")

    def _save_snapshots(self, i):
        for name, module in self.models.items():
            suffix = "" if name == "model" else f"_{name}"
            atomic_torch_save(bare(module).state_dict(),
                              snapshot_path(self.config.checkpoint_dir, i, suffix))


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


def original_snapshot_due(i, save_every, num_steps):
    """The original's snapshots: after every save_every-th iteration (not the first) and the last."""
    return i == num_steps - 1 or (i % save_every == 0 and i != 0)


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
