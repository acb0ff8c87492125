"""Building a training run from its flags: environment, output folder, models, data, split, loaders."""
import json
import os

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from data import get_dataset
from data.joined import JoinedDataset
from data.sampler import BatchStream, SeededEpochSampler
from data.splits import load_permutation, save_permutation, seeded_permutation, split_indices
from model import SEGMENTERS, build_discriminator, build_segmenter
from model.weights import load_exact, load_matching, read_state_dict
from utils.checkpoint import atomic_write_bytes
from utils.distributed import init_environment
from utils.errors import UserError
from utils.seeding import init_worker, seed_everything

STREAM_IDS = {"labeled": 0, "unlabeled": 1, "real": 2}


def start_run(args):
    """Device and process group, seeds, determinism, the output folder."""
    env = init_environment(args.device, args.gpu)
    seed_everything(args.random_seed + env.rank)
    if env.device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.benchmark = True
    if env.is_main:
        try:
            os.makedirs(args.checkpoint_dir, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--checkpoint-dir {args.checkpoint_dir} cannot be created: {exc.strerror or exc}") from None
    return env


def write_args(args, folder=None):
    """<folder or checkpoint-dir>/args.json; written up front, so an unwritable folder stops the run at once."""
    text = json.dumps(vars(args), indent=2, sort_keys=True, default=list) + "\n"
    atomic_write_bytes(os.path.join(folder or args.checkpoint_dir, "args.json"), text.encode())


def segmenter(args, restore=True, say=print):
    """--model with --backbone and its options; --restore-from copied where name and shape match, or,
    for a model whose ImageNet file has its own format (WRN-38), that file loaded by the model's rule."""
    entry = SEGMENTERS[args.model]
    model = build_segmenter(args.backbone, args.num_classes, args.model,
                            **{name: getattr(args, name) for name in entry.options})
    imagenet_file = entry.imagenet_weights.get(args.backbone)
    if restore and entry.load_imagenet and os.path.basename(args.restore_from) == imagenet_file:
        loaded = entry.load_imagenet(model, args.restore_from)
        if loaded is None:  # the original stops here too: a run from random weights would be hours lost
            raise UserError(f"--restore-from {args.restore_from} does not exist: put the ImageNet {args.backbone} "
                            f"weights there (pretrained_models/README.md), or pass --restore-from none to start "
                            f"from random initialisation")
        say(f"--restore-from {args.restore_from}: loaded {loaded} ImageNet tensors into the {args.backbone} trunk")
    elif restore and args.restore_from.lower() != "none":
        state = read_state_dict(args.restore_from, "--restore-from")
        loaded, mismatched = load_matching(model, state, args.restore_from)
        note = f"; kept at initialisation (shape differs): {', '.join(mismatched[:3])}" if mismatched else ""
        say(f"--restore-from {args.restore_from}: loaded {loaded} of {len(model.state_dict())} tensors{note}")
    elif restore:
        say("--restore-from none: the segmenter starts from random initialisation")
    return model


def discriminator(args, restore=True, say=print):
    """D; --restore-from-D loaded unless the run resumes (its latest.pth holds D)."""
    model = build_discriminator(args.num_classes)
    if restore and args.restore_from_D:
        state = read_state_dict(args.restore_from_D, "--restore-from-D")
        load_exact(model, state, args.restore_from_D, "--restore-from-D")
        say(f"--restore-from-D {args.restore_from_D}: loaded {len(model.state_dict())} tensors")
    return model


def prepare_module(module, args, env, sync_bn=False):
    """Memory format and, under torchrun, DistributedDataParallel. Returns (wrapped, bare).

    Parameters that never receive a gradient (the d=18/24 classifier branches with
    --aspp-branches 2) are excluded from DDP's gradient reduction, as the frozen BN affine ones are."""
    if args.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if not env.distributed:
        return module, module
    if sync_bn:
        if env.device.type != "cuda":
            raise UserError("--sync-bn needs CUDA GPUs (SyncBatchNorm has no CPU implementation)")
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    unused = getattr(module, "unused_parameter_names", lambda: [])()
    if unused:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, unused)
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids), module


def make_split(args, num_images, saved=None):
    """The permutation behind the labeled/unlabeled split (None when every image is labeled)."""
    if args.labeled_ratio is None:
        return None
    if saved is not None:
        return np.asarray(saved, np.int64)
    if args.split_id:
        return load_permutation(args.split_id, num_images)
    return seeded_permutation(num_images, args.random_seed)


def save_split(args, perm, split_file):
    """The permutation in the checkpoint folder as `split_file` (the original's name for the script)."""
    save_permutation(os.path.join(args.checkpoint_dir, split_file), perm)


def make_streams(args, env, dataset, perm, names, num_listed=None, batch_sizes=None, drop_last=False):
    """One BatchStream per name in `names` (labeled / unlabeled / real), each with its own sampler,
    batch size (`batch_sizes[name]`, else --batch-size) and, with `drop_last`, only whole batches.

    Indices >= num_listed (images of --unlabeled-list) join the unlabeled pool only."""
    num_listed = len(dataset) if num_listed is None else num_listed
    everything = np.arange(num_listed, dtype=np.int64)
    labeled, unlabeled = split_indices(perm if perm is not None else everything, args.labeled_ratio)
    unlabeled = np.concatenate([unlabeled, np.arange(num_listed, len(dataset), dtype=np.int64)])
    if "unlabeled" in names and len(unlabeled) == 0:
        raise UserError(f"--labeled-ratio {args.labeled_ratio} leaves no unlabeled image; leave it unset "
                        f"to use every image as both labeled and unlabeled")
    pools = {"labeled": labeled, "unlabeled": unlabeled, "real": labeled}
    streams = {}
    for name in names:
        batch_size = (batch_sizes or {}).get(name, args.batch_size)
        sampler = SeededEpochSampler(pools[name], args.random_seed, STREAM_IDS[name], env.rank, env.world_size)
        if drop_last and len(sampler) < batch_size:
            raise UserError(f"the {name} images ({len(pools[name])}) do not fill one batch of {batch_size}"
                            f"{' per process' if env.distributed else ''}: lower the batch size or label more")
        streams[name] = BatchStream(dataset, sampler, batch_size, args.num_workers, pin_memory=env.device.type == "cuda",
                                    worker_init_fn=init_worker, drop_last=drop_last)
    return streams


def make_train_dataset(args):
    """The training list's dataset, and (as a JoinedDataset after it) the --unlabeled-list images."""
    spec = get_dataset(args.dataset)
    listed = spec.build_train(args)
    if not getattr(args, "unlabeled_list", None):
        return listed, len(listed)
    if spec.build_unlabeled is None:
        raise UserError(f"--unlabeled-list is not supported for --dataset {args.dataset}")
    return JoinedDataset(listed, spec.build_unlabeled(args)), len(listed)
