"""The two contracts: every registry entry fulfils its Protocol, and adding a segmenter or a dataset is
what docs/extending.md says.

- every segmenter of model.SEGMENTERS, with each of its backbones (at a tiny width where the entry
  has one), is a model.SegmenterModel that behaves: logits from images, parameter groups that cover
  every trainable tensor once, gradients for all but its declared unused parameters, its optional
  SGD hooks consistent with its groups, a state_dict that loads back;
- every dataset of data.DATASETS, built on the tests' small fixtures, gives data.SegmentationDataset
  items of the stated types and shapes, reproducibly, and its optional hooks behave;
- docs/extending.md, done as written in a copy of the repository: its example modules written, its
  registry entries made, its commands run (tiny sizes appended), every trainer and evaluate.py.
"""
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

import train_full
from data import (DATASETS, DeviceNormalized, Displayable, LabelFiles, SegmentationDataset, display_pair,
                  label_files, supports_uint8_eval)
from engine.evaluator import DeviceNormalizer
from model import (SEGMENTER_HOOKS, SEGMENTERS, HasUnusedParameters, LegacyMultiplicities, OriginalParamLists, SegmenterModel,
                   all_backbones, default_restore_from, unused_parameter_names)
from data.config import DataConfig
from tests.city_fixture import make_city
from tests.context_fixture import make_context_layout
from tests.helpers import ROOT, copy_repository
from tests.voc_fixture import make_voc
from utils.errors import UserError
from utils.optim import LegacySGD, segmenter_optimizer

# model option -> the value that makes an entry small enough for a test (the default otherwise)
TINY_OPTIONS = {"wrn_width_mult": 0.0625}
CROP = (33, 33)


# --- segmenters -----------------------------------------------------------------------------------

def segmenter_cases():
    return [pytest.param(name, backbone, id=f"{name}-{backbone}")
            for name, entry in SEGMENTERS.items() for backbone in entry.backbones]


def build(name, backbone, num_classes=5):
    defaults = train_full.get_args_parser().parse_args([])
    options = {o: TINY_OPTIONS.get(o, getattr(defaults, o)) for o in SEGMENTERS[name].options}
    if "aspp_branches" in options and options["aspp_branches"] is None:  # the profile fills it in a run
        options["aspp_branches"] = 2
    torch.manual_seed(0)
    return SEGMENTERS[name].build(backbone, num_classes, **options)


def test_every_segmenter_entry_is_well_formed():
    flags = vars(train_full.get_args_parser().parse_args([]))
    assert set(all_backbones()) == {b for entry in SEGMENTERS.values() for b in entry.backbones}
    for name, entry in SEGMENTERS.items():
        assert callable(entry.build) and entry.backbones and all(isinstance(b, str) for b in entry.backbones)
        assert set(entry.options) <= set(flags), f"{name}: options that are no flag"
        assert set(entry.imagenet_weights) <= set(entry.backbones)
        assert entry.load_imagenet is None or callable(entry.load_imagenet)
        assert isinstance(entry.min_batch, int) and entry.min_batch >= 1
        for backbone in entry.backbones:
            restore = default_restore_from(name, backbone)
            assert restore == "none" or restore.endswith(entry.imagenet_weights[backbone])


def test_a_models_own_flags_reach_every_script_with_model():
    """A flag an entry declares (ModelFlag) is accepted by the trainers and evaluate.py, with its settings."""
    import evaluate
    import train_s4GAN_wrn38
    parsers = [train_full.get_args_parser(), train_s4GAN_wrn38.get_args_parser(), evaluate.get_args_parser()]
    for entry in SEGMENTERS.values():
        for flag in entry.flags:
            for parser in parsers:
                action = next(a for a in parser._actions if a.dest == flag.name)
                assert action.default == flag.settings.get("default") and action.help == flag.settings["help"]


def test_every_method_keeps_the_step_contract():
    """methods.TrainingStep over every method: streams drawn from the two pools, a call taking the
    iteration (MLMT: and the epoch) and one batch of each stream by name."""
    import inspect
    from methods import POOLS, TrainingStep, methods
    for name, step in methods().items():
        assert isinstance(step.streams, dict) and step.streams, name
        assert set(step.streams.values()) <= set(POOLS), name
        assert next(iter(step.streams)) == "labeled", name  # position 0 seeds the labeled stream in every method
        parameters = list(inspect.signature(step.__call__).parameters)
        assert parameters[1] == "iteration" and set(step.streams) <= set(parameters), (name, parameters)
        assert isinstance(object.__new__(step), TrainingStep), name  # the members, without building one


def test_a_method_with_a_stream_of_its_own_needs_no_engine_change(tmp_path):
    """A method's streams ({stream: pool}) become the run's streams: a new one is drawn from its pool
    in an order of its own, and the streams declared before it keep their orders."""
    from engine import setup
    from engine.config import SplitConfig
    from utils.distributed import Env
    voc = make_voc(str(tmp_path / "voc"))
    data = DataConfig("pascal_voc", voc, 21, 255, os.path.join(voc, "lists", "train_aug.txt"), input_size=(33, 33))
    dataset, n = setup.make_train_dataset(data)
    perm = np.random.RandomState(0).permutation(n)

    def orders(streams):
        made = setup.make_streams(SplitConfig(0.5, None, 2), Env(torch.device("cpu")), dataset, perm, streams, n,
                                  1234, 0)
        return {name: [index for index, _ in stream.sampler] for name, stream in made.items()}, made
    s4gan, _ = orders({"labeled": "labeled", "unlabeled": "unlabeled", "real": "labeled"})
    more, made = orders({"labeled": "labeled", "unlabeled": "unlabeled", "real": "labeled", "strong": "unlabeled"})
    assert {k: more[k] for k in s4gan} == s4gan
    assert sorted(more["strong"]) == sorted(s4gan["unlabeled"]) == sorted(perm[n // 2:].tolist())
    assert more["strong"] != more["unlabeled"]  # its own order
    assert len(next(made["strong"])[0]) == 2


def smallest_backbone(name):
    """The entry's backbone with the fewest parameters (the one the training checks run on)."""
    return min(SEGMENTERS[name].backbones, key=lambda b: sum(p.numel() for p in build(name, b).parameters()))


@pytest.mark.parametrize("name,backbone", segmenter_cases())
def test_every_segmenter_fulfils_the_contract(name, backbone):
    """Members, parameter groups, optional hooks, and logits from one image in eval mode."""
    num_classes = 5
    model = build(name, backbone, num_classes)
    assert isinstance(model, nn.Module) and isinstance(model, SegmenterModel)
    # parameter groups: every trainable tensor in exactly one group, lr = base * lr_mult
    groups = model.optim_parameters(0.01)
    assert isinstance(groups, list) and groups
    listed = [id(p) for g in groups for p in g["params"]]
    assert len(listed) == len(set(listed)) and set(listed) == {id(p) for p in model.parameters() if p.requires_grad}
    for g in groups:
        assert g["lr"] == pytest.approx(0.01 * g["lr_mult"])
    # the optional hooks agree with the groups and the parameters
    unused = unused_parameter_names(model)
    assert isinstance(unused, list) and set(unused) <= {n for n, _ in model.named_parameters()}
    if isinstance(model, LegacyMultiplicities):
        counts = model.legacy_multiplicities()
        assert len(counts) == len(groups[0]["params"]) and all(isinstance(k, int) and k >= 1 for k in counts)
    if isinstance(model, OriginalParamLists):
        lists = model.original_param_lists()
        assert len(lists) == len(groups)
        assert [{id(p) for p in ps} for ps in lists] == [{id(p) for p in g["params"]} for g in groups]
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, 3, *CROP))
    assert logits.dtype == torch.float32 and logits.dim() == 4
    assert logits.shape[:2] == (1, num_classes) and logits.shape[2] <= CROP[0] and logits.shape[3] <= CROP[1]


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_every_segmenter_trains(name):
    """On its smallest backbone, in train mode on min_batch images: gradients reach every trainable
    parameter but the declared unused ones (what DDP needs), the default profile's optimizer steps
    (standard SGD said once for a model without the legacy hooks), and the state loads back."""
    backbone, num_classes = smallest_backbone(name), 5
    model = build(name, backbone, num_classes).train()
    images = torch.randn(max(SEGMENTERS[name].min_batch, 2), 3, *CROP)
    model(images).square().mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(n for n, p in trainable if p.grad is None) == sorted(unused_parameter_names(model))
    said = []
    optimizer = segmenter_optimizer(model, 0.01, 0.9, 5e-4, "legacy", say=said.append)
    hooks = isinstance(model, (LegacyMultiplicities, OriginalParamLists))
    assert len(said) == (0 if hooks else 1)
    before = [p.detach().clone() for _, p in trainable]
    optimizer.step()
    assert any(not torch.equal(a, p) for a, (_, p) in zip(before, trainable))
    fresh = build(name, backbone, num_classes)
    fresh.load_state_dict(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


class Plain(nn.Module):
    """A segmenter with the required members only."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, images):
        return self.conv(images)

    def optim_parameters(self, lr):
        return [{"params": list(self.parameters()), "lr": lr, "lr_mult": 1}]


def test_the_optional_hooks_fall_back():
    """Without the legacy hooks, --sgd-mode legacy is standard SGD, said once; standard says nothing;
    without unused_parameter_names, nothing is unused."""
    model = Plain()
    assert isinstance(model, SegmenterModel)
    assert not isinstance(model, SEGMENTER_HOOKS) and HasUnusedParameters in SEGMENTER_HOOKS
    assert unused_parameter_names(model) == []
    said = []
    legacy = segmenter_optimizer(model, 0.1, 0.9, 0.0, "legacy", say=said.append)
    assert type(legacy) is torch.optim.SGD and not isinstance(legacy, LegacySGD)
    assert len(said) == 1 and "standard SGD" in said[0] and "Plain" in said[0]
    standard = segmenter_optimizer(model, 0.1, 0.9, 0.0, "standard", say=said.append)
    assert type(standard) is torch.optim.SGD and len(said) == 1
    for optimizer in (legacy, standard):
        assert optimizer.param_groups[0]["lr_mult"] == 1
    with pytest.raises(ValueError):
        segmenter_optimizer(model, 0.1, 0.9, 0.0, "other")
    assert not isinstance(nn.Linear(2, 2), SegmenterModel)  # no optim_parameters


# --- datasets -------------------------------------------------------------------------------------

def _voc(base):
    root = make_voc(str(base / "voc"))
    return {"data_dir": root, "train_list": os.path.join(root, "lists", "train_aug.txt"),
            "val_list": os.path.join(root, "lists", "val.txt"), "num_classes": 21}


def _context(base):
    root = str(base / "context")
    os.makedirs(root)
    make_context_layout(root)
    return {"data_dir": root, "train_list": None, "val_list": None, "num_classes": 60}


def _city(base):
    return {"data_dir": make_city(str(base / "city")), "train_list": None, "val_list": None, "num_classes": 19}


# registry name -> the small fixture its builders read (a new entry needs one here)
FIXTURES = {"pascal_voc": _voc, "folder": _voc, "pascal_context": _context, "cityscapes": _city}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    base = tmp_path_factory.mktemp("contracts")
    made = {}
    for name, make in FIXTURES.items():
        if make not in made:
            (base / name).mkdir()
            made[make] = make(base / name)
    return {name: made[make] for name, make in FIXTURES.items()}


def flags(spec, fixture, split, **extra):
    """The DataConfig a builder reads."""
    values = dict(dataset=spec.name, data_dir=fixture["data_dir"], data_list=fixture[f"{split}_list"], input_size=CROP,
                  num_classes=spec.num_classes or fixture["num_classes"], ignore_label=spec.ignore_label)
    values.update(extra)
    return DataConfig(**values)


def check_item(item, dataset, index, num_classes, ignore_label):
    assert isinstance(item, tuple) and len(item) == 5
    image, label, size, name, got = item
    assert isinstance(image, np.ndarray) and image.dtype == np.float32 and image.ndim == 3 and image.shape[0] == 3
    assert isinstance(label, np.ndarray) and label.ndim == 2 and np.issubdtype(label.dtype, np.integer)
    assert isinstance(size, np.ndarray) and size.dtype == np.int64 and size.shape == (2,)
    assert name == dataset.ids[index] and got == index
    values = set(np.unique(label).tolist()) - {ignore_label}
    assert all(0 <= v < num_classes for v in values), values
    return image, label, size


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_fulfils_the_contract(name, fixtures, tmp_path):
    assert name in FIXTURES, f"--dataset {name} has no fixture in tests/test_contracts.py FIXTURES"
    spec, fixture = DATASETS[name], fixtures[name]
    assert spec.name == name and isinstance(spec.ignore_label, int) and spec.num_classes >= 0
    assert spec.palette.shape == (256, 3) and spec.palette.dtype == np.uint8
    num_classes = spec.num_classes or fixture["num_classes"]
    names = spec.class_names(num_classes, fixture["data_dir"])
    assert len(names) == num_classes and all(isinstance(n, str) for n in names)

    train = spec.build_train(flags(spec, fixture, "train"))
    assert isinstance(train, SegmentationDataset)
    assert len(train) == len(train.ids) >= 2 and all(isinstance(i, str) for i in train.ids)
    key = (7, 0, 0, 1)  # data/sampler.py's (seed, stream, epoch, position)
    first = train[(1, key)]
    image, label, size = check_item(first, train, 1, num_classes, spec.ignore_label)
    assert image.shape[1:] == CROP and label.shape == CROP
    again = train[(1, key)]
    assert all(np.array_equal(a, b) for a, b in zip(first[:3], again[:3])), "the key does not fix the sample"
    check_item(train[0], train, 0, num_classes, spec.ignore_label)
    batch = default_collate([train[(0, key)], first])  # the training loader's collate
    assert batch[0].shape == (2, 3, *CROP) and batch[1].shape == (2, *CROP)

    val = spec.build_val(flags(spec, fixture, "val"))
    assert isinstance(val, SegmentationDataset) and len(val) == len(val.ids) >= 1
    image, label, size = check_item(val[0], val, 0, num_classes, spec.ignore_label)
    assert 0 < size[0] <= label.shape[0] and 0 < size[1] <= label.shape[1]
    shown, truth = display_pair(val, 0)
    assert shown.dtype == np.uint8 and shown.shape == (*size, 3) and truth.shape == tuple(size)

    if supports_uint8_eval(val):  # optional: uint8 items normalised on the device to the float items' values
        assert isinstance(val, DeviceNormalized) and type(val).uint8_eval is False
        as_bytes = spec.build_val(flags(spec, fixture, "val"))
        as_bytes.uint8_eval = True
        raw, raw_label, raw_size, _, _ = as_bytes[0]
        assert raw.dtype == np.uint8 and raw.ndim == 3 and raw.shape[2] == 3 and np.array_equal(raw_size, size)
        assert np.array_equal(np.asarray(raw_label, np.int64), label)
        floats = DeviceNormalizer(as_bytes, torch.device("cpu"))(torch.from_numpy(np.array(raw))[None],
                                                                 torch.from_numpy(raw_size)[None])
        h, w = size
        assert torch.equal(floats[0, :, :h, :w], torch.from_numpy(image)[:, :h, :w])
    if isinstance(val, Displayable):
        assert isinstance(val.display(0)[0], np.ndarray)
    if isinstance(train, LabelFiles):  # optional: MLMT's and data.check's files
        assert label_files(train, name, "the test") is train
        assert os.path.isfile(train.image_path(train.ids[0])) and os.path.isfile(train.label_path(train.ids[0]))
        indices = train.label_indices(train.ids[0])
        assert indices.ndim == 2 and np.issubdtype(indices.dtype, np.integer)

    if spec.build_unlabeled is not None:  # optional: --unlabeled-list images, no labels
        listed = tmp_path / "unlabeled.txt"
        listed.write_text("\n".join(train.ids[:2]) + "\n")
        unlabeled = spec.build_unlabeled(flags(spec, fixture, "train", unlabeled_list=str(listed)))
        assert isinstance(unlabeled, SegmentationDataset) and list(unlabeled.ids) == train.ids[:2]
        _, label, _ = check_item(unlabeled[(0, key)], unlabeled, 0, num_classes, spec.ignore_label)
        assert label.shape == CROP and (label == spec.ignore_label).all()


class ItemsOnly:
    """A dataset with the required members only: ids, __len__, __getitem__."""

    def __init__(self, items):
        self.items, self.ids = items, [item[3] for item in items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item
        return self.items[index]


def test_the_optional_dataset_hooks_fall_back():
    """display_pair derives the montage's image from a float item (resized to a larger label), and
    label_files names what is missing."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 12, 10)).astype(np.float32)
    label = rng.integers(0, 3, (24, 20))
    dataset = ItemsOnly([(image, label, np.array([20, 16], np.int64), "a", 0)])
    assert isinstance(dataset, SegmentationDataset)
    assert not isinstance(dataset, (DeviceNormalized, Displayable, LabelFiles)) and not supports_uint8_eval(dataset)
    shown, truth = display_pair(dataset, 0)
    assert shown.shape == (20, 16, 3) and shown.dtype == np.uint8 and shown.min() == 0 and shown.max() == 255
    assert np.array_equal(truth, label[:20, :16])
    raw = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)  # a uint8 evaluation item is shown as it is
    shown, _ = display_pair(ItemsOnly([(raw, label, np.array([20, 16], np.int64), "b", 0)]), 0)
    assert np.array_equal(shown, raw[:20, :16])
    with pytest.raises(UserError, match="image_path, label_path, label_indices"):
        label_files(dataset, "mine", "train_mlmt.py")
    assert not isinstance(object(), SegmentationDataset)


# --- docs/extending.md, done as written -------------------------------------------------------------

GUIDE = os.path.join(ROOT, "docs", "extending.md")
# flags appended to the guide's commands (argparse keeps the last): tiny crops, two iterations
SIZES = {
    "train_full.py": ["--input-size", "33,33", "--batch-size", "2", "--num-steps", "2", "--save-pred-every", "2",
                      "--num-workers", "0"],
    "train_s4GAN.py": ["--input-size", "33,33", "--batch-size", "2", "--num-steps", "2", "--save-pred-every", "2",
                       "--num-workers", "0"],
    "train_s4GAN_wrn38.py": ["--input-size", "33,33", "--batch-size", "2", "--batch-size-unlab", "2", "--num-steps",
                             "2", "--save-pred-every", "2", "--num-workers", "0", "--val-images", "1"],
    "evaluate.py": ["--num-workers", "0"],
    "train_mlmt.py": ["--backbone", "resnet18", "--pretrained", "none", "--image-size", "64", "--batch-size-lab", "2",
                      "--batch-size-unlab", "2", "--batch-size-val", "2", "--num-epochs", "1", "--evaluation-epochs",
                      "1", "--workers", "0"],
    "-m data.check": [],
}


def guide_blocks(kind):
    return re.findall(rf"```{kind}\n(.*?)```", open(GUIDE).read(), re.S)


def apply_python_block(project, block):
    """A ```python block of the guide: `# <file>` is a new module; `# <file>: <where>` an edit of one."""
    first, body = block.split("\n", 1)
    target, _, where = first.lstrip("# ").partition(": ")
    path = os.path.join(project, target)
    if not where:
        assert not os.path.exists(path), target
        with open(path, "w") as f:
            f.write(body)
        return
    lines = open(path).read().splitlines(keepends=True)
    if where == "after the imports":
        at = max(k for k, line in enumerate(lines) if line.startswith(("from ", "import "))) + 1
    elif where.startswith("inside "):
        opening = where[len("inside "):]
        at = next(k for k, line in enumerate(lines) if line.startswith(opening)) + 1
    elif where.startswith("replacing the line "):
        start = where[len("replacing the line "):].removesuffix("...").strip()
        at = next(k for k, line in enumerate(lines) if line.startswith(start))
        del lines[at]
    else:
        raise AssertionError(f"docs/extending.md: no rule for {first!r}")
    lines[at:at] = [body]
    with open(path, "w") as f:
        f.writelines(lines)


def write_shapes(root):
    """The data the guide's dataset reads: data.synthetic's scenes in its layout."""
    from data.synthetic import write_dataset
    source = root + "_voc"
    write_dataset(source, num_train=16, num_val=2, seed=0, max_size=44, min_size=36)
    os.makedirs(root)
    os.rename(os.path.join(source, "JPEGImages"), os.path.join(root, "images"))
    os.rename(os.path.join(source, "SegmentationClassAug"), os.path.join(root, "labels"))
    for split, listed in (("train", "train_aug.txt"), ("val", "val.txt")):
        os.rename(os.path.join(source, "lists", listed), os.path.join(root, f"{split}.txt"))


def short_run_file(path):
    """VOC_40000.pth in a command: the snapshot the short run wrote in that folder."""
    folder = os.path.dirname(path)
    if os.path.exists(path) or not os.path.isdir(folder):
        return path
    pattern = re.compile(re.sub(r"\d+", r"\\d+", re.escape(os.path.basename(path))) + "$")
    found = [f for f in os.listdir(folder) if pattern.match(f)]
    assert len(found) == 1, (path, found)
    return os.path.join(folder, found[0])


def test_the_guide_adds_a_segmenter_and_a_dataset_that_every_script_takes(tmp_path):
    project = copy_repository(str(tmp_path / "project"), untracked=True)
    blocks = guide_blocks("python")
    assert len(blocks) == 5, "the guide's example: two modules, three registry edits"
    for block in blocks:
        apply_python_block(project, block)
    write_shapes(os.path.join(project, "data", "shapes"))
    commands = [shlex.split(line) for block in guide_blocks("sh") for line in block.splitlines() if line.strip()]
    programs = [" ".join(argv[1:3]) if argv[1] == "-m" else argv[1] for argv in commands]
    assert set(programs) == set(SIZES), programs
    env = dict(os.environ, PYTHONPATH=project, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    for argv, program in zip(commands, programs):
        assert argv[0] == "python", argv
        args = [short_run_file(os.path.join(project, a)) if a.endswith(".pth") else a for a in argv[1:]]
        proc = subprocess.run([sys.executable, *args, *SIZES[program]], cwd=project, env=env, capture_output=True,
                              text=True, timeout=300)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"`{' '.join(argv)}` exited with {proc.returncode}:\n{output[-3000:]}"
        if program.startswith("train_") and program != "train_mlmt.py":  # the default profile: legacy SGD asked
            assert output.count("standard SGD for TinyNet") == 1, output[-3000:]
        if program == "evaluate.py":
            assert re.search(r"meanIOU: [0-9.]+", output), output[-3000:]
    assert os.path.isfile(os.path.join(project, "results", "shapes_semi", "result.txt"))
