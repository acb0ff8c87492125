"""torchrun on CPU (gloo): DDP gradients equal a single-process step on the concatenated batch, and
a 2-process run writes one set of checkpoints that a single process can load."""
import os
import subprocess
import sys

import torch

from methods.s4gan import S4GANStep
from tests.ddp_grad_worker import build, fixed_batches, gradients, make_step
from tests.helpers import ROOT, tiny_eval_flags, tiny_train_flags


def torchrun(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_ddp_gradients_equal_single_process_on_the_whole_batch(tmp_path):
    proc = torchrun(os.path.join(ROOT, "tests", "ddp_grad_worker.py"), "--out", str(tmp_path / "grads.pth"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "grads.pth", weights_only=True)
    seg, d = build()
    make_step(seg, d)(1, **dict(zip(S4GANStep.streams, fixed_batches())))
    single = gradients(seg, d)
    assert ddp.keys() == single.keys() and any(k.startswith("D.") for k in single)
    assert not any("conv2d_list.2" in k or "conv2d_list.3" in k for k in single)  # unused branches: no grad
    for name, grad in single.items():
        scale = grad.abs().max().item() + 1e-12
        assert torch.allclose(ddp[name], grad, rtol=1e-4, atol=1e-5 * scale), name


def test_two_process_run_writes_one_set_of_checkpoints(voc_root, tmp_path):
    ckpt = tmp_path / "ck"
    proc = torchrun("train_s4GAN.py", *tiny_train_flags(voc_root, ckpt, "--num-steps", "2", "--labeled-ratio", "0.5"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(ckpt)) == sorted(["VOC_2.pth", "VOC_2_D.pth", "latest.pth", "args.json", "metrics.jsonl",
                                               "train_voc_split.pkl"])
    assert proc.stdout.count("iter      1/2") == 1  # only rank 0 prints
    state = torch.load(ckpt / "latest.pth", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    proc = subprocess.run([sys.executable, "evaluate.py", *tiny_eval_flags(voc_root, ckpt / "VOC_2.pth", tmp_path / "r")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "meanIOU" in proc.stdout, proc.stderr
