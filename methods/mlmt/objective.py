"""The MLMT branch (Mittal et al., TPAMI 2021, Sec. 3.2): a multi-label mean teacher, the image
classifier whose class-presence probabilities `evaluate.py --with-mlmt` uses to remove absent
classes from the segmentation. This is the behaviour of the authors' code; its two quirks have
switches (engine/fidelity.py).

One iteration (`MLMTStep`), in the original's order:

1. the student on the labeled batch; BCE between its sigmoid outputs and the multi-hot targets;
2. the teacher on the same labeled images (only for the accuracy printout; in train mode, so its BN
   statistics move, as in the original);
3. the student on the augmented view of an unlabeled batch, the teacher on the plain view (no
   gradient); consistency = mean over the batch of 1 - cos(student logits, teacher logits);
4. L = BCE + w(epoch) * consistency: w = 0 up to and including epoch --burn-in-epochs (counted from
   0), then min(--w-cons, 2 (epoch - burn-in) / --num-epochs);
5. an SGD step (Nesterov; the learning rate follows a cosine over the epochs, stepped per epoch);
6. the teacher's parameters (not its buffers) move to the EMA
   alpha * teacher + (1 - alpha) * student, alpha = min(1 - 1 / (step + 1), --ema-decay), where
   step counts the optimizer steps so far (1 after the first).

An epoch is one pass over the labeled images. Every --evaluation-epochs epochs both networks go
through the validation list (eval mode) and their sigmoid outputs are written as
output_{val,ema}_{raw,bin}_<epoch>.txt, background first (methods/mlmt/validation.py); the data
streams and the networks are built by methods/mlmt/data.py.
"""
import torch
import torch.nn.functional as F

from methods.mlmt.views import unlabeled_views
from methods.mlmt.labels import normalize_images
from methods.values import host_values
from utils.distributed import bare
from utils.tensors import images_to_device

BIN_THRESHOLD = 0.5  # the _bin_ files and the accuracy printout


def ema_alpha(global_step, decay):
    """The teacher's decay after optimizer step number `global_step` (1 for the first step)."""
    return min(1.0 - 1.0 / (global_step + 1), decay)


@torch.no_grad()
def update_ema(teacher, student, alpha):
    """teacher <- alpha * teacher + (1 - alpha) * student, parameters only (the teacher's BN
    statistics are its own, from its own forward passes)."""
    ema = list(teacher.parameters())
    torch._foreach_mul_(ema, alpha)
    torch._foreach_add_(ema, [p.detach() for p in student.parameters()], alpha=1.0 - alpha)


def consistency_weight(epoch, burn_in_epochs, num_epochs, w_cons):
    """0 up to and including epoch `burn_in_epochs` (epochs counted from 0), then a linear ramp
    of 2 / num_epochs per epoch, capped at w_cons (at 0.02 per epoch it reaches 1 at epoch 60)."""
    if epoch <= burn_in_epochs:
        return 0.0
    return min(w_cons, (epoch - burn_in_epochs) * 2 / num_epochs)


def cosine_consistency(student_logits, teacher_logits):
    """Mean over the batch of 1 - cos(student, teacher) on the raw logits; the teacher is a target."""
    target = torch.ones(student_logits.shape[0], device=student_logits.device)
    return F.cosine_embedding_loss(student_logits, teacher_logits.detach(), target)


def recall_accuracy(probs, targets, threshold=BIN_THRESHOLD):
    """The original's "Avg Acc": the mean of the recall of the positives and of the negatives, in %
    (outputs >= threshold count as positive). Returns (mean, negatives' recall, positives' recall);
    a recall without any example is NaN."""
    probs, targets = torch.as_tensor(probs), torch.as_tensor(targets)
    predicted, positive = probs >= threshold, targets > 0.5
    pos = (predicted & positive).sum() / positive.sum()
    neg = (~predicted & ~positive).sum() / (~positive).sum()
    pos, neg = 100.0 * float(pos), 100.0 * float(neg)
    return (pos + neg) / 2.0, neg, pos


class EpochMeters:
    """Running sums of one epoch's values (saved in latest.pth, so a resumed epoch reports the
    same means); accuracies without a defined value (NaN) are left out of their mean."""

    KEYS = ("loss", "loss_class", "loss_cons", "acc", "acc_mt")

    def __init__(self):
        self.reset()

    def reset(self):
        self.sums = {k: 0.0 for k in self.KEYS}
        self.counts = {k: 0 for k in self.KEYS}

    def add(self, values):
        for k in self.KEYS:
            if values[k] == values[k]:
                self.sums[k] += values[k]
                self.counts[k] += 1

    def means(self):
        return {k: self.sums[k] / self.counts[k] if self.counts[k] else float("nan") for k in self.KEYS}

    def state_dict(self):
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state):
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])


class MLMTStep:
    streams = {"labeled": "labeled", "unlabeled": "unlabeled"}  # stream -> the pool it draws from

    def __init__(self, student, teacher, optimizer, precision, *, num_epochs, burn_in_epochs, w_cons, ema_decay,
                 device, channels_last=False, augment_on_device=False):
        self.student, self.teacher, self.optimizer, self.precision = student, teacher, optimizer, precision
        self.student_params = bare(student)  # the EMA reads the bare student
        self.num_epochs, self.burn_in_epochs, self.w_cons, self.ema_decay = num_epochs, burn_in_epochs, w_cons, ema_decay
        self.device, self.channels_last, self.augment_on_device = device, channels_last, augment_on_device
        self.meters = EpochMeters()

    def _images(self, uint8_views):
        return normalize_images(images_to_device(uint8_views, self.device, self.channels_last))

    def _forward(self, model, images):
        with self.precision.autocast():
            return model(images).float()

    def __call__(self, iteration, epoch, labeled, unlabeled):
        images = self._images(labeled[0])
        targets = labeled[1].to(self.device, non_blocking=True).float()
        views = unlabeled[:2]
        if self.augment_on_device:  # unlabeled = (resized images, their draws, indices)
            views = unlabeled_views(unlabeled[0].to(self.device, non_blocking=True), unlabeled[1].to(self.device))
        plain, augmented = self._images(views[0]), self._images(views[1])
        self.optimizer.zero_grad(set_to_none=True)

        probs = torch.sigmoid(self._forward(self.student, images))
        with torch.no_grad():
            probs_mt = torch.sigmoid(self._forward(self.teacher, images))
        loss_class = F.binary_cross_entropy(probs, targets)

        student_logits = self._forward(self.student, augmented)
        with torch.no_grad():
            teacher_logits = self._forward(self.teacher, plain)
        loss_cons = cosine_consistency(student_logits, teacher_logits)

        w_cons = consistency_weight(epoch, self.burn_in_epochs, self.num_epochs, self.w_cons)
        loss = loss_class + w_cons * loss_cons
        values = host_values(iteration, {"loss": loss, "loss_class": loss_class, "loss_cons": loss_cons})
        self.precision.backward(loss)
        self.precision.step(self.optimizer)
        update_ema(self.teacher, self.student_params, ema_alpha(iteration + 1, self.ema_decay))

        values["w_cons"] = w_cons
        values["acc"] = recall_accuracy(probs.detach(), targets)[0]
        values["acc_mt"] = recall_accuracy(probs_mt, targets)[0]
        self.meters.add(values)
        return values

    def end_epoch(self, epoch):
        """The epoch's means (and its consistency weight and learning rate); resets the meters."""
        means = self.meters.means()
        self.meters.reset()
        summary = {f"epoch_{k}": round(v, 6) for k, v in means.items()}
        summary["w_cons"] = consistency_weight(epoch, self.burn_in_epochs, self.num_epochs, self.w_cons)
        summary["lr"] = self.optimizer.param_groups[0]["lr"]
        return summary
