"""The supervised step (train_full.py): pixel cross-entropy L_ce on a labeled batch."""
from methods.values import defer_reads, step_values
from utils.tensors import images_to_device, labels_to_device, upsample
from utils.losses import masked_cross_entropy


class SupervisedStep:
    streams = {"labeled": "labeled"}  # stream -> the pool it draws from

    def __init__(self, model, optimizer, precision, *, input_size, ignore_label, device, channels_last=False,
                 deferred=None):
        self.model, self.optimizer, self.precision = model, optimizer, precision
        self.input_size, self.ignore_label = input_size, ignore_label
        self.device, self.channels_last = device, channels_last
        # values read by the run at logged iterations only (methods/values.py); the default: on GPUs
        self.deferred = defer_reads(device) if deferred is None else deferred

    def __call__(self, iteration, labeled):
        images = images_to_device(labeled[0], self.device, self.channels_last)
        labels = labels_to_device(labeled[1], self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            logits = self.model(images)
        logits = upsample(logits.float(), self.input_size)  # losses in float32
        loss_ce = masked_cross_entropy(logits, labels, self.ignore_label)
        values = step_values(iteration, {"loss_ce": loss_ce}, self.deferred)
        self.precision.backward(loss_ce)
        self.precision.step(self.optimizer)
        return values
