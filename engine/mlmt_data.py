"""MLMT's data and networks: the image-level labels of a split, the labeled permutation (the
segmentation trainers' rule), the two streams, and the ImageNet-initialised student and teacher."""
import os
import sys

import numpy as np
import torch

from data import get_dataset
from data.multilabel import (ALWAYS_PRESENT, ClassifierImages, ImageLabels, cache_path_for, default_list_candidates,
                             derive_labels, missing_classes, read_original_split)
from data.sampler import BatchStream, SeededEpochSampler
from data.splits import load_permutation, seeded_permutation, split_indices
from engine.setup import STREAM_IDS
from model.classifier import IMAGENET_FILES, build_classifier, load_trunk, read_imagenet_weights
from model.weights import TORCHVISION_URL
from utils.distributed import broadcast_object
from utils.errors import UserError
from utils.seeding import init_worker


def warn(env, text):
    if env.is_main:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def load_split(args, env, split, say=print, everywhere=True):
    """One split's ImageLabels from --data-layout: the original's files, or derived from the
    label PNGs of --dataset: by the main process, then shared with the others (`everywhere`: every
    process calls this; else only the main process does)."""
    if args.data_layout == "original":
        return read_original_split(args.data_dir, split, args.num_classes)
    spec = get_dataset(args.dataset)
    view = _dataset_flags(args, split)
    dataset = (spec.build_train if split == "train" else spec.build_val)(view)
    label_paths = [dataset.label_path(name) for name in dataset.ids]
    labels = None
    if env.is_main or not everywhere:
        cache = cache_path_for(dataset, default_list_candidates(args.data_dir, view.data_list, split, dataset),
                               args.data_dir, split)
        labels = derive_labels(dataset.ids, label_paths, args.num_classes, args.ignore_label,
                               ALWAYS_PRESENT.get(args.dataset, ()), cache, args.num_workers, say)
    if everywhere:
        labels = broadcast_object(env, labels)
    return ImageLabels(dataset.ids, [dataset.image_path(name) for name in dataset.ids], labels,
                       f"the label PNGs of {args.dataset}")


def _dataset_flags(args, split):
    """The flags a registry dataset's builders read, for listing its images and labels only."""
    view = type(args)(**vars(args))
    view.data_list = args.data_list if split == "train" else args.val_list
    view.input_size, view.random_scale, view.random_mirror = (321, 321), False, False
    return view


def labeled_permutation(args, num_images, saved=None):
    """The permutation whose first int(ratio * N) entries are labeled: the segmentation trainers'
    rule (data.splits), so that --pkl-file <their train_voc_split.pkl> labels the same images."""
    if saved is not None:
        return np.asarray(saved, np.int64)
    if args.pkl_file is None:
        return seeded_permutation(num_images, args.random_seed)
    if not os.path.isfile(args.pkl_file):
        raise UserError(f"--pkl-file {args.pkl_file} does not exist: train_s4GAN.py writes it, as "
                        f"<its --checkpoint-dir>/train_voc_split.pkl (run it first, so that both branches label "
                        f"the same images), or pass a split file of splits/ (e.g. splits/voc/seeded_0.pkl, the "
                        f"one you gave train_s4GAN.py --split-id), or --pkl-file none (seeded by --random-seed)")
    return load_permutation(args.pkl_file, num_images, "--pkl-file")


def make_data(args, env, saved_split=None, say=print):
    """For TrainingRun(data=...): the training split, its permutation and the two streams
    (labeled: --batch-size-lab plain views; unlabeled: --batch-size-unlab view pairs, or with
    --augment-on-device the resized images and their draws)."""
    train = load_split(args, env, "train", say)
    perm = labeled_permutation(args, len(train), saved_split)
    labeled, unlabeled = split_indices(perm, args.labeled_ratio)
    note = ""
    if len(unlabeled) == 0:
        unlabeled, note = labeled, " (every image is labeled: the unlabeled stream reuses them)"
    if env.is_main:
        say(f"training images: {len(labeled)} labeled, {len(unlabeled)} unlabeled{note}; labels from {train.source}")
        absent = missing_classes(train.labels, labeled)
        if absent:
            names = get_dataset(args.dataset).class_names(args.num_classes, args.data_dir)
            warn(env, f"no labeled image contains {', '.join(repr(names[c]) for c in absent)}: the classifier learns "
                      f"to call {'it' if len(absent) == 1 else 'them'} absent, and --with-mlmt fusion then removes "
                      f"{'it' if len(absent) == 1 else 'them'} from every segmentation")
    pin = env.device.type == "cuda"
    streams = {}
    for name, pool, batch_size in (("labeled", labeled, args.batch_size_lab),
                                   ("unlabeled", unlabeled, args.batch_size_unlab)):
        sampler = SeededEpochSampler(pool, args.random_seed, STREAM_IDS[name], env.rank, env.world_size)
        images = ClassifierImages(train, name, args.image_size,
                                  device_augment=name == "unlabeled" and getattr(args, "augment_on_device", False))
        streams[name] = BatchStream(images, sampler, batch_size,
                                    args.num_workers, pin_memory=pin, worker_init_fn=init_worker)
    return streams["labeled"].loader.dataset, perm, streams


def epoch_length(stream):
    """Batches per epoch of a stream on this process (the last one may be partial)."""
    per_process = -(-len(stream.sampler.indices) // stream.sampler.world_size)
    return -(-per_process // stream.batch_size)


# ---------------------------------------------------------------- models
def imagenet_trunk(args, env):
    """--pretrained's trunk weights, or None with --pretrained none (random initialisation). A missing
    file stops the run: a classifier trained from random weights by mistake is hours lost."""
    if args.pretrained.lower() == "none":
        return None
    state = read_imagenet_weights(args.pretrained, args.backbone)
    if state is None:
        name = IMAGENET_FILES[args.backbone]
        raise UserError(f"--pretrained {args.pretrained} does not exist: download {TORCHVISION_URL.format(name)} "
                        f"there (pretrained_models/README.md), or pass --pretrained none to start from random "
                        f"initialisation")
    return state


def classifier(args, device, trunk=None, teacher=False):
    """A ResNet classifier with --num-classes outputs in train mode (student and teacher both stay in
    train mode, as in the original). The teacher is built on its own (its head has its own random
    init, which the EMA washes out) and its parameters never get a gradient."""
    model = build_classifier(args.backbone, args.num_classes)
    if trunk is not None:
        load_trunk(model, trunk)
    model = model.to(device).train()
    if teacher:
        for p in model.parameters():
            p.requires_grad_(False)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
    return model
