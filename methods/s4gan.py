"""The s4GAN objective (Mittal et al., TPAMI 2021, Sec. 3.1), term by term, and one training step.

The segmenter S is trained with

    L_S = L_ce + lambda_fm * L_fm + lambda_st * L_st

- L_ce: pixel cross-entropy on the labeled images;
- L_fm: feature matching, the distance between D's mean features of real (ground truth) and fake
  (predicted) class maps, each shown to D together with its image;
- L_st: self-training, cross-entropy of each unlabeled image towards its own argmax map, for the
  images whose D score exceeds the threshold gamma (`--threshold-st`);

and the discriminator D with the GAN loss L_D: predictions are fake (0), ground truths real (1).
The order of the computations in `S4GANStep` is the original code's (docs/original.md, "One s4GAN
iteration"); `tests/test_s4gan_reference.py` restates that loop line by line and compares.
"""
from collections import deque

import torch
import torch.nn.functional as F

from methods.values import defer_reads, step_values
from utils.distributed import bare
from utils.tensors import images_to_device, labels_to_device, set_requires_grad, upsample
from utils.losses import masked_cross_entropy, one_hot


def add_s4gan_arguments(parser):
    """The method's flags (both s4GAN trainers): the loss weights, the threshold gamma, D's optimizer."""
    s4gan = parser.add_argument_group("s4GAN")
    s4gan.add_argument("--lambda-fm", type=float, default=0.1, help="weight of the feature-matching loss L_fm")
    s4gan.add_argument("--lambda-st", type=float, default=1.0, help="weight of the self-training loss L_st")
    s4gan.add_argument("--threshold-st", type=float, default=0.6,
                       help="D score above which an unlabeled image is self-trained (0.6 VOC/Context, 0.7 Cityscapes)")
    s4gan.add_argument("--learning-rate-D", type=float, default=1e-4, help="Adam learning rate of the discriminator")
    s4gan.add_argument("--adam-mode", default=None, choices=("legacy", "standard"),
                       help="[new] the discriminator's Adam: legacy = PyTorch 0.4's (eps added before the bias "
                            "correction; train_s4GAN.py's original), standard = today's (the WRN-38 trainer's "
                            "original) (default: from --fidelity and the script)")
    s4gan.add_argument("--restore-from-D", default=None, help="initial discriminator weights")
    s4gan.add_argument("--d-real-norm", default=None, choices=("labeled", "own"),
                       help="[new] scale the image of D's real input by the labeled CE batch's range (labeled, "
                            "original) or by its own (default: from --fidelity)")
    return s4gan


# ---------------------------------------------------------------- what D sees

def minmax_scale(images, range_of=None):
    """(x - min(x)) / (max(r) - min(r)) over the whole batch tensor, r = `range_of` or x itself.

    The original scales the real branch's images by the range of the labeled batch (r != x)."""
    ref = images if range_of is None else range_of
    return (images - images.min()) / (ref.max() - ref.min())


def discriminator_input(class_maps, images, range_of=None):
    """D's input: class maps (softmax of the prediction, or one-hot ground truth) (+) the scaled image."""
    return torch.cat([class_maps, minmax_scale(images, range_of).to(class_maps.dtype)], dim=1)


# ---------------------------------------------------------------- the loss terms

def feature_matching_loss(features_real, features_fake):
    """L_fm: L1 distance (mean over channels) between the batch means of D's pooled features."""
    return (features_real.float().mean(0) - features_fake.float().mean(0)).abs().mean()


def self_training_loss(logits, d_prob, threshold):
    """L_st on the images whose D score is strictly above `threshold` (gamma).

    Each selected image is trained towards the argmax of its own logits (whole map, no pixel mask);
    the loss is the mean CE over the selected images' pixels, and 0 when none is selected.
    Returns (loss, number of selected images as a 0-d tensor), without a host synchronisation.
    """
    selected = d_prob.reshape(-1) > threshold
    logits = logits.float()
    pseudo = logits.detach().argmax(1)
    per_pixel = F.cross_entropy(logits, pseudo, reduction="none")  # (B, H, W)
    weight = selected.to(per_pixel.dtype)[:, None, None]
    count = selected.sum()
    loss = (per_pixel * weight).sum() / (count * per_pixel[0].numel()).clamp(min=1)
    return loss, count


def bce_on_probabilities(prob, target_value):
    """nn.BCELoss on D's sigmoid output against a constant target, always in float32.

    A NaN probability gives a NaN loss (for the caller's check) instead of BCE's range error."""
    prob = prob.float()
    finite = torch.isfinite(prob)
    safe = torch.where(finite, prob, torch.full_like(prob, 0.5))
    with torch.autocast(device_type=prob.device.type, enabled=False):
        loss = F.binary_cross_entropy(safe, torch.full_like(prob, float(target_value)))
    return torch.where(finite.all(), loss, torch.full_like(loss, float("nan")))


def discriminator_loss(d_fake, d_real):
    """L_D = (BCE(D(fake), 0) + BCE(D(real), 1)) / 2."""
    return 0.5 * (bce_on_probabilities(d_fake, 0.0) + bce_on_probabilities(d_real, 1.0))


# ---------------------------------------------------------------- one iteration

class S4GANStep:
    """One s4GAN iteration: the S update and the D update, both optimizers stepped.

    `model` and `model_d` may be DistributedDataParallel-wrapped. While D is frozen (the S phase)
    the bare D is called, so that DDP does not wait for gradients D does not get then."""

    # stream -> the pool it draws from: D's "real" maps are ground truth of labeled images, in their own order
    streams = {"labeled": "labeled", "unlabeled": "unlabeled", "real": "labeled"}

    def __init__(self, model, model_d, optimizer, optimizer_d, precision, *, num_classes, ignore_label,
                 input_size, lambda_fm, lambda_st, threshold_st, device, d_real_norm="labeled",
                 channels_last=False, deferred=None):
        if d_real_norm not in ("labeled", "own"):
            raise ValueError(f"d_real_norm must be 'labeled' or 'own', got {d_real_norm!r}")
        self.model, self.model_d = model, model_d
        self.model_d_without_ddp = bare(model_d)
        self.optimizer, self.optimizer_d, self.precision = optimizer, optimizer_d, precision
        self.num_classes, self.ignore_label, self.input_size = num_classes, ignore_label, input_size
        self.lambda_fm, self.lambda_st, self.threshold_st = lambda_fm, lambda_st, threshold_st
        self.device, self.d_real_norm, self.channels_last = device, d_real_norm, channels_last
        self.monitor = SelfTrainingMonitor(threshold_st)
        # values read by the run at logged iterations only (methods/values.py); the default: on GPUs
        self.deferred = defer_reads(device) if deferred is None else deferred

    def __call__(self, iteration, labeled, unlabeled, real):
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_d.zero_grad(set_to_none=True)
        set_requires_grad(self.model_d_without_ddp, False)

        # L_ce: cross-entropy on the labeled batch
        x_l, y_l = self._images(labeled), labels_to_device(labeled[1], self.device)
        loss_ce = masked_cross_entropy(self._segment(x_l), y_l, self.ignore_label)

        # the unlabeled batch through S, then through the frozen D as "fake"
        x_u = self._images(unlabeled)
        pred_u = self._segment(x_u)
        fake = self._d_layout(discriminator_input(torch.softmax(pred_u, dim=1), x_u.float()))
        d_fake, features_fake = self._discriminate(self.model_d_without_ddp, fake)

        # L_st: self-training on the images D finds realistic; never at iteration 0, as the original
        loss_st, above_st = self_training_loss(pred_u, d_fake, self.threshold_st)
        if iteration == 0:
            loss_st = loss_st * 0.0

        # "real": one-hot ground truth (+) image of an independent labeled batch; the original scales
        # this image by the range of the labeled CE batch x_l (--d-real-norm labeled)
        x_g, y_g = self._images(real).float(), labels_to_device(real[1], self.device)
        range_of = x_l.float() if self.d_real_norm == "labeled" else None
        real_input = self._d_layout(discriminator_input(one_hot(y_g, self.num_classes), x_g, range_of))
        d_real, features_real = self._discriminate(self.model_d_without_ddp, real_input)

        # L_fm and the segmenter's loss
        loss_fm = feature_matching_loss(features_real, features_fake)
        loss_s = loss_ce + self.lambda_fm * loss_fm + self.lambda_st * loss_st

        # L_D on the detached prediction and the ground truth (new dropout masks)
        set_requires_grad(self.model_d_without_ddp, True)
        d_fake_detached, _ = self._discriminate(self.model_d, fake.detach())
        d_real_again, _ = self._discriminate(self.model_d, real_input)
        loss_d = discriminator_loss(d_fake_detached, d_real_again)

        # score_real / score_fake: D's mean scores in the S phase (the fake ones are what the
        # threshold compares); st_term: the weighted L_st (loss_fm is already weighted)
        score_real, score_fake = d_real.float().mean(), d_fake.float().mean()
        share = self.monitor.update(iteration, above_st * (iteration > 0), len(d_fake), score_real, score_fake)
        values = step_values(iteration, {
            "loss_ce": loss_ce, "loss_fm": self.lambda_fm * loss_fm, "loss_st": loss_st,
            "loss_S": loss_s, "loss_D": loss_d, "above_st": above_st, "st_term": self.lambda_st * loss_st,
            "score_real": score_real, "score_fake": score_fake, "st_share": share}, self.deferred)
        self.precision.backward(loss_s)
        self.precision.backward(loss_d)
        self.precision.step(self.optimizer, self.optimizer_d)
        return values

    def _images(self, batch):
        return images_to_device(batch[0], self.device, self.channels_last)

    def _segment(self, images):
        """Logits at the crop size, upsampled in float32 (the losses and D's softmax need it)."""
        with self.precision.autocast():
            logits = self.model(images)
        return upsample(logits.float(), self.input_size)

    def _discriminate(self, d, x):
        with self.precision.autocast():
            return d(x)

    def _d_layout(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


# ---------------------------------------------------------------- is self-training acting?

class SelfTrainingMonitor:
    """How often self-training acts, and what D scores, for the log and a warning at each snapshot.

    `update` takes one iteration's number of self-trained images (0 at iteration 0, where L_st is
    off), the unlabeled batch size and D's mean scores, and returns the share of unlabeled images
    self-trained over the last `window` iterations (logged as st_share). `snapshot_warning` looks
    at the iterations since its previous call: a one-line warning when fewer than `warn_below` of
    the unlabeled images were self-trained, else None. Saved in latest.pth, so a resumed run
    continues both counts."""

    def __init__(self, threshold, window=100, warn_below=0.01):
        self.threshold, self.window, self.warn_below = threshold, window, warn_below
        self.recent = deque(maxlen=window)  # (self-trained, batch) per iteration
        self._reset_since()

    def _reset_since(self):
        self.since = {"first": None, "last": None, "trained": 0, "seen": 0, "iterations": 0,
                      "score_real": 0.0, "score_fake": 0.0}

    def update(self, iteration, trained, batch, score_real, score_fake):
        """The counts and scores may be device tensors: they are summed where they are (in float64),
        so that the step need not wait for them; the share returned is a tensor then."""
        self.recent.append((trained, batch))
        s = self.since
        s["first"] = iteration if s["first"] is None else s["first"]
        s["last"] = iteration
        s["trained"] = s["trained"] + trained
        s["seen"] += batch
        s["iterations"] += 1
        s["score_real"] = s["score_real"] + _as_double(score_real)
        s["score_fake"] = s["score_fake"] + _as_double(score_fake)
        return _as_double(sum(t for t, _ in self.recent)) / max(1, sum(b for _, b in self.recent))

    def snapshot_warning(self):
        s = {k: _number(v) for k, v in self.since.items()}
        self._reset_since()
        if s["seen"] == 0 or s["trained"] >= self.warn_below * s["seen"]:
            return None
        real, fake = s["score_real"] / s["iterations"], s["score_fake"] / s["iterations"]
        winning = real - fake > 0.2  # D separates ground truth from predictions, and rejects the latter
        return (f"warning: self-training acted on {s['trained']} of {s['seen']} unlabeled images "
                f"({100 * s['trained'] / s['seen']:.1f}%) in iterations {s['first']}-{s['last']}; D's mean score: "
                f"ground truth {real:.2f}, predictions {fake:.2f}, --threshold-st {self.threshold:g}. Usual causes: "
                f"D near chance (both scores near 0.5, under the threshold: lower --threshold-st, or raise "
                f"--learning-rate-D) or D winning (predictions scored near 0: lower --learning-rate-D, or "
                f"--threshold-st); these scores look like D {'winning' if winning else 'near chance'}. "
                f"See docs/your-data.md, 's4GAN on your own data'")

    def state_dict(self):
        return {"recent": [[_number(t), b] for t, b in self.recent], "since": {k: _number(v) for k, v in self.since.items()}}

    def load_state_dict(self, state):
        self.recent = deque((tuple(r) for r in state["recent"]), maxlen=self.window)
        self.since = dict(state["since"])


def _as_double(x):
    return x.double() if isinstance(x, torch.Tensor) else float(x)


def _number(x):
    """A Python number for a count or sum that may be a 0-d tensor."""
    if not isinstance(x, torch.Tensor):
        return x
    return x.item()
