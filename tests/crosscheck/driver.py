"""Executes the authors' code (a checkout of github.com/sud0301/semisup-semseg) for the crosscheck
tests, in a process of its own (its packages `model`, `data` and `utils` share our names):

    python tests/crosscheck/driver.py CHECKOUT TASK INPUT OUTPUT

INPUT is a torch.save'd dict written by the test (the task's arguments: a script's command line,
the batches and random draws to use, a working directory); OUTPUT receives what the original
computed. Nothing here computes a result of its own: each task runs the original's functions or its
script's main() and records what they produce, through wrappers around the names the script looks up
(its DataLoader, optimizers, loss helpers, D's calls), so that the original's code runs unchanged.
The shims that let it run on today's stack are in shims.py.
"""
import contextlib
import importlib
import io
import os
import sys
import time
import types

import numpy as np
import torch

import shims
from draws import DrawMismatch, ForcedDraws

TASKS = {}


def task(fn):
    TASKS[fn.__name__] = fn
    return fn


class StopSetup(Exception):
    """Raised when the script first iterates a loader the test gave no batches for."""


def import_script(name, argv):
    """The original's training scripts parse sys.argv when imported."""
    sys.argv = [name + ".py"] + [str(a) for a in argv]
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def bare(state):
    return {k[len("module."):] if k.startswith("module.") else k: v.detach().clone() for k, v in state.items()}


# ------------------------------------------------------------------------------------------------
# The loaders of a script: datasets and sampler indices recorded, batches served by the test

class Loaders:
    """Stands in for torch.utils.data's DataLoader and SubsetRandomSampler inside one script.

    Loaders are numbered in the order the script creates them (the s4GAN trainers: labeled,
    unlabeled, real, then validation). `passes[k]` is a list of passes for loader k, each a list
    of batches: the n-th iter() over loader k yields pass n. Iterating a loader without passes
    raises StopSetup (the script has built everything it builds before its loop)."""

    def __init__(self, passes=None):
        self.passes = passes or {}
        self.datasets, self.sampler_indices, self.loader_samplers, self.batch_sizes = [], [], [], []

    def sampler(self, indices, *args, **kwargs):
        self.sampler_indices.append(np.asarray(indices).copy())
        return ("sampler", len(self.sampler_indices) - 1)

    def loader(self, dataset, batch_size=1, shuffle=False, sampler=None, **kwargs):
        number = len(self.datasets)
        self.datasets.append(dataset)
        self.batch_sizes.append(batch_size)
        self.loader_samplers.append(sampler[1] if isinstance(sampler, tuple) else None)
        owner = self

        class Loader:
            served = 0

            def __iter__(self):
                passes = owner.passes.get(number)
                if passes is None:
                    raise StopSetup(number)
                Loader.served += 1
                return iter(passes[Loader.served - 1])

            def __len__(self):
                return len((owner.passes.get(number) or [[]])[0])

        Loader.dataset = dataset
        return Loader()

    def namespace(self):
        """What `from torch.utils import data` gives a script: data.DataLoader, data.sampler.SubsetRandomSampler."""
        return types.SimpleNamespace(DataLoader=self.loader, sampler=types.SimpleNamespace(SubsetRandomSampler=self.sampler))


def run_until_loop(main):
    try:
        main()
    except StopSetup:
        pass


# ------------------------------------------------------------------------------------------------
# Forced random draws

@contextlib.contextmanager
def forced(draws, random_modules=()):
    """The original's random calls inside the block answered from `draws` (see draws.py)."""
    fake = ForcedDraws(draws)
    saved = [(module, module.random) for module in random_modules]
    for module in random_modules:
        module.random = fake
    real_choice, real_rand = np.random.choice, torch.rand
    import torchvision.transforms as T
    real_jitter = T.ColorJitter.get_params

    def choice(n, *args, **kwargs):
        assert n == 2 and not args and not kwargs, "the original draws np.random.choice(2) only"
        return fake.take("np_choice", (2,))

    def rand(*size, **kwargs):
        assert tuple(size) == (1,), "the original draws torch.rand(1) only"
        return torch.tensor([fake.take("torch_rand")], dtype=torch.float32)

    def jitter(brightness, contrast, saturation, hue):
        order, b, c, s, h = fake.take("jitter", (tuple(brightness), tuple(contrast), tuple(saturation), tuple(hue)))
        return torch.tensor(order), b, c, s, h

    np.random.choice, torch.rand, T.ColorJitter.get_params = choice, rand, staticmethod(jitter)
    try:
        yield fake
        fake.finish()
    finally:
        np.random.choice, torch.rand, T.ColorJitter.get_params = real_choice, real_rand, real_jitter
        for module, value in saved:
            module.random = value


def resolve(dataset, index):
    """An item given by name: its position in the dataset's own file order (Cityscapes: os.walk's)."""
    if not isinstance(index, str):
        return index
    files = dataset.files[dataset.split]
    matches = [k for k, path in enumerate(files) if os.path.basename(path).startswith(index + "_")]
    assert len(matches) == 1, (index, files)
    return matches[0]


def indexed(dataset, items, random_modules):
    out = []
    for index, draws in items:
        index = resolve(dataset, index)
        if draws is None:
            out.append(dataset[index])
            continue
        try:
            with forced(draws, random_modules):
                out.append(dataset[index])
        except DrawMismatch as exc:
            out.append({"mismatch": f"item {index}: {exc}"})
    return out


# ------------------------------------------------------------------------------------------------
# Tasks

@task
def capture(spec):
    """Run a script's main() until its loop; index the datasets it built (spec['items']: {loader
    number: [(index, draws or None)]}); return those items, the sampler indices and the file order."""
    loaders = Loaders()
    if spec["script"] == "evaluate":
        mod = importlib.import_module("evaluate")
        sys.argv = ["evaluate.py"] + [str(a) for a in spec["argv"]]
    else:
        mod = import_script(spec["script"], spec["argv"])
    mod.data = loaders.namespace()
    run_until_loop(mod.main)
    modules = [importlib.import_module(m) for m in ("data.base", "data.augmentations", "data.voc_dataset")]
    items = {number: indexed(loaders.datasets[number], wanted, modules)
             for number, wanted in spec.get("items", {}).items()}
    files = [getattr(d, "files", None) if isinstance(getattr(d, "files", None), dict) else None
             for d in loaders.datasets]
    return {"items": items, "sampler_indices": loaders.sampler_indices, "loader_samplers": loaders.loader_samplers,
            "batch_sizes": loaders.batch_sizes, "files": files, "lengths": [len(d) for d in loaders.datasets]}


@task
def context_sizes(spec):
    """The sizes data/base.py's BaseDataset resizes to: in training (_sync_transform, the short side
    forced to each of spec['shorts'], no flip, no blur) and in evaluation (_val_sync_transform, base
    and crop 512), for every (w, h) of spec['train_shapes'] and spec['val_shapes']; read from its
    resize calls."""
    from PIL import Image
    base = importlib.import_module("data.base")
    asked = []
    real_resize = Image.Image.resize

    def resize(self, size, *args, **kwargs):
        asked.append(tuple(size))
        return real_resize(self, size, *args, **kwargs)

    Image.Image.resize = resize
    train = base.BaseDataset("", "train", mode="train", base_size=505, crop_size=321)
    val = base.BaseDataset("", "val", mode="val", base_size=512, crop_size=512)
    out = {"train": {}, "val": {}}
    with contextlib.redirect_stdout(io.StringIO()):
        for w, h in spec["train_shapes"]:
            image, mask = Image.new("L", (w, h)), Image.new("L", (w, h))
            for short in spec["shorts"]:
                with forced([("random", None, 0.75), ("randint", (252, 1010), short), ("randint", None, 0),
                             ("randint", None, 0), ("random", None, 0.75)], [base]):
                    asked.clear()
                    train._sync_transform(image, mask)
                out["train"][(w, h, short)] = asked[0]
        for w, h in spec["val_shapes"]:
            asked.clear()
            val._val_sync_transform(Image.new("L", (w, h)), Image.new("L", (w, h)))
            out["val"][(w, h)] = asked[0]
    return out


@task
def mlmt_items(spec):
    """train_mlmt.create_data_loaders() as the script builds them; items of its three datasets."""
    mod = import_script("train_mlmt", spec["argv"])
    lab, unlab, val = mod.create_data_loaders()
    modules = [importlib.import_module("data.dataset_processing")]
    datasets = {"labeled": lab.dataset, "unlabeled": unlab.dataset, "val": val.dataset}
    items = {name: indexed(datasets[name], wanted, modules) for name, wanted in spec["items"].items()}
    return {"items": items, "sampler_indices": {"labeled": np.asarray(lab.sampler.indices),
                                                "unlabeled": np.asarray(unlab.sampler.indices)}}


WRAPPED = []  # every nn.DataParallel the script creates, in order: the s4GAN trainers' S and D are the
# last two (the WRN-38 trunk wraps itself in one while it loads its ImageNet file)


class RegisteringDataParallel(torch.nn.DataParallel):
    def __init__(self, module, *args, **kwargs):
        super().__init__(module, *args, **kwargs)
        WRAPPED.append(self)


def parameter_names(wrapper):
    return {id(p): name for name, p in wrapper.module.named_parameters()}


def recording_optimizer(base, log, names_of, apply_step):
    """`base` whose step() records each parameter's gradient and the groups' learning rates (and,
    when it applies the step, the parameters after it)."""

    class Recording(base):
        def step(self, closure=None):
            names = names_of()
            seen, grads = set(), {}
            for group in self.param_groups:
                for p in group["params"]:
                    if id(p) not in seen and p.grad is not None:
                        grads[names[id(p)]] = p.grad.detach().clone()
                    seen.add(id(p))
            repeats = {}
            for group in self.param_groups:
                for p in group["params"]:
                    repeats[names[id(p)]] = repeats.get(names[id(p)], 0) + 1
            entry = {"lr": [g["lr"] for g in self.param_groups], "grads": grads, "repeats": repeats}
            if apply_step:
                super().step(closure)
                entry["after"] = {names[id(p)]: p.detach().clone()
                                  for g in self.param_groups for p in g["params"]}
            log.append(entry)

    return Recording


@task
def s4gan(spec):
    """Iterations of train_s4GAN.py / train_s4GAN_wrn38.py's loop on the test's batches.

    spec: script, argv, passes (the batches of loaders 0, 1, 2), rng_states (the global torch RNG
    state at the start of each iteration on our side: the same dropout masks), start_states (optional,
    {iteration: {'S': state, 'D': state}}: weights to start that iteration from), step_s (False: S's
    gradients are recorded but its update is skipped; PyTorch 0.4's update over the repeated lists
    cannot be run today). Returns one record per iteration: the values loss_calc returned (L_ce,
    then L_st when it is used), find_good_maps' count and D scores, D's outputs of each call, the
    tensors backward() was called on (L_S, L_D), each optimizer's gradients, learning rates and
    parameters after its step; and the states of S and D before the first and after the last."""
    torch.nn.DataParallel = RegisteringDataParallel
    mod = import_script(spec["script"], spec["argv"])
    loaders = Loaders(spec["passes"])
    mod.data = loaders.namespace()
    iterations, record = [], {"validate_after": []}

    def now():
        return iterations[-1]

    class Log:  # what recording_optimizer appends to: the current iteration's entry
        def __init__(self, key):
            self.key = key

        def append(self, entry):
            now()[self.key] = entry

    mod.optim = types.SimpleNamespace(
        SGD=recording_optimizer(torch.optim.SGD, Log("sgd"), lambda: parameter_names(WRAPPED[-2]), spec["step_s"]),
        Adam=recording_optimizer(torch.optim.Adam, Log("adam"), lambda: parameter_names(WRAPPED[-1]), True))
    adjust = mod.adjust_learning_rate

    def adjust_learning_rate(optimizer, i_iter):  # the first thing of every iteration
        if i_iter == 0:
            record["initial"] = {"S": bare(WRAPPED[-2].state_dict()), "D": bare(WRAPPED[-1].state_dict())}
        iterations.append({"iteration": i_iter, "loss_calc": [], "d_calls": [], "backward": []})
        torch.set_rng_state(spec["rng_states"][i_iter])
        start = spec.get("start_states", {}).get(i_iter)
        if start is not None:  # the iteration starts from our weights (and BN statistics)
            WRAPPED[-2].module.load_state_dict(start["S"])
            WRAPPED[-1].module.load_state_dict(start["D"])
        return adjust(optimizer, i_iter)

    mod.adjust_learning_rate = adjust_learning_rate
    loss_calc = mod.loss_calc
    mod.loss_calc = lambda pred, label, gpu: _keep(now()["loss_calc"], loss_calc(pred, label, gpu))
    find_good_maps = mod.find_good_maps

    def find_good_maps_recorded(d_outs, pred_all):
        result = find_good_maps(d_outs, pred_all)
        now()["selected"] = {"count": result[2], "scores": d_outs.detach().clone()}
        return result

    mod.find_good_maps = find_good_maps_recorded
    if hasattr(mod, "validate"):  # its get_iou call has the wrong signature: record when it would run
        mod.validate = lambda *args: (record["validate_after"].append(now()["iteration"]), (0.0, 0))[1]
    real_forward = RegisteringDataParallel.forward

    def forward_recorded(self, *inputs, **kwargs):
        out = real_forward(self, *inputs, **kwargs)
        if self is WRAPPED[-1]:
            now()["d_calls"].append(tuple(o.detach().clone() for o in out))
        return out

    RegisteringDataParallel.forward = forward_recorded
    stdout = run_recording_backward(mod.main, lambda loss: now()["backward"].append(loss))
    record.update(iterations=iterations, stdout=stdout, sampler_indices=loaders.sampler_indices,
                  final={"S": bare(WRAPPED[-2].state_dict()), "D": bare(WRAPPED[-1].state_dict())})
    return record


def run_recording_backward(main, on_backward):
    """main(), each tensor that backward() is called on (the losses) passed to on_backward first;
    returns what main printed."""
    real_backward = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        on_backward(self.detach().clone())
        return real_backward(self, *args, **kwargs)

    torch.Tensor.backward = backward
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            main()
    finally:
        torch.Tensor.backward = real_backward
    return stdout.getvalue()


def _keep(log, value):
    log.append(value.detach().clone() if isinstance(value, torch.Tensor) else value)
    return value


@task
def mlmt(spec):
    """train_mlmt.py's epochs on the test's batches, from the test's initial student and teacher.

    spec: argv, passes ({0: labeled passes, 1: unlabeled passes}, one pass per epoch), initial
    ({'student': state, 'teacher': state}, bare keys)."""
    import torchvision
    torch.nn.DataParallel = RegisteringDataParallel
    real_resnet101 = torchvision.models.resnet101
    torchvision.models.resnet101 = lambda pretrained=False, **kwargs: real_resnet101(weights=None)
    mod = import_script("train_mlmt", spec["argv"])
    loaders = Loaders(spec["passes"])
    torch.utils.data.DataLoader = loaders.loader
    mod.SubsetRandomSampler = loaders.sampler
    record = {"epochs": [], "class_loss": [], "cons_loss": [], "backward": []}
    real_train = mod.train

    def train(trainloader_lab, trainloader_unlab, model, model_mt, optimizer, epoch):
        if epoch == 0:
            model.load_state_dict({"module." + k: v for k, v in spec["initial"]["student"].items()})
            model_mt.load_state_dict({"module." + k: v for k, v in spec["initial"]["teacher"].items()})
        lr = optimizer.param_groups[0]["lr"]
        real_train(trainloader_lab, trainloader_unlab, model, model_mt, optimizer, epoch)
        record["epochs"].append({"epoch": epoch, "lr": lr, "student": bare(model.state_dict()),
                                 "teacher": bare(model_mt.state_dict())})

    mod.train = train
    cosine_loss = mod.cosine_loss
    mod.cosine_loss = lambda p, q: _keep(record["cons_loss"], cosine_loss(p, q))
    real_bce = torch.nn.BCELoss

    class RecordingBCE(real_bce):
        def forward(self, *args):
            return _keep(record["class_loss"], super().forward(*args))

    torch.nn.BCELoss = RecordingBCE
    record["stdout"] = run_recording_backward(mod.main, record["backward"].append)
    record["sampler_indices"] = loaders.sampler_indices
    return record


@task
def schedules(spec):
    """The learning rates the trainers' adjust_learning_rate(_D) set at the given iterations, on
    optimizers with the trainers' groups (S: the backbone and the 10x head; D: one group)."""
    out = {}
    for script, argv in spec["scripts"].items():
        mod = import_script(script, argv)
        rows = []
        for i in spec["iterations"]:
            s = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                                 {"params": [torch.zeros(1, requires_grad=True)]}], lr=1.0)
            mod.adjust_learning_rate(s, i)
            row = {"S": [g["lr"] for g in s.param_groups]}
            if hasattr(mod, "adjust_learning_rate_D"):
                d = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
                mod.adjust_learning_rate_D(d, i)
                row["D"] = [g["lr"] for g in d.param_groups]
            rows.append(row)
        out[script] = rows
    return out


@task
def evaluate(spec):
    """evaluate.py's main() with spec['argv']: each image's (ground truth, prediction) as scored,
    the dataset's order, its ConfusionMatrix.jaccard() result, the printed output and result.txt;
    and the dataset's items spec['items'] (indices, or Cityscapes frame names)."""
    mod = importlib.import_module("evaluate")
    metric = importlib.import_module("utils.metric")
    record = {}
    real_loader = torch.utils.data.DataLoader

    def loader(dataset, *args, **kwargs):
        record["dataset"] = dataset
        return real_loader(dataset, *args, **kwargs)

    mod.data = types.SimpleNamespace(DataLoader=loader)
    real_get_iou = mod.get_iou

    def get_iou(args, data_list, class_num, save_path=None):
        record["pairs"] = [(np.asarray(gt), np.asarray(pred)) for gt, pred in data_list]
        return real_get_iou(args, data_list, class_num, save_path)

    mod.get_iou = get_iou
    real_jaccard = metric.ConfusionMatrix.jaccard

    def jaccard(self):
        result = real_jaccard(self)
        record["jaccard"] = (float(result[0]), [float(v) for v in result[1]], np.asarray(result[2]))
        return result

    metric.ConfusionMatrix.jaccard = jaccard
    sys.argv = ["evaluate.py"] + [str(a) for a in spec["argv"]]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        mod.main()
    dataset = record.pop("dataset")
    record["items"] = [dataset[resolve(dataset, index)] for index in spec.get("items", [])]
    files = getattr(dataset, "files", None)
    if isinstance(files, dict):
        record["order"] = list(files[dataset.split])
    elif hasattr(dataset, "img_ids"):
        record["order"] = list(dataset.img_ids)
    elif hasattr(dataset, "ids"):
        record["order"] = [d["file_name"] for d in dataset.ids]
    record["stdout"] = stdout.getvalue()
    save_dir = spec["argv"][spec["argv"].index("--save-dir") + 1]
    with open(os.path.join(save_dir, "result.txt")) as f:
        record["result_txt"] = f.read()
    return record


class PerTensorSGD:
    """S's optimizer for `s4gan_timed` only: PyTorch 0.4's SGD (momentum, weight decay, no dampening)
    applied by a loop over each group's tensors, repeats included, as the original ran it. Today's
    torch.optim.SGD refuses the original's parameter lists (a parameter in two groups); these
    updates are timed, never compared with anything."""

    def __init__(self, groups, lr, momentum, weight_decay):
        self.param_groups = [{"params": list(g["params"]), "lr": g.get("lr", lr)} for g in groups]
        self.momentum, self.weight_decay, self.buffers = momentum, weight_decay, {}

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.detach_()
                    p.grad.zero_()

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad.add(p, alpha=self.weight_decay) if self.weight_decay else p.grad
                if self.momentum:
                    buf = self.buffers.get(p)
                    if buf is None:
                        buf = self.buffers[p] = d_p.clone()
                    else:
                        buf.mul_(self.momentum).add_(d_p)
                    d_p = buf
                p.add_(d_p, alpha=-group["lr"])


@task
def s4gan_timed(spec):
    """train_s4GAN.py's loop timed, on the device the spec names ('cuda': its .cuda() calls are
    real). spec: argv, batch (one collated batch, served to all three loaders at every iteration:
    no loading is timed). Returns the wall time at the start of each iteration (after the device
    finished the previous one) and what the script printed. S's update is PerTensorSGD's."""
    mod = import_script("train_s4GAN", spec["argv"])
    steps = spec["num_steps"]
    mod.data = Loaders({k: [[spec["batch"]] * steps] * 2 for k in range(3)}).namespace()
    mod.optim = types.SimpleNamespace(SGD=PerTensorSGD, Adam=torch.optim.Adam)
    adjust, starts = mod.adjust_learning_rate, []
    synchronize = torch.cuda.synchronize if spec.get("cuda") else (lambda: None)

    def adjust_learning_rate(optimizer, i_iter):  # called first in every iteration
        synchronize()
        starts.append(time.perf_counter())
        return adjust(optimizer, i_iter)

    mod.adjust_learning_rate = adjust_learning_rate
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        mod.main()
    return {"starts": starts, "stdout": stdout.getvalue()}


def main():
    checkout, name, in_path, out_path = sys.argv[1:5]
    spec = torch.load(in_path, weights_only=False)
    shims.install(checkout, cuda=spec.get("cuda", False))
    torch.set_num_threads(spec.get("threads", 2))
    if spec.get("deterministic"):
        torch.use_deterministic_algorithms(True)
    os.chdir(spec.get("workdir", os.getcwd()))
    result = TASKS[name](spec)
    torch.save(result, out_path)


if __name__ == "__main__":
    main()
