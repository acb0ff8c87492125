"""What every trainer does around its step: set-up from flags, resume, the loop, the final save."""
import os

from engine import setup
from engine.loop import run_training, save_model_snapshot, snapshot_path
from engine.state import TrainingState, read_training_state
from utils.amp import Precision
from utils.distributed import cleanup
from utils.progress import TrainingLog
from utils.schedules import apply_poly_lr


class TrainingRun:
    """Set-up shared by the trainers, in order: environment, resume state, data, split, loaders."""

    def __init__(self, args, stream_names):
        self.args = args
        self.env = setup.start_run(args)
        self.resume = read_training_state(args, self.env.world_size)
        if self.env.is_main:
            setup.write_args(args)
        self.dataset, num_listed = setup.make_train_dataset(args)
        saved_split = self.resume["split"] if self.resume else None
        self.split = setup.make_split(args, self.env, num_listed, saved_split)
        self.streams = setup.make_streams(args, self.env, self.dataset, self.split, stream_names, num_listed)
        self.precision = Precision(args.amp, self.env.device)
        if self.resume:
            self.say(f"resuming from {self.resume['path']} at iteration {self.resume['iteration']}")

    def say(self, text):
        if self.env.is_main:
            print(text, flush=True)

    def train(self, step, modules, optimizers, lr_schedules):
        """Run the loop. modules: {'model': segmenter, 'D': ...}; lr_schedules: (optimizer, base lr,
        per-group multipliers); the first is the segmenter's, whose lr is logged."""
        args, env = self.args, self.env
        state = TrainingState(args, env, modules, optimizers, self.precision, self.streams, self.split,
                              self.dataset.ids)
        start = state.restore(self.resume) if self.resume else 0

        def set_lrs(i):
            lrs = [apply_poly_lr(opt, base, i, args.num_steps, args.power, mult) for opt, base, mult in lr_schedules]
            return lrs[0]

        def save_snapshot(i):
            for name, module in modules.items():
                suffix = "" if name == "model" else f"_{name}"
                save_model_snapshot(snapshot_path(args.checkpoint_dir, i, suffix), getattr(module, "module", module))

        log = TrainingLog(os.path.join(args.checkpoint_dir, "metrics.jsonl"), start, args.num_steps,
                          args.log_every, enabled=env.is_main)
        try:
            run_training(env=env, start=start, num_steps=args.num_steps, save_every=args.save_pred_every, step=step,
                         streams=list(self.streams.values()), set_lrs=set_lrs, log=log,
                         save_snapshot=save_snapshot, save_state=state.save, modules=modules)
        finally:
            log.close()
            cleanup(env)
        self.say(f"done: {snapshot_path(args.checkpoint_dir, args.num_steps)}")
