"""One s4GAN training iteration, in the original's order (spec section 4.2).

S is trained with CE on the labeled batch + lambda_fm * feature matching + lambda_st * self-training;
D is trained with BCE to tell (one-hot ground truth (+) image) from (softmax prediction (+) image).
"""
import torch

from engine.common import images_to_device, labels_to_device, losses_to_floats, set_requires_grad, upsample
from model.discriminator import discriminator_input
from utils.losses import (bce_on_probabilities, feature_matching_loss, masked_cross_entropy, one_hot,
                          self_training_loss)


class S4GANStep:
    """`segmenter` and `discriminator` may be DDP-wrapped; `discriminator_core` is the bare D, used
    while D is frozen (its gradients are not wanted then, so DDP must not see that pass)."""

    def __init__(self, segmenter, discriminator, discriminator_core, optimizer_s, optimizer_d, precision, *,
                 num_classes, ignore_label, input_size, lambda_fm, lambda_st, threshold_st, device,
                 d_real_norm="labeled", channels_last=False):
        self.segmenter, self.discriminator, self.d_core = segmenter, discriminator, discriminator_core
        self.optimizer_s, self.optimizer_d, self.precision = optimizer_s, optimizer_d, precision
        self.num_classes, self.ignore_label, self.input_size = num_classes, ignore_label, input_size
        self.lambda_fm, self.lambda_st, self.threshold_st = lambda_fm, lambda_st, threshold_st
        self.device, self.channels_last = device, channels_last
        if d_real_norm not in ("labeled", "own"):
            raise ValueError(f"d_real_norm must be 'labeled' or 'own', got {d_real_norm!r}")
        self.d_real_norm = d_real_norm

    def _images(self, batch):
        return images_to_device(batch[0], self.device, self.channels_last)

    def _segment(self, images):
        """Logits at the crop size, upsampled in float32 (the losses and D's softmax need it)."""
        with self.precision.autocast():
            logits = self.segmenter(images)
        return upsample(logits.float(), self.input_size)

    def _d_input(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __call__(self, iteration, labeled, unlabeled, real):
        autocast = self.precision.autocast
        self.optimizer_s.zero_grad(set_to_none=True)
        self.optimizer_d.zero_grad(set_to_none=True)
        set_requires_grad(self.d_core, False)

        # 1. supervised CE on the labeled batch
        x_l, y_l = self._images(labeled), labels_to_device(labeled[1], self.device)
        pred_l = self._segment(x_l)
        loss_ce = masked_cross_entropy(pred_l, y_l, self.ignore_label)

        # 2. unlabeled batch through S, then D (frozen) on softmax (+) image
        x_u = self._images(unlabeled)
        pred_u = self._segment(x_u)
        fake = self._d_input(discriminator_input(torch.softmax(pred_u, dim=1), x_u.float()))
        with autocast():
            d_fake, feat_fake = self.d_core(fake)

        # 3. self-training on the unlabeled images D finds realistic (only from iteration 1 on)
        loss_st, n_selected = self_training_loss(pred_u, d_fake, self.threshold_st)
        if iteration == 0:
            loss_st = loss_st * 0.0

        # 4. real branch: one-hot ground truth (+) image of an independent labeled batch.
        # The original scales this image by the range of the *labeled CE batch* (x_l).
        x_g, y_g = self._images(real).float(), labels_to_device(real[1], self.device)
        range_of = x_l.float() if self.d_real_norm == "labeled" else None
        real_input = self._d_input(discriminator_input(one_hot(y_g, self.num_classes), x_g, range_of))
        with autocast():
            _, feat_real = self.d_core(real_input)

        # 5. S update: CE + lambda_fm * FM + lambda_st * ST
        loss_fm = feature_matching_loss(feat_real, feat_fake)
        loss_s = loss_ce + self.lambda_fm * loss_fm + self.lambda_st * loss_st

        # 6. D update on the detached prediction (target 0) and the ground truth (target 1)
        set_requires_grad(self.d_core, True)
        with autocast():
            d_fake_detached, _ = self.discriminator(fake.detach())
            d_real, _ = self.discriminator(real_input)
        loss_d = 0.5 * (bce_on_probabilities(d_fake_detached, 0.0) + bce_on_probabilities(d_real, 1.0))

        values = losses_to_floats(iteration, {
            "loss_ce": loss_ce, "loss_fm": self.lambda_fm * loss_fm, "loss_st": loss_st,
            "loss_S": loss_s, "loss_D": loss_d, "above_st": n_selected})
        values["above_st"] = int(values["above_st"])
        self.precision.backward(loss_s)
        self.precision.backward(loss_d)
        self.precision.step(self.optimizer_s, self.optimizer_d)
        return values
