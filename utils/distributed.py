"""Device choice and torchrun process groups (nccl on CUDA, gloo on CPU)."""
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.errors import UserError


@dataclass
class Env:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def choose_device(flag="auto", gpu=0, local_rank=None):
    """`auto`: CUDA when present, else CPU. Under torchrun each process takes the GPU of its local rank."""
    if flag == "auto":
        flag = "cuda" if torch.cuda.is_available() else "cpu"
    if flag.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {flag}: CUDA is not available on this machine (use --device cpu)")
        if flag == "cuda":
            index = local_rank if local_rank is not None else gpu
            if index >= torch.cuda.device_count():
                raise UserError(f"--gpu {index}: only {torch.cuda.device_count()} CUDA devices are visible")
            return torch.device("cuda", index)
        return torch.device(flag)
    if flag != "cpu":
        raise UserError(f"--device {flag}: expected auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def init_environment(device_flag="auto", gpu=0):
    """Choose the device; join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Env(choose_device(device_flag, gpu))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(device_flag, gpu, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return Env(device, rank, world_size, local_rank)


def bare(module):
    """The module a DistributedDataParallel wraps (any other module is returned as it is)."""
    return getattr(module, "module", module)


def barrier(env):
    if env.distributed:
        dist.barrier()


def all_gather_objects(env, obj):
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(env, obj):
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(env):
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
