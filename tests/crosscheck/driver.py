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

import old_optim
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

REAL_DATALOADER = torch.utils.data.DataLoader  # a task may replace torch.utils.data.DataLoader by a Loaders'


class Loaders:
    """Stands in for torch.utils.data's DataLoader and SubsetRandomSampler inside one script.

    Loaders are numbered in the order the script creates them (the s4GAN trainers: labeled,
    unlabeled, real, then validation). `passes[k]` is a list of passes for loader k, each a list
    of batches: the n-th iter() over loader k yields pass n. A loader in `real` is a real
    DataLoader over the script's own dataset (validation). Iterating any other loader without
    passes raises StopSetup (the script has built everything it builds before its loop).
    Recorded per loader: its dataset, the keyword arguments it was created with (batch size,
    shuffle, drop_last, sampler), and the iteration (`clock()`) of every iter() the script calls."""

    def __init__(self, passes=None, real=(), clock=lambda: None):
        self.passes, self.real, self.clock = passes or {}, set(real), clock
        self.datasets, self.sampler_indices, self.loader_samplers, self.batch_sizes = [], [], [], []
        self.options, self.iter_calls = [], []

    def sampler(self, indices, *args, **kwargs):
        self.sampler_indices.append(np.asarray(indices).copy())
        return ("sampler", len(self.sampler_indices) - 1)

    def loader(self, dataset, batch_size=1, shuffle=False, sampler=None, **kwargs):
        number = len(self.datasets)
        self.datasets.append(dataset)
        self.batch_sizes.append(batch_size)
        self.loader_samplers.append(sampler[1] if isinstance(sampler, tuple) else None)
        self.options.append({"batch_size": batch_size, "shuffle": shuffle, "drop_last": kwargs.get("drop_last", False),
                             "sampler": self.loader_samplers[-1]})
        self.iter_calls.append([])
        if number in self.real:
            real = REAL_DATALOADER(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=kwargs.get("drop_last", False))
            self.iter_calls[-1] = None
            return real
        owner = self

        class Loader:
            served = 0

            def __iter__(self):
                passes = owner.passes.get(number)
                if passes is None:
                    raise StopSetup(number)
                owner.iter_calls[number].append(owner.clock())
                Loader.served += 1
                return iter(passes[Loader.served - 1])

            def __len__(self):
                return len((owner.passes.get(number) or [[]])[0])

        Loader.dataset = dataset
        return Loader()

    def namespace(self):
        """What `from torch.utils import data` gives a script: data.DataLoader, data.sampler.SubsetRandomSampler."""
        return types.SimpleNamespace(DataLoader=self.loader, sampler=types.SimpleNamespace(SubsetRandomSampler=self.sampler))

    def record(self):
        return {"sampler_indices": self.sampler_indices, "loader_options": self.options,
                "iter_calls": self.iter_calls}


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
    ids = [[i["file_name"] for i in d.ids] if isinstance(getattr(d, "ids", None), list) and d.ids and
           isinstance(d.ids[0], dict) else None for d in loaders.datasets]  # PASCAL-Context: Detail's order
    return {"items": items, "sampler_indices": loaders.sampler_indices, "loader_samplers": loaders.loader_samplers,
            "batch_sizes": loaders.batch_sizes, "files": files, "ids": ids, "lengths": [len(d) for d in loaders.datasets]}


@task
def defaults(spec):
    """Each original script's flags parsed from an empty command line (evaluate.py: its
    get_arguments()): {script: {"values": vars(args), "options": {option string: dest}}}, the options
    read from the parser the script built."""
    import argparse
    out, parsers = {}, []
    real_parse = argparse.ArgumentParser.parse_args

    def parse_args(self, *args, **kwargs):
        parsers.append(self)
        return real_parse(self, *args, **kwargs)

    argparse.ArgumentParser.parse_args = parse_args
    for script in spec["scripts"]:
        if script == "evaluate":
            sys.argv = ["evaluate.py"]
            args = importlib.import_module("evaluate").get_arguments()
        else:
            args = import_script(script, []).args
        options = {o: a.dest for a in parsers[-1]._actions for o in a.option_strings if o.startswith("--")}
        out[script] = {"values": dict(vars(args)), "options": options}
    return out


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


def parameter_names(module):
    return {id(p): name for name, p in module.named_parameters()}


def recording_optimizer(base, log, names_of):
    """`base` whose step() records each parameter's gradient, how many times each tensor is listed in
    the groups, the groups' learning rates, and each tensor and its optimizer state after the step."""

    class Recording(base):
        def step(self, closure=None):
            names = names_of()
            repeats, unique = {}, {}
            for g in self.param_groups:
                for p in g["params"]:
                    repeats[names[id(p)]] = repeats.get(names[id(p)], 0) + 1
                    unique[names[id(p)]] = p
            entry = {"lr": [g["lr"] for g in self.param_groups], "repeats": repeats,
                     "grads": {n: p.grad.detach().clone() for n, p in unique.items() if p.grad is not None}}
            super().step(closure)
            entry["after"] = {n: p.detach().clone() for n, p in unique.items()}
            entry["state"] = {n: {k: v.detach().clone() for k, v in self.state[p].items()
                                  if isinstance(v, torch.Tensor) and v.dim()} for n, p in unique.items()
                              if p in self.state}
            log.append(entry)

    return Recording


# The optimizers of the PyTorch the script was written for (old_optim.py), or today's.
OPTIMIZERS = {"sgd041": old_optim.SGD041, "sgd1x": old_optim.SGD1x, "adam041": old_optim.Adam041,
              "adam": torch.optim.Adam}


@task
def train_loop(spec):
    """Iterations of train_s4GAN.py, train_s4GAN_wrn38.py or train_full.py's loop on the test's batches.

    spec: script, argv, passes (the batches of the training loaders: 0, 1, 2 for the s4GAN trainers,
    0 for train_full), real_loaders (the loaders built for real: WRN-38 validation), rng_states (the
    global torch RNG state at the start of each iteration on our side: the same dropout masks),
    thresholds (optional: --threshold-st for each iteration, set in the script's args before it),
    resync_s (optional: {iteration: our files of S's state at its start (our_start_state)}: loaded
    into S at that iteration's start; D, the optimizers' states and everything else follow the
    original's own run),
    record_dir (where each iteration's whole-network tensors go: theirs_<i>.pt, named in the
    iteration's record as 'file'; the optimizers' states only at iteration spec['state_at']),
    optimizers ({'S': rule, 'D': rule} from OPTIMIZERS: the SGD and Adam of the PyTorch the script
    ran on). Returns one record per iteration: the values loss_calc returned (L_ce, then L_st when it
    is used), the loss terms as main()'s locals held them when L_S.backward() was called,
    find_good_maps' count, D scores and pseudo-labels, D's outputs of each call, the tensors
    backward() was called on, each optimizer's step (listings and learning rates; its gradients,
    parameters after it and the optimizer's state in the iteration's file); the validations (iteration, the (ground truth, prediction) pairs given to the
    metric, its printed table); the loaders' options and iter() calls; the states of S (and D) before
    the first iteration and after the last; what main() printed."""
    torch.nn.DataParallel = RegisteringDataParallel
    mod = import_script(spec["script"], spec["argv"])
    s4gan = hasattr(mod, "find_good_maps")
    created = []
    if not s4gan:  # train_full.py: S is not wrapped in DataParallel
        build = mod.Res_Deeplab
        mod.Res_Deeplab = lambda *args, **kwargs: created.append(build(*args, **kwargs)) or created[-1]
    iterations, record = [], {"validations": [], "scalars": []}

    def model_s():
        return WRAPPED[-2].module if s4gan else created[-1]

    def now():
        return iterations[-1] if iterations else {"iteration": None}

    loaders = Loaders(spec["passes"], spec.get("real_loaders", ()), clock=lambda: now()["iteration"])
    mod.data = loaders.namespace()

    heavy = {}  # the current iteration's whole-network tensors, saved to its own file (spec['record_dir'])

    def flush():
        if heavy:
            path = os.path.join(spec["record_dir"], f"theirs_{now()['iteration']}.pt")
            torch.save(dict(heavy), path)
            now()["file"] = path
            heavy.clear()

    class Log:  # what recording_optimizer appends to: the current iteration's entry
        def __init__(self, key):
            self.key = key

        def append(self, entry):
            heavy[self.key] = {k: entry.pop(k) for k in ("grads", "after", "state")}
            if now()["iteration"] != spec.get("state_at"):  # the optimizer's state: at one iteration only
                del heavy[self.key]["state"]
            now()[self.key] = entry

    mod.optim = types.SimpleNamespace(
        SGD=recording_optimizer(OPTIMIZERS[spec["optimizers"]["S"]], Log("sgd"), lambda: parameter_names(model_s())),
        Adam=recording_optimizer(OPTIMIZERS[spec["optimizers"].get("D", "adam")], Log("adam"),
                                 lambda: parameter_names(WRAPPED[-1].module)))
    adjust = mod.adjust_learning_rate

    def adjust_learning_rate(optimizer, i_iter):  # early in every iteration, before any batch is drawn
        if i_iter == 0:
            record["initial"] = states(model_s(), WRAPPED[-1] if s4gan else None)
        flush()
        iterations.append({"iteration": i_iter, "loss_calc": [], "d_calls": [], "backward": [], "locals": {}})
        torch.set_rng_state(spec["rng_states"][i_iter])
        if i_iter in spec.get("resync_s", {}):  # S's weights and BN statistics only (see the test)
            model_s().load_state_dict(our_start_state(spec["resync_s"][i_iter]))
        if spec.get("thresholds"):
            mod.args.threshold_st = spec["thresholds"][i_iter]
        return adjust(optimizer, i_iter)

    mod.adjust_learning_rate = adjust_learning_rate
    loss_calc = mod.loss_calc
    mod.loss_calc = lambda pred, label, gpu: _keep(now()["loss_calc"], loss_calc(pred, label, gpu))
    if s4gan:
        find_good_maps = mod.find_good_maps

        def find_good_maps_recorded(d_outs, pred_all):
            result = find_good_maps(d_outs, pred_all)
            now()["selected"] = {"count": result[2], "scores": d_outs.detach().clone(),
                                 "pseudo_labels": result[1].detach().clone() if result[2] else None}
            return result

        mod.find_good_maps = find_good_maps_recorded
        real_forward = RegisteringDataParallel.forward

        def forward_recorded(self, *inputs, **kwargs):
            out = real_forward(self, *inputs, **kwargs)
            if self is WRAPPED[-1]:
                now()["d_calls"].append(tuple(o.detach().clone() for o in out))
            return out

        RegisteringDataParallel.forward = forward_recorded
    if hasattr(mod, "validate"):
        watch_validation(mod, record, now)

    def on_backward(loss, caller):
        entry = now()
        if not entry["backward"]:  # L_S (or train_full's loss): the terms main() holds at that moment
            entry["locals"] = {k: float(caller[k]) for k in ("loss_ce", "loss_fm", "loss_st", "loss")
                               if k in caller and isinstance(caller[k], (torch.Tensor, float))}
        entry["backward"].append(loss)

    stdout = run_recording_backward(mod.main, on_backward)
    flush()
    record.update(iterations=iterations, stdout=stdout, final=states(model_s(), WRAPPED[-1] if s4gan else None),
                  **loaders.record())
    return record


def our_start_state(files):
    """Our S at an iteration's start, from the test's files: the initial state ('initial'), the
    parameters as our previous step left them ('previous': its record's sgd/after) and the buffers
    saved at the start ('current': its record's buffers)."""
    state = torch.load(files["initial"], weights_only=False)
    state.update(torch.load(files["previous"], weights_only=False)["sgd"]["after"])
    state.update(torch.load(files["current"], weights_only=False)["buffers"])
    return state


def states(model_s, model_d):
    out = {"S": bare(model_s.state_dict())}
    if model_d is not None:
        out["D"] = bare(model_d.state_dict())
    return out


def watch_validation(mod, record, now):
    """train_s4GAN_wrn38.py's validate() runs for real on its own validation loader. Its call of the
    metric passes the script's args first, which utils.metric.get_iou does not take (a TypeError that
    stopped every run of the original at its first validation): the call is passed on without it, and
    the (ground truth, prediction) pairs and the printed table are recorded. The TensorBoard writer
    records the scalars instead of writing event files (get_iou returns nothing to log)."""
    real_get_iou, real_validate = mod.get_iou, mod.validate
    metric = importlib.import_module("utils.metric")
    real_jaccard = metric.ConfusionMatrix.jaccard

    def jaccard(self):
        result = real_jaccard(self)
        record["validations"][-1].update(miou=float(result[0]), iou=[float(v) for v in result[1]],
                                         confusion=np.asarray(result[2]))
        return result

    metric.ConfusionMatrix.jaccard = jaccard

    def get_iou(script_args, data_list, class_num, save_path=None):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            result = real_get_iou(data_list, class_num, save_path)
        record["validations"][-1].update(pairs=[(np.asarray(gt), np.asarray(pred)) for gt, pred in data_list],
                                         printed=printed.getvalue())
        with open(save_path) as f:
            record["validations"][-1]["result_txt"] = f.read()
        return result

    def validate(*args):
        record["validations"].append({"after": now()["iteration"]})
        return real_validate(*args)

    class Writer:
        def __init__(self, *args, **kwargs):
            pass

        def add_scalar(self, tag, value, step):
            record["scalars"].append((tag, value, step))

    mod.get_iou, mod.validate, mod.SummaryWriter = get_iou, validate, Writer


def run_recording_backward(main, on_backward):
    """main(), each tensor that backward() is called on (the losses) passed to on_backward first,
    with the local variables of the function that called backward(); returns what main printed."""
    real_backward = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        on_backward(self.detach().clone(), sys._getframe(1).f_locals)
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
    """train_mlmt.py's epochs on the test's batches, from the test's initial student and teacher,
    its validations included (they write ./mlmt_output/<exp-name>/ under the working directory).

    spec: argv, passes ({0: labeled passes, 1: unlabeled passes}: the n-th iter() over a loader gets
    pass n), initial ({'student': state, 'teacher': state}, bare keys), optimizer (an OPTIMIZERS
    rule for the student's SGD). Records, per optimizer step: the losses, the learning rate, student
    and teacher after the step and the EMA update; per epoch: the learning rate; the loaders'
    options and iter() calls (the clock is the number of steps taken)."""
    import torchvision
    torch.nn.DataParallel = RegisteringDataParallel
    real_resnet101 = torchvision.models.resnet101
    torchvision.models.resnet101 = lambda pretrained=False, **kwargs: real_resnet101(weights=None)
    mod = import_script("train_mlmt", spec["argv"])
    loaders = Loaders(spec["passes"], real=(2,), clock=lambda: mod.global_step)
    torch.utils.data.DataLoader = loaders.loader
    mod.SubsetRandomSampler = loaders.sampler
    record = {"epochs": [], "steps": [], "class_loss": [], "cons_loss": [], "backward": []}
    real_train, real_update = mod.train, mod.update_ema_variables
    rule = OPTIMIZERS[spec.get("optimizer", "sgd041")]
    torch.optim.SGD = rule  # the script calls torch.optim.SGD(...); this process runs nothing else

    def train(trainloader_lab, trainloader_unlab, model, model_mt, optimizer, epoch):
        if epoch == 0:
            model.load_state_dict({"module." + k: v for k, v in spec["initial"]["student"].items()})
            model_mt.load_state_dict({"module." + k: v for k, v in spec["initial"]["teacher"].items()})
        record["epochs"].append({"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]})
        real_train(trainloader_lab, trainloader_unlab, model, model_mt, optimizer, epoch)

    def update_ema_variables(model, ema_model, alpha, global_step):
        real_update(model, ema_model, alpha, global_step)
        record["steps"].append({"global_step": global_step, "student": bare(model.state_dict()),
                                "teacher": bare(ema_model.state_dict())})

    mod.train, mod.update_ema_variables = train, update_ema_variables
    cosine_loss = mod.cosine_loss
    mod.cosine_loss = lambda p, q: _keep(record["cons_loss"], cosine_loss(p, q))
    real_bce = torch.nn.BCELoss

    class RecordingBCE(real_bce):
        def forward(self, *args):
            return _keep(record["class_loss"], super().forward(*args))

    torch.nn.BCELoss = RecordingBCE
    record["stdout"] = run_recording_backward(mod.main, lambda loss, caller: record["backward"].append(loss))
    record.update(loaders.record())
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
    the dataset's items spec['items'] (indices, or Cityscapes frame names); with spec['logits'], the
    segmenter's output for each image (a forward hook on every module of class 'ResNet', the
    original's DeepLabv2)."""
    mod = importlib.import_module("evaluate")
    metric = importlib.import_module("utils.metric")
    record = {"logits": []}
    if spec.get("logits"):
        torch.nn.modules.module.register_module_forward_hook(
            lambda module, inputs, output: record["logits"].append(output.detach().clone())
            if type(module).__name__ == "ResNet" else None)
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


@task
def s4gan_timed(spec):
    """train_s4GAN.py's loop timed, on the device the spec names ('cuda': its .cuda() calls are
    real). spec: argv, batch (one collated batch, served to all three loaders at every iteration:
    no loading is timed). Returns the wall time at the start of each iteration (after the device
    finished the previous one) and what the script printed. The optimizers are PyTorch 0.4's
    (old_optim.py), the updates the original ran."""
    mod = import_script("train_s4GAN", spec["argv"])
    steps = spec["num_steps"]
    mod.data = Loaders({k: [[spec["batch"]] * steps] * 2 for k in range(3)}).namespace()
    mod.optim = types.SimpleNamespace(SGD=old_optim.SGD041, Adam=old_optim.Adam041)
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


def sorted_walk(top, *args, **kwargs):
    """os.walk with each folder's entries in sorted order. The original's Cityscapes loader lists its
    files in the order of an unsorted directory walk (the file system's), ours in sorted order: a
    documented difference (docs/original.md, "Cityscapes"), set aside where a test compares what
    comes after the order (which validation images come first in each batch)."""
    for folder, dirs, files in REAL_WALK(top, *args, **kwargs):
        dirs.sort()
        yield folder, dirs, sorted(files)


REAL_WALK = os.walk


def main():
    checkout, name, in_path, out_path = sys.argv[1:5]
    spec = torch.load(in_path, weights_only=False)
    shims.install(checkout, cuda=spec.get("cuda", False))
    torch.set_num_threads(spec.get("threads", 2))
    if spec.get("deterministic"):
        torch.use_deterministic_algorithms(True)
    os.chdir(spec.get("workdir", os.getcwd()))
    if spec.get("sorted_walk"):  # the original's file lists in sorted order, as ours (see sorted_walk)
        os.walk = sorted_walk
    result = TASKS[name](spec)
    torch.save(result, out_path)


if __name__ == "__main__":
    main()
