"""Building a training run from its configuration (engine/config.py): environment, output folder,
models, data, split, loaders."""
import json
import os

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from data import get_dataset
from data import image_lists
from data.image_lists import ListedImages, image_pools, labeled_first, match_list
from data.joined import JoinedDataset
from data.sampler import BatchStream, SeededEpochSampler
from data.splits import load_permutation, seeded_permutation
from model import SEGMENTERS, build_discriminator, build_segmenter, unused_parameter_names
from model.weights import load_exact, load_matching, read_state_dict
from utils.checkpoint import atomic_write_bytes
from utils.distributed import init_environment
from utils.errors import UserError
from utils.seeding import init_worker, seed_everything


def start_run(device, gpu, random_seed, checkpoint_dir):
    """Device and process group, seeds, determinism, the output folder."""
    env = init_environment(device, gpu)
    seed_everything(random_seed + env.rank)
    if env.device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.benchmark = True
    if env.is_main:
        try:
            os.makedirs(checkpoint_dir, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--checkpoint-dir {checkpoint_dir} cannot be created: {exc.strerror or exc}") from None
    return env


def write_args(flags, folder):
    """<folder>/args.json: the parsed flags (evaluate.py and resumed runs read them)."""
    text = json.dumps(vars(flags), indent=2, sort_keys=True, default=list) + "\n"
    atomic_write_bytes(os.path.join(folder, "args.json"), text.encode())


def segmenter(config, restore=True, say=print):
    """The ModelConfig's segmenter (--model, --backbone and its options); --restore-from copied where name and shape match, or,
    for a model whose ImageNet file has its own format (WRN-38), that file loaded by the model's rule."""
    entry = SEGMENTERS[config.model]
    model = build_segmenter(config.backbone, config.num_classes, config.model, **config.options)
    imagenet_file = entry.imagenet_weights.get(config.backbone)
    if restore and entry.load_imagenet and os.path.basename(config.restore_from) == imagenet_file:
        loaded = entry.load_imagenet(model, config.restore_from)
        if loaded is None:  # the original stops here too: a run from random weights would be hours lost
            raise UserError(f"--restore-from {config.restore_from} does not exist: put the ImageNet {config.backbone} "
                            f"weights there (pretrained_models/README.md), or pass --restore-from none to start "
                            f"from random initialisation")
        say(f"--restore-from {config.restore_from}: loaded {loaded} ImageNet tensors into the {config.backbone} trunk")
    elif restore and config.restore_from.lower() != "none":
        state = read_state_dict(config.restore_from, "--restore-from")
        loaded, mismatched = load_matching(model, state, config.restore_from)
        note = f"; kept at initialisation (shape differs): {', '.join(mismatched[:3])}" if mismatched else ""
        say(f"--restore-from {config.restore_from}: loaded {loaded} of {len(model.state_dict())} tensors{note}")
    elif restore:
        say("--restore-from none: the segmenter starts from random initialisation")
    return model


def discriminator(num_classes, restore_from=None, say=print):
    """D, with --restore-from-D's weights when given."""
    model = build_discriminator(num_classes)
    if restore_from:
        state = read_state_dict(restore_from, "--restore-from-D")
        load_exact(model, state, restore_from, "--restore-from-D")
        say(f"--restore-from-D {restore_from}: loaded {len(model.state_dict())} tensors")
    return model


def prepare_module(module, env, channels_last=False, sync_bn=False):
    """Memory format and, under torchrun, DistributedDataParallel. Returns (wrapped, bare).

    Parameters that never receive a gradient (the d=18/24 classifier branches with
    --aspp-branches 2) are excluded from DDP's gradient reduction, as the frozen BN affine ones are."""
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    if not env.distributed:
        return module, module
    if sync_bn:
        if env.device.type != "cuda":
            raise UserError("--sync-bn needs CUDA GPUs (SyncBatchNorm has no CPU implementation)")
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    unused = unused_parameter_names(module)
    if unused:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, unused)
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids), module


def make_split(split, random_seed, num_images, saved=None, labeled=None):
    """The permutation behind the labeled/unlabeled split of a SplitConfig (None when every image is
    labeled): the saved one of a resumed run, the --labeled-list images first (`labeled`: their
    positions), the --split-id file, or one seeded by `random_seed`."""
    if saved is not None:
        return np.asarray(saved, np.int64)
    if labeled is not None:
        return labeled_first(labeled, num_images)
    if split.labeled_ratio is None:
        return None
    if split.split_id:
        return load_permutation(split.split_id, num_images)
    return seeded_permutation(num_images, random_seed)


def listed_images(split, data, dataset, num_listed):
    """The ListedImages of a run: --labeled-list (SplitConfig) and the DataConfig's unlabeled_list
    against the training list (the images make_train_dataset joined come after it)."""
    where = data.data_list or f"the default training list of --dataset {data.dataset}"
    return image_lists.listed_images(dataset.ids[:num_listed], split.labeled_list, data.unlabeled_list, where)


def make_streams(split, env, dataset, perm, streams, num_listed, random_seed, num_workers, listed=None):
    """One BatchStream per stream of a method's `streams` ({name: pool}, methods/__init__.py), each
    with its own sampler (seeded by `random_seed` and the stream's position), the SplitConfig's batch
    size for it and, with its `drop_last`, only whole batches. `listed`: the run's ListedImages."""
    labeled, unlabeled = image_pools(perm, num_listed, split.labeled_ratio, listed or ListedImages())
    if "unlabeled" in streams.values() and len(unlabeled) == 0:
        if split.labeled_list:
            raise UserError(f"--labeled-list {split.labeled_list} names every image of the training list: no "
                            f"unlabeled image is left (give --unlabeled-list)")
        raise UserError(f"--labeled-ratio {split.labeled_ratio} leaves no unlabeled image; leave it unset "
                        f"to use every image as both labeled and unlabeled")
    pools = {"labeled": labeled, "unlabeled": unlabeled}
    out = {}
    for number, (name, pool) in enumerate(streams.items()):
        batch_size = split.batch_sizes.get(name, split.batch_size)
        sampler = SeededEpochSampler(pools[pool], random_seed, number, env.rank, env.world_size)
        if split.drop_last and len(sampler) < batch_size:
            raise UserError(f"the {name} images ({len(pools[pool])}) do not fill one batch of {batch_size}"
                            f"{' per process' if env.distributed else ''}: lower the batch size or label more")
        out[name] = BatchStream(dataset, sampler, batch_size, num_workers, pin_memory=env.device.type == "cuda",
                                worker_init_fn=init_worker, drop_last=split.drop_last)
    return out


def make_train_dataset(data):
    """The training list's dataset of a DataConfig and, when its `unlabeled_list` names images the
    training list does not hold, that list's images (read without labels) as a JoinedDataset after
    it. Returns (dataset, number of images of the training list)."""
    spec = get_dataset(data.dataset)
    listed = spec.build_train(data)
    if not data.unlabeled_list:
        return listed, len(listed)
    outside = [(number, name) for number, name, found in match_list(data.unlabeled_list, "--unlabeled-list",
                                                                      listed.ids) if found is None]
    if not outside:
        return listed, len(listed)
    if spec.build_unlabeled is None:
        raise UserError(f"--unlabeled-list {data.unlabeled_list} line {outside[0][0]}: {outside[0][1]} is not in "
                        f"the training list, and --dataset {data.dataset} reads no images outside it "
                        f"(--unlabeled-list is not supported for --dataset {data.dataset} beyond its training list)")
    return JoinedDataset(listed, spec.build_unlabeled(data)), len(listed)
