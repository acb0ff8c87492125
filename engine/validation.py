"""Validation during training (train_s4GAN_wrn38.py): the validation mIoU every --val-every
iterations, under the original's protocol or on every image, and the best weights kept."""
import os

import torch
from torch.utils.data import DataLoader, Subset

from data import get_dataset
from engine.evaluator import eval_collate, evaluate, uint8_batches, validation_dataset
from utils.checkpoint import atomic_torch_save, atomic_write_bytes
from utils.distributed import bare
from utils.metrics import format_iou_table, mean_iou
from utils.seeding import init_worker


class PeriodicValidation:
    """A ValidationConfig at work: `due(i)` says whether to validate after iteration i; a call
    validates, keeps the best weights as best.pth (pass `.best` to run.track's extras, so that the
    best score survives --resume) with their per-class table in the config's result file, and
    returns the mIoU. Chosen on the validation images: not a number to report."""

    def __init__(self, config, run, num_steps):
        self.config, self.num_steps, self.env = config, num_steps, run.env
        self.best = BestCheckpoint(os.path.join(run.config.checkpoint_dir, "best.pth"), run.env)
        seg = run.segmentation
        self.validator = Validator(seg.data.listing(seg.val_list), run.env, run.precision, run.config.num_workers,
                                   run.config.channels_last, images=validation_images(config), mode=config.mode)

    def due(self, i):
        return validates_after(i, self.config, self.num_steps)

    def __call__(self, model):
        confusion = self.validator(model)
        miou = mean_iou(confusion)
        if self.best.update(miou, model) and self.env.is_main:
            self.validator.write_result(confusion, self.config.result_file)
        return miou


def validates_after(i, config, num_steps):
    """The original validated after iteration i when i % 200 == 0, iteration 0 included; `all`:
    after every --val-every-th iteration and after the last."""
    if config.protocol == "original":
        return i % config.every == 0
    return (i + 1) % config.every == 0 or i + 1 == num_steps


def validation_images(config):
    """Which validation images are scored (a function of their number), see --val-protocol. The
    original ran its first 50 validation batches and scored the first image of each; the model is in
    eval mode, so scoring those images alone gives the same predictions."""
    def choose(count):
        wanted = config.images or count
        return list(range(0, count, config.image_stride))[:wanted]
    return choose


class Validator:
    """Validation during training: the dataset's evaluation protocol on its validation list (`--val-list`,
    default the dataset's), on the images `images(count)` chooses (default: all). Every process
    validates the same images, so all get the same number; the model goes back to train mode
    afterwards. The loader draws from its own generator, never from the global one that dropout
    uses: validating does not change the training's random numbers."""

    def __init__(self, data, env, precision, num_workers, channels_last=False, images=None, mode=None):
        """`data`: the DataConfig of the validation list; `mode`: an EvalMode (None: the original's)."""
        self.mode = mode
        self.dataset = uint8_batches(validation_dataset(data))
        if images is not None:
            self.dataset = Subset(self.dataset, images(len(self.dataset)))
        # the training's worker set-up: a stop signal to the job leaves the decision to the main process
        self.loader = DataLoader(self.dataset, batch_size=1, num_workers=num_workers, collate_fn=eval_collate,
                                 pin_memory=env.device.type == "cuda", generator=torch.Generator(),
                                 worker_init_fn=init_worker)
        self.num_classes, self.device, self.precision = data.num_classes, env.device, precision
        self.channels_last = channels_last
        self.class_names = get_dataset(data.dataset).class_names(data.num_classes, data.data_dir)

    def __call__(self, model):
        confusion = evaluate(model, self.loader, self.num_classes, self.device, self.precision, self.channels_last,
                             mode=self.mode)
        model.train()
        return confusion

    def write_result(self, confusion, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write_bytes(path, ("\n".join(format_iou_table(confusion, self.class_names)) + "\n").encode())


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
