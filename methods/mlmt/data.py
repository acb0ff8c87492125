"""MLMT's data: the image-level labels of a split, the labeled permutation (the segmentation
trainers' rule) and the streams MLMTStep draws from."""
import os
import sys

import numpy as np

from data import get_dataset, label_files
from data.sampler import BatchStream, SeededEpochSampler
from data.image_lists import image_pools, labeled_first, listed_images
from data.splits import load_permutation, seeded_permutation
from methods.mlmt.labels import (ALWAYS_PRESENT, ClassifierImages, ImageLabels, cache_path_for,
                                 default_list_candidates, derive_labels, missing_classes, read_original_split)
from methods.mlmt.objective import MLMTStep
from utils.distributed import broadcast_object
from utils.errors import UserError
from utils.seeding import init_worker


def warn(env, text):
    if env.is_main:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def load_split(config, env, split, say=print, everywhere=True):
    """One split's ImageLabels from --data-layout: the original's files, or derived from the
    label PNGs of --dataset: by the main process, then shared with the others (`everywhere`: every
    process calls this; else only the main process does)."""
    if config.data_layout == "original":
        return read_original_split(config.data_dir, split, config.num_classes)
    spec = get_dataset(config.dataset)
    view = config.dataset_view(split)
    dataset = label_files((spec.build_train if split == "train" else spec.build_val)(view), config.dataset,
                          "train_mlmt.py")
    label_paths = [dataset.label_path(name) for name in dataset.ids]
    labels = None
    if env.is_main or not everywhere:
        cache = cache_path_for(dataset, default_list_candidates(config.data_dir, view.data_list, split, dataset),
                               config.data_dir, split)
        labels = derive_labels(dataset.ids, label_paths, config.num_classes, config.ignore_label,
                               ALWAYS_PRESENT.get(config.dataset, ()), cache, config.num_workers, say)
    if everywhere:
        labels = broadcast_object(env, labels)
    return ImageLabels(dataset.ids, [dataset.image_path(name) for name in dataset.ids], labels,
                       f"the label PNGs of {config.dataset}")


def labeled_permutation(config, num_images, saved=None):
    """The permutation whose first int(ratio * N) entries are labeled: the segmentation trainers'
    rule (data.splits), so that --pkl-file <their train_voc_split.pkl> labels the same images."""
    if saved is not None:
        return np.asarray(saved, np.int64)
    if config.pkl_file is None:
        return seeded_permutation(num_images, config.random_seed)
    if not os.path.isfile(config.pkl_file):
        raise UserError(f"--pkl-file {config.pkl_file} does not exist: train_s4GAN.py writes it, as "
                        f"<its --checkpoint-dir>/train_voc_split.pkl (run it first, so that both branches label "
                        f"the same images), or pass a split file of splits/ (e.g. splits/voc/seeded_0.pkl, the "
                        f"one you gave train_s4GAN.py --split-id), or --pkl-file none (seeded by --random-seed)")
    return load_permutation(config.pkl_file, num_images, "--pkl-file")


def make_data(config, env, saved_split=None, say=print):
    """For TrainingRun(data=...): the training split, its permutation and the two streams
    (labeled: --batch-size-lab plain views; unlabeled: --batch-size-unlab view pairs, or with
    --augment-on-device the resized images and their draws)."""
    train = load_split(config, env, "train", say)
    listed = listed_images(train.ids, config.labeled_list, config.unlabeled_list,
                           config.data_list or f"the training list of --dataset {config.dataset}",
                           outside_refused="train_mlmt.py reads unlabeled images from it only")
    if listed.labeled is not None:
        perm = np.asarray(saved_split, np.int64) if saved_split is not None else labeled_first(listed.labeled, len(train))
    else:
        perm = labeled_permutation(config, len(train), saved_split)
    labeled, unlabeled = image_pools(perm, len(train), config.labeled_ratio, listed)
    note = ""
    if len(unlabeled) == 0:
        unlabeled, note = labeled, " (every image is labeled: the unlabeled stream reuses them)"
    if env.is_main:
        say(f"training images: {len(labeled)} labeled, {len(unlabeled)} unlabeled{note}; labels from {train.source}")
        absent = missing_classes(train.labels, labeled)
        if absent:
            names = get_dataset(config.dataset).class_names(config.num_classes, config.data_dir)
            warn(env, f"no labeled image contains {', '.join(repr(names[c]) for c in absent)}: the classifier learns "
                      f"to call {'it' if len(absent) == 1 else 'them'} absent, and --with-mlmt fusion then removes "
                      f"{'it' if len(absent) == 1 else 'them'} from every segmentation")
    pin = env.device.type == "cuda"
    streams = {}
    pools = {"labeled": labeled, "unlabeled": unlabeled}
    batch_sizes = {"labeled": config.batch_size_lab, "unlabeled": config.batch_size_unlab}
    for number, (name, pool) in enumerate(MLMTStep.streams.items()):  # the stream's seed: its position
        sampler = SeededEpochSampler(pools[pool], config.random_seed, number, env.rank, env.world_size)
        images = ClassifierImages(train, name, config.image_size,
                                  device_augment=name == "unlabeled" and config.augment_on_device)
        streams[name] = BatchStream(images, sampler, batch_sizes[name],
                                    config.num_workers, pin_memory=pin, worker_init_fn=init_worker)
    return streams["labeled"].loader.dataset, perm, streams


def epoch_length(stream):
    """Batches per epoch of a stream on this process (the last one may be partial)."""
    per_process = -(-len(stream.sampler.indices) // stream.sampler.world_size)
    return -(-per_process // stream.batch_size)
