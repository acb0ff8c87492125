"""The CUDA paths: mixed precision, channels-last, batched evaluation, CUDA checkpoints, exact resume,
SyncBatchNorm under NCCL, and every trainer on a GPU.

Every test here is marked `cuda` and skips without a CUDA GPU (the only tests of the suite that may
skip for that reason). `benchmarks/gpu_check.py` runs them as `pytest -m cuda tests/test_cuda.py`
and puts what they measured (AMP loss differences, the resume finding) into its report: a test
appends such findings to the JSON-lines file named by $GPU_CHECK_NOTES when it is set.

SEMISUP_CUDA_TESTS_DEVICE=cpu runs the device-generic tests on the CPU instead, to check the tests'
own logic on a machine without a GPU (the CUDA-only ones, CUDA -> CPU checkpoints and NCCL, still
skip); a CPU pass says nothing about CUDA.
"""
import json
import os
import shutil
import types
import warnings

# cuBLAS reads this when it starts; deterministic cuBLAS (the exact-resume test) needs it, so it is
# set before any test of this module touches CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, default_collate  # noqa: E402

from data.config import DataConfig  # noqa: E402
from tests.helpers import ROOT, assert_identical, crash_at, needs_cuda, run_main  # noqa: E402

DEVICE = torch.device(os.environ.get("SEMISUP_CUDA_TESTS_DEVICE", "cuda"))
if DEVICE.type == "cuda" and DEVICE.index is None:
    DEVICE = torch.device("cuda", 0)  # DDP and the trainers' --device want an index
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")]

NUM_CLASSES = 6  # the synthetic dataset's (data/synthetic.py)
CROP = (65, 65)

# How far a mixed-precision loss may be from the float32 loss of the same weights and batch:
# |loss - loss_fp32| <= rtol * |loss_fp32| + atol. bf16 keeps 8 bits of mantissa (about 0.4% per
# rounding), fp16 11 bits, and the errors of ~100 layers add up: with CPU autocast the step's losses
# differed from float32 by up to 1.4% (bf16) and 0.4% (fp16); the tolerances leave a factor 3-5 for
# other kernels while still catching a term computed in the wrong precision. The float32 reference
# runs without TF32, so that the difference is the mixed precision's alone.
AMP_TOLERANCE = {"bf16": (0.05, 2e-3), "fp16": (0.02, 1e-3)}


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture(autouse=True)
def restore_global_flags():
    """Every test starts without deterministic mode (a CPU trainer turns it on for the process) and
    leaves the process's global flags as it found them."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.use_deterministic_algorithms(False)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[2:]


def no_tf32():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture
def note(request):
    """note(text, **values): a finding for gpu_check.py's report (and the test's own output)."""
    def write(text, **values):
        print(f"note: {text}")
        path = os.environ.get("GPU_CHECK_NOTES")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": request.node.name, "note": text, **values}) + "\n")
    return write


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small synthetic dataset (data/synthetic.py): 16 training and 12 validation images of 56-72 px,
    so that the evaluation pads them to two different sizes (57/65 and 73)."""
    from data.synthetic import write_dataset
    root = str(tmp_path_factory.mktemp("synthetic"))
    write_dataset(root, num_train=16, num_val=12, seed=0, max_size=72, min_size=56)
    return root


def train_batches(root, streams, batch_size=2, crop=CROP):
    """One batch per stream, as the trainers' loaders collate them (fixed augmentation keys)."""
    from data.voc import VOCSegmentation
    dataset = VOCSegmentation(root, os.path.join(root, "lists", "train_aug.txt"), crop, num_classes=NUM_CLASSES)
    out = {}
    for s, name in enumerate(streams):
        indices = [(s * batch_size + k) % len(dataset) for k in range(batch_size)]
        out[name] = default_collate([dataset[(i, (0, s, 0, k))] for k, i in enumerate(indices)])
    return out


def relative_error(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def within(value, reference, rtol, atol):
    return abs(value - reference) <= rtol * abs(reference) + atol


def one_step(kind, amp, states, batches):
    """The trainers' step once, from the given weights: returns the loss values it logged and the
    segmenter after the update."""
    from methods.values import host_values
    from methods.s4gan import S4GANStep
    from methods.supervised import SupervisedStep
    from model import build_discriminator, build_segmenter
    from utils.amp import Precision
    from utils.optim import segmenter_optimizer

    model = build_segmenter("resnet101", NUM_CLASSES)
    model.load_state_dict(states["S"])
    model = model.to(DEVICE).train()
    optimizer = segmenter_optimizer(model, 2.5e-4, 0.9, 5e-4, "legacy")
    precision = Precision(amp, DEVICE)
    if kind == "full":
        step = SupervisedStep(model, optimizer, precision, input_size=CROP, ignore_label=255, device=DEVICE)
        return host_values(1, step(1, **batches)), model
    d = build_discriminator(NUM_CLASSES)
    d.load_state_dict(states["D"])
    # D in eval mode: its Dropout2d masks would otherwise differ between the dtypes (the mask kernel
    # draws per dtype), and the comparison is about the arithmetic, not about the masks
    d = d.to(DEVICE).eval()
    optimizer_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.9, 0.99))
    # threshold 0: every unlabeled image is self-trained in every precision, so L_st is compared
    # like the other terms instead of jumping with a selection that sits on the threshold
    step = S4GANStep(model, d, optimizer, optimizer_d, precision, num_classes=NUM_CLASSES, ignore_label=255,
                     input_size=CROP, lambda_fm=0.1, lambda_st=1.0, threshold_st=0.0, device=DEVICE)
    return host_values(1, step(1, **batches)), model  # iteration 1: L_st counts (the original zeroes it at iteration 0)


def initial_states():
    from model import build_discriminator, build_segmenter
    torch.manual_seed(0)
    return {"S": build_segmenter("resnet101", NUM_CLASSES).state_dict(),
            "D": build_discriminator(NUM_CLASSES).state_dict()}


# ---------------------------------------------------------------- mixed precision

@pytest.mark.parametrize("kind", ["s4gan", "full"])
def test_step_in_fp32_bf16_fp16_gives_finite_losses_close_to_fp32(synth, kind, note):
    """The s4GAN step and the supervised step (ResNet-101 DeepLabv2, legacy SGD) from the same
    weights and batch in float32, bf16 and fp16: finite losses, the mixed-precision ones within
    AMP_TOLERANCE of float32, and finite weights after the update."""
    no_tf32()
    states = initial_states()
    batches = train_batches(synth, ("labeled", "unlabeled", "real") if kind == "s4gan" else ("labeled",))
    results = {}
    for amp in ("off", "bf16", "fp16"):
        values, model = one_step(kind, amp, states, batches)
        losses = {k: v for k, v in values.items() if k.startswith("loss")}
        assert all(np.isfinite(v) for v in losses.values()), (amp, values)
        assert all(torch.isfinite(p).all() for p in model.parameters()), amp
        results[amp] = losses
    worst = {}
    for amp in ("bf16", "fp16"):
        rtol, atol = AMP_TOLERANCE[amp]
        worst[amp] = max(abs(results[amp][k] - results["off"][k]) / max(abs(results["off"][k]), 1e-12)
                         for k in results["off"])
        note(f"{kind} step, {amp} vs fp32: largest relative loss difference {worst[amp]:.2e} "
             f"(tolerance {rtol} relative + {atol} absolute)", losses={a: results[a] for a in results})
    for amp in ("bf16", "fp16"):
        rtol, atol = AMP_TOLERANCE[amp]
        for name, reference in results["off"].items():
            assert within(results[amp][name], reference, rtol, atol), (amp, name, results[amp][name], reference)


# ---------------------------------------------------------------- channels-last

def test_channels_last_equals_contiguous(synth, note):
    """Same weights and batch, NHWC against NCHW in float32 (no TF32): the segmenter's logits, loss
    and gradients, and D's outputs, differ by no more than float32 rounding.

    What float32 rounding amounts to is measured, not guessed: both layouts are compared with a
    float64 run. The gradients of the first layers are ill-conditioned (the backward of ~100
    batch-normalised layers subtracts nearly equal terms): on a CPU even the contiguous float32
    gradient of conv1 is 3-5% off the float64 one. So the layouts must agree to within 4x the
    contiguous layout's own error (+1e-6 for quantities that are exact in both): twice it when both
    layouts are equally accurate, as on the CPU (1.1-1.9x there)."""
    from utils.tensors import upsample
    from model import build_discriminator, build_segmenter
    from utils.losses import masked_cross_entropy

    no_tf32()
    states = initial_states()
    batch = train_batches(synth, ("labeled",), batch_size=3)["labeled"]
    outputs = {}
    for name, dtype, layout in (("float64", torch.float64, torch.contiguous_format),
                                ("contiguous", torch.float32, torch.contiguous_format),
                                ("channels-last", torch.float32, torch.channels_last)):
        model = build_segmenter("resnet101", NUM_CLASSES)
        model.load_state_dict(states["S"])
        model = model.to(DEVICE, dtype).to(memory_format=layout).train()
        d = build_discriminator(NUM_CLASSES)
        d.load_state_dict(states["D"])
        d = d.to(DEVICE, dtype).to(memory_format=layout).eval()
        images = batch[0].to(DEVICE, dtype).contiguous(memory_format=layout)
        logits = model(images)
        loss = masked_cross_entropy(upsample(logits, CROP), batch[1].to(DEVICE).long(), 255)
        loss.backward()
        d_in = torch.cat([torch.softmax(upsample(logits.detach(), CROP), 1), images / 255], 1)
        prob, features = d(d_in.contiguous(memory_format=layout))
        if layout == torch.channels_last:
            assert images.is_contiguous(memory_format=torch.channels_last)
            assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        outputs[name] = {"logits": logits, "loss": loss, "D prob": prob, "D features": features,
                         "grad conv1": model.conv1.weight.grad,
                         "grad layer4": model.layer4[-1].conv3.weight.grad,
                         "grad classifier": model.layer5.conv2d_list[0].weight.grad}
    reference, contiguous, channels_last = outputs["float64"], outputs["contiguous"], outputs["channels-last"]
    errors = {name: (relative_error(channels_last[name], contiguous[name]),
                     relative_error(contiguous[name], reference[name])) for name in reference}
    note("channels-last vs contiguous, float32, largest relative difference: "
         + ", ".join(f"{name} {between:.1e} (float32 vs float64: {rounding:.1e})"
                     for name, (between, rounding) in errors.items()))
    for name, (between, rounding) in errors.items():
        assert between <= 4 * rounding + 1e-6, (name, between, rounding)


# ---------------------------------------------------------------- evaluation

def test_batched_evaluation_equals_batch_1(synth, note):
    """The evaluator at batch 8 and at batch 1 on the device give the same confusion matrix.

    Images of two padded sizes make the batches split into groups (eval_collate). The model runs in
    float64: cuDNN may pick other algorithms for other batch sizes, and in float32 their rounding
    differences can flip the argmax of a few near-tie pixels of an untrained model, which would be
    a test of cuDNN, not of the batching. In float32 the per-class pixel counts of the ground truth
    must still agree exactly; how many predictions differ is reported."""
    from data import get_dataset
    from engine.evaluator import eval_collate, evaluate
    from model import build_segmenter

    dataset = get_dataset("folder").build_val(DataConfig("folder", synth, NUM_CLASSES, 255,
                                                         data_list=os.path.join(synth, "lists", "val.txt")))
    shapes = {tuple(dataset[i][0].shape) for i in range(len(dataset))}
    assert len(shapes) >= 2  # mixed sizes: batches split into groups
    torch.manual_seed(0)
    base = build_segmenter("resnet18", NUM_CLASSES)

    class Float64(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x.double())

    confusions = {}
    for precision in ("float64", "float32"):
        model = Float64(base.double()) if precision == "float64" else base.float()
        model.to(DEVICE)
        for batch_size in (1, 8):
            loader = DataLoader(dataset, batch_size=batch_size, num_workers=2, collate_fn=eval_collate,
                                pin_memory=DEVICE.type == "cuda")
            if batch_size == 8:
                assert max(len(g[3]) for groups in loader for g in groups) > 1  # some group holds several images
            confusions[precision, batch_size] = evaluate(model, loader, NUM_CLASSES, DEVICE)
    assert confusions["float64", 1].sum() > 0
    assert torch.equal(confusions["float64", 8], confusions["float64", 1])
    assert torch.equal(confusions["float32", 8].sum(1), confusions["float32", 1].sum(1))
    changed = int((confusions["float32", 8] - confusions["float32", 1]).abs().sum()) // 2
    note(f"evaluation batch 8 vs 1: float64 identical; float32: {changed} of {int(confusions['float32', 1].sum())} "
         f"scored pixels predicted differently")


def test_uint8_batches_normalised_on_the_device_equal_the_float_items(synth, note):
    """Evaluation moves uint8 images and normalises them on the device by table look-up: the floats
    must be those of the CPU items, bit for bit, padding included (pinned memory, non-blocking copy)."""
    from data import get_dataset
    from engine.evaluator import DeviceNormalizer, eval_collate, uint8_batches

    def dataset():
        return get_dataset("pascal_voc").build_val(DataConfig("pascal_voc", synth, NUM_CLASSES, 255,
                                                              data_list=os.path.join(synth, "lists", "val.txt")))

    floats = [g for groups in DataLoader(dataset(), batch_size=4, collate_fn=eval_collate) for g in groups]
    raw = uint8_batches(dataset())
    normalize = DeviceNormalizer(raw, DEVICE)
    loader = DataLoader(raw, batch_size=4, collate_fn=eval_collate, pin_memory=DEVICE.type == "cuda")
    groups = [g for groups in loader for g in groups]
    moved = sum(g[0].numel() * g[0].element_size() + g[1].numel() * g[1].element_size() for g in groups)
    before = sum(g[0].numel() * g[0].element_size() + g[1].numel() * g[1].element_size() for g in floats)
    for (image8, _, size8, *_), (image, *_) in zip(groups, floats):
        out = normalize(image8.to(DEVICE, non_blocking=True), size8.to(DEVICE))
        assert torch.equal(out.cpu(), image)
    note(f"uint8 evaluation batches: identical floats on the device; {moved / before:.0%} of the bytes moved")


# ---------------------------------------------------------------- trainers on the device

TRAINERS = ["train_full", "train_s4GAN", "train_s4GAN_wrn38"]
if os.path.isfile(os.path.join(ROOT, "train_mlmt.py")):  # written by another part of the project
    TRAINERS.append("train_mlmt")


def trainer_flags(name, root, out, steps=3, device=DEVICE):
    """Each trainer for `steps` iterations on the synthetic set, with loader workers (pinned memory on
    CUDA) and a different precision per trainer, so that together they cover fp32, bf16 with
    channels-last and fp16 through the scripts."""
    lists = os.path.join(root, "lists")
    common = ["--dataset", "folder", "--data-dir", root, "--data-list", os.path.join(lists, "train_aug.txt"),
              "--num-workers", "2", "--device", str(device), "--log-every", "1"]
    segmentation = [*common, "--restore-from", "none", "--input-size", f"{CROP[0]},{CROP[1]}", "--batch-size", "2",
                    "--num-steps", str(steps), "--save-pred-every", str(steps), "--checkpoint-dir", str(out),
                    "--split-id", "none"]
    if name == "train_full":
        return [*segmentation, "--labeled-ratio", "0.5", "--amp", "fp16"]
    if name == "train_s4GAN":
        return [*segmentation, "--labeled-ratio", "0.5", "--amp", "bf16", "--channels-last"]
    if name == "train_s4GAN_wrn38":
        return [*segmentation, "--wrn-width-mult", "0.0625", "--batch-size-unlab", "2", "--labeled-ratio", "0.5",
                "--val-list", os.path.join(lists, "val.txt"), "--val-every", str(steps), "--val-images", "2",
                "--out", str(out / "out")]
    # MLMT: an epoch is (labeled images // labeled batch) iterations: 6 // 2 = 3, one epoch
    return [*common, "--val-list", os.path.join(lists, "val.txt"), "--backbone", "resnet101", "--pretrained", "none",
            "--image-size", "64", "--batch-size-lab", "2", "--batch-size-unlab", "3", "--batch-size-val", "4",
            "--labeled-ratio", str(6 / 16), "--num-epochs", "1", "--burn-in-epochs", "0", "--evaluation-epochs", "1",
            "--pkl-file", "none", "--output-dir", str(out), "--amp", "bf16", "--channels-last"]


@pytest.mark.parametrize("name", TRAINERS)
def test_every_trainer_runs_3_iterations_on_the_device(synth, tmp_path, capsys, name):
    import importlib
    trainer = importlib.import_module(name)
    code, out, err = run_main(trainer.main, trainer_flags(name, synth, tmp_path), capsys)
    assert code == 0, err[-3000:]
    log_dir = tmp_path / "out" if name == "train_s4GAN_wrn38" else tmp_path
    records = [json.loads(line) for line in open(log_dir / "metrics.jsonl")]
    iterations = sorted({r["iter"] for r in records})
    assert iterations == [0, 1, 2], iterations
    for record in records:
        for key, value in record.items():
            if key.startswith("loss"):
                assert np.isfinite(value), (key, record)
    latest = torch.load(tmp_path / "latest.pth", map_location="cpu", weights_only=True)
    assert latest["iteration"] == 3
    weights = latest["model"]
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    if name != "train_mlmt":
        assert (tmp_path / "VOC_3.pth").is_file()


# ---------------------------------------------------------------- checkpoints across devices

@needs_cuda
def test_checkpoint_saved_on_cuda_loads_on_cpu(synth, tmp_path, capsys):
    """A run on CUDA stops (crash) after its state was saved; its snapshot loads into a CPU model and
    evaluates with evaluate.py --device cpu, and the run finishes on the CPU with --resume."""
    import evaluate
    import train_s4GAN
    from methods.s4gan import S4GANStep
    from model import build_segmenter

    flags = trainer_flags("train_s4GAN", synth, tmp_path, steps=3)
    flags[flags.index("--save-pred-every") + 1] = "1"
    flags.remove("--amp")
    flags.remove("bf16")  # float32: the CPU half of the test need not depend on the CPU's bf16 support
    with crash_at(S4GANStep, 2):
        run_main(train_s4GAN.main, flags)
    state = torch.load(tmp_path / "VOC_1.pth", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values())
    model = build_segmenter("resnet101", NUM_CLASSES)
    model.load_state_dict(state)  # strict: every key and shape
    code, out, err = run_main(evaluate.main, [
        "--dataset", "folder", "--data-dir", synth, "--data-list", os.path.join(synth, "lists", "val.txt"),
        "--restore-from", str(tmp_path / "VOC_1.pth"), "--save-dir", str(tmp_path / "eval"), "--num-workers", "0",
        "--device", "cpu"], capsys)
    assert code == 0 and "meanIOU" in out, err[-3000:]
    assert torch.load(tmp_path / "latest.pth", map_location="cpu", weights_only=True)["iteration"] == 2
    flags[flags.index("--device") + 1] = "cpu"
    code, out, err = run_main(train_s4GAN.main, [*flags, "--resume", "auto"], capsys)
    assert code == 0, err[-3000:]
    assert "resuming from" in out and (tmp_path / "VOC_3.pth").is_file()


# ---------------------------------------------------------------- exact resume

def test_exact_resume_with_deterministic_algorithms(synth, tmp_path, monkeypatch, note):
    """An s4GAN run stopped after iteration 2 and resumed ends where the uninterrupted run ends.

    Under torch.use_deterministic_algorithms (and CUBLAS_WORKSPACE_CONFIG, set at the top of this
    module; cuDNN autotuning off, as it may pick other algorithms in another run) the two runs are
    bit-identical if no operation of the step lacks a deterministic CUDA kernel. PyTorch documents
    some that do: the backward of bilinear interpolation (our logits' upsampling) accumulates with
    atomic adds in an order that varies from run to run, and so may others of the step. They are
    run with warn_only=True and listed. When there are such operations, what holds exactly is the
    resumed state (iteration, loader positions, every RNG state: the same dropout masks follow),
    and the weights and logged losses agree to within those kernels' rounding, amplified only by
    Adam's normalised first steps (an update of about lr for a gradient near 0 whichever its
    rounding): weights within 2e-3 absolute, losses within 1e-3 relative. The finding is reported."""
    import train_s4GAN
    from engine import setup
    from methods.s4gan import S4GANStep

    start_run = setup.start_run

    def start_run_without_autotuning(*args):
        env = start_run(*args)
        torch.backends.cudnn.benchmark = False
        return env

    monkeypatch.setattr(setup, "start_run", start_run_without_autotuning)

    def flags(out):
        f = trainer_flags("train_s4GAN", synth, out, steps=4)
        f[f.index("--save-pred-every") + 1] = "1"
        f[f.index("--num-workers") + 1] = "0"
        i = f.index("--amp")
        return f[:i] + f[i + 3:]  # float32, contiguous: the default run

    torch.use_deterministic_algorithms(True, warn_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, _ = run_main(train_s4GAN.main, flags(tmp_path / "reference"))
        assert code == 0
        with crash_at(S4GANStep, 3):
            run_main(train_s4GAN.main, flags(tmp_path / "resumed"))
        assert torch.load(tmp_path / "resumed" / "latest.pth", weights_only=True)["iteration"] == 3
        code, _, _ = run_main(train_s4GAN.main, [*flags(tmp_path / "resumed"), "--resume", "auto"])
        assert code == 0
    undeterministic = sorted({str(w.message).split(" does not have a deterministic")[0]
                              for w in caught if "does not have a deterministic" in str(w.message)})

    def final(folder):
        latest = torch.load(folder / "latest.pth", weights_only=True)
        logged = {}
        for line in open(folder / "metrics.jsonl"):
            record = json.loads(line)
            logged[record["iter"]] = {k: v for k, v in record.items() if k.startswith("loss")}
        return {"model": torch.load(folder / "VOC_4.pth", weights_only=True),
                "D": torch.load(folder / "VOC_4_D.pth", weights_only=True),
                "optimizers": latest["optimizers"], "streams": latest["streams"], "rng": latest["rng"],
                "iteration": latest["iteration"], "losses": logged}

    a, b = final(tmp_path / "resumed"), final(tmp_path / "reference")
    assert sorted(a["losses"]) == sorted(b["losses"]) == [0, 1, 2, 3]  # no iteration logged twice
    assert a["iteration"] == b["iteration"] == 4
    assert_identical(a["streams"], b["streams"])
    assert_identical(a["rng"], b["rng"])
    differences = {}
    for part in ("model", "D"):
        for key in a[part]:
            differences[f"{part}.{key}"] = float((a[part][key].double() - b[part][key].double()).abs().max())
    largest = max(differences.values())
    identical = largest == 0 and a["losses"] == b["losses"] and equal(a["optimizers"], b["optimizers"])
    if not undeterministic:
        assert identical, f"no nondeterministic operation reported, yet the runs differ (largest {largest:.3g})"
        note("exact resume: bit-identical under torch.use_deterministic_algorithms")
        return
    note(f"exact resume: {'bit-identical' if identical else 'not bit-identical'}; operations without a "
         f"deterministic {DEVICE.type} kernel: {', '.join(undeterministic)}; largest weight difference "
         f"{largest:.3g}; iteration, loader positions and RNG states identical", operations=undeterministic)
    assert largest <= 2e-3, max(differences, key=differences.get)
    for i, losses in b["losses"].items():
        for name, value in losses.items():
            assert within(a["losses"][i][name], value, 1e-3, 1e-6), (i, name, a["losses"][i][name], value)


def equal(a, b):
    try:
        assert_identical(a, b)
        return True
    except AssertionError:
        return False


# ---------------------------------------------------------------- SyncBatchNorm and NCCL (last: a hang here
# costs only what follows it)

@needs_cuda
def test_sync_batchnorm_under_a_one_process_nccl_group(synth, tmp_path):
    """--sync-bn's path of engine/setup.prepare_module on a real NCCL group of one process: every BN
    becomes a SyncBatchNorm sharing the (frozen) affine parameters, the model is wrapped in DDP, and
    a forward/backward gives the plain model's logits and gradients (with one process SyncBatchNorm
    normalises like BatchNorm; the cross-GPU reduction itself needs several GPUs). DDP's gradient
    all-reduce runs through NCCL."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from engine.setup import prepare_module
    from model import build_segmenter

    assert dist.is_nccl_available()
    no_tf32()
    torch.cuda.set_device(DEVICE.index or 0)
    dist.init_process_group("nccl", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = build_segmenter("resnet101", NUM_CLASSES).to(DEVICE).train()
        converted = build_segmenter("resnet101", NUM_CLASSES)
        converted.load_state_dict(plain.state_dict())
        converted.to(DEVICE).train()
        frozen = {n for n, p in converted.named_parameters() if not p.requires_grad}
        # prepare_module takes its distributed branch for a multi-process env; here the group has one
        env = types.SimpleNamespace(device=DEVICE, distributed=True)
        wrapped, bare = prepare_module(converted, env, sync_bn=True)
        assert isinstance(wrapped, DistributedDataParallel) and wrapped.module is bare
        assert not any(type(m) is torch.nn.BatchNorm2d for m in bare.modules())
        assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in bare.modules()) > 0
        assert {n for n, p in bare.named_parameters() if not p.requires_grad} == frozen
        images = train_batches(synth, ("labeled",), batch_size=2)["labeled"][0].to(DEVICE)
        out_plain, out_sync = plain(images), wrapped(images)
        out_plain.float().square().mean().backward()
        out_sync.float().square().mean().backward()
        torch.cuda.synchronize()
        assert relative_error(out_sync, out_plain) <= 1e-5
        grads = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
        synced = dict(bare.named_parameters())
        assert grads and all(relative_error(synced[n].grad, g) <= 1e-4 for n, g in grads.items())
        # running statistics are updated as BatchNorm updates them
        assert relative_error(bare.bn1.running_mean, plain.bn1.running_mean) <= 1e-5
    finally:
        dist.destroy_process_group()
        shutil.rmtree(tmp_path / "store", ignore_errors=True)


def test_legacy_sgd_multi_tensor_form_is_bit_identical_on_the_device():
    """The multi-tensor LegacySGD (fused foreach kernels on CUDA) against its per-tensor form."""
    from tests.test_fidelity import legacy_runs
    for momentum, decay in ((0.9, 5e-4), (0.0, 5e-4)):
        (a, buffers_a), (b, buffers_b) = legacy_runs(DEVICE, momentum, decay)
        worst = max(float((x - y).abs().max()) for x, y in zip(a + buffers_a, b + buffers_b))
        assert worst == 0, f"momentum {momentum}: largest difference {worst}"


@needs_cuda
def test_a_deferred_step_does_not_synchronise(synth):
    """The s4GAN and supervised steps on CUDA queue their work without waiting for the device:
    CUDA's synchronisation detector, set to raise, sees no synchronising call in two iterations."""
    from methods.s4gan import S4GANStep
    from methods.supervised import SupervisedStep
    from model import build_discriminator, build_segmenter
    from utils.amp import Precision
    from utils.optim import segmenter_optimizer

    torch.manual_seed(0)
    model = build_segmenter("resnet18", NUM_CLASSES).to(DEVICE).train()
    d = build_discriminator(NUM_CLASSES).to(DEVICE).train()
    optimizer = segmenter_optimizer(model, 2.5e-4, 0.9, 5e-4, "legacy")
    optimizer_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.9, 0.99))
    batches = train_batches(synth, ("labeled", "unlabeled", "real"))
    for amp in ("off", "bf16"):
        steps = {"full": SupervisedStep(model, optimizer, Precision(amp, DEVICE), input_size=CROP, ignore_label=255,
                                        device=DEVICE),
                 "s4gan": S4GANStep(model, d, optimizer, optimizer_d, Precision(amp, DEVICE), num_classes=NUM_CLASSES,
                                    ignore_label=255, input_size=CROP, lambda_fm=0.1, lambda_st=1.0, threshold_st=0.5,
                                    device=DEVICE)}
        for kind, step in steps.items():
            inputs = {k: v for k, v in batches.items() if k in step.streams}
            step(0, **inputs)  # the first call may set things up (cuDNN plans, optimizer state)
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                values = step(1, **inputs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            assert all(v.device == DEVICE for v in values.values() if isinstance(v, torch.Tensor)), kind


def test_mlmt_views_made_on_the_device_match_the_cpu(note):
    """train_mlmt.py --augment-on-device: the same batch of views on the device and on the CPU (the
    same float32 operations; a rounding at .5 may land on the other side)."""
    from methods.mlmt.views import unlabeled_views
    from methods.mlmt.labels import view_draws

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (16, 3, 64, 64), dtype=np.uint8))
    draws = torch.from_numpy(np.stack([view_draws(np.random.default_rng(k)) for k in range(16)]))
    teacher, student = unlabeled_views(images, draws)
    teacher_d, student_d = unlabeled_views(images.to(DEVICE), draws.to(DEVICE))
    assert torch.equal(teacher_d.cpu(), teacher)
    difference = (student_d.cpu().int() - student.int()).abs()
    assert difference.max() <= 1 and difference.float().mean() < 1e-3
    note(f"MLMT device views: teacher identical, student {int((difference > 0).sum())} of {difference.numel()} "
         f"values differ by 1 from the CPU's")
