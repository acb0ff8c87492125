"""Training items of VOC, Cityscapes and PASCAL-Context and the MLMT views, item by item, against the
datasets the original's scripts build, with the original's random draws forced to equal ours."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import train_full
import train_mlmt
import train_s4GAN
from data.context import SHORT_SIDE_RANGE, eval_size, scaled_size
from data.context_prepare import prepare
from methods.mlmt.labels import ClassifierImages, normalize_images
from engine import setup
from engine.config import segmentation_config
from methods.mlmt.config import MLMTConfig
from methods.mlmt import data as mlmt_data
from tests.crosscheck.common import fmt, linked_workdir, make_mlmt_data, max_abs
from tests.crosscheck.conftest import run_original, with_our_flags
from tests.crosscheck.draws import Draw, plain, randint, recording_rngs
from utils.distributed import init_environment

pytestmark = pytest.mark.original
KEYS_PER_IMAGE = 3


def our_items(dataset, keys_per_image=KEYS_PER_IMAGE, names=False):
    """Every image with a few seed keys: (item, index or name, our draws) per sample."""
    out = []
    for index in range(len(dataset)):
        for k in range(keys_per_image):
            with recording_rngs() as rngs:
                item = dataset[(index, (7, index, k))]
            assert len(rngs) == 1
            out.append((item, dataset.ids[index].split("/")[-1] if names else index, rngs[0].draws))
    return out


# ---- the draws, in the original's order and form ---------------------------------------------------

def voc_draws(draws):
    """Ours: [scale], crop top, crop left, [mirror]; the original: [random.randint(0, 11)], h_off, w_off,
    [np.random.choice(2): 0 flips]."""
    return [randint(d) if d[0] == "integers" else Draw("np_choice", (2,), 0 if d[2] < 0.5 else 1) for d in draws]


def context_draws(draws):
    """Ours and the original's base.py draw in the same order: flip, short side, x1, y1, blur, radius."""
    return [randint(d) if d[0] == "integers" else plain(d) for d in draws]


def city_draws(draws):
    """Ours: top, left, flip; the original's RandomCrop_city: x1 (left) first, then y1; then the flip."""
    top, left, flip = draws
    return [randint(left), randint(top), plain(flip)]


def compare_items(ours, theirs, pipeline, report, image_of, label_of):
    worst, labels_differ = 0.0, 0
    for (item, index, _), their in zip(ours, theirs):
        if isinstance(their, dict):
            report(pipeline, "the random draws", their["mismatch"], False)
            pytest.fail(their["mismatch"])
        worst = max(worst, max_abs(item[0], image_of(their)))
        labels_differ += int((np.asarray(item[1]) != np.asarray(label_of(their))).sum())
    ok = worst == 0 and labels_differ == 0
    report(pipeline, f"{len(ours)} training items: image floats, labels", f"{fmt(worst)}; {labels_differ} label pixels",
           ok)
    assert ok


@pytest.mark.parametrize("flags", [[], ["--random-scale", "--random-mirror"],
                                   ["--input-size", "250,200", "--random-scale", "--random-mirror"]],
                         ids=["readme", "scale-mirror", "small-crop"])
def test_voc_training_items(original, voc, no_weights, tmp_path, report, flags):
    argv = ["--dataset", "pascal_voc", "--data-dir", voc, "--data-list", os.path.join(voc, "lists/train_aug.txt"),
            "--batch-size", "2", "--checkpoint-dir", str(tmp_path / "ckpt")] + flags
    dataset, _ = setup.make_train_dataset(segmentation_config(train_s4GAN.parse_args(with_our_flags("train_s4GAN", argv))).data)
    ours = our_items(dataset)
    theirs = run_original(original, "capture", {
        "script": "train_s4GAN", "argv": argv + ["--restore-from", no_weights],
        "items": {0: [(index, voc_draws(draws)) for _, index, draws in ours]}}, tmp_path)
    compare_items(ours, theirs["items"][0], f"VOC training ({' '.join(flags) or 'README flags'})", report,
                  lambda t: t[0], lambda t: t[1])
    for (item, _, _), their in zip(ours, theirs["items"][0]):
        assert tuple(item[2]) == tuple(their[2][:2]) and item[3] == their[3]


def padding_keys(dataset, crop):
    """For each image, the first seed key whose drawn short side is below the crop (the item is padded)."""
    keys = []
    for index in range(len(dataset)):
        for k in range(KEYS_PER_IMAGE, 400):
            with recording_rngs() as rngs:
                dataset[(index, (7, index, k))]
            if rngs[0].draws[1][2] < crop:
                keys.append((index, k))
                break
    assert len(keys) == len(dataset)
    return keys


@pytest.mark.parametrize("script", [train_s4GAN, train_full], ids=["train_s4GAN", "train_full"])
def test_context_training_items(original, context, no_weights, tmp_path, report, script):
    """The s4GAN trainer normalises with the mean in reversed order, train_full with the right one.
    The original reads the annotations through its own conversion (the category ids of each image's
    map to its 60 labels, cached in train.pth on its first run) in the order its Detail API lists
    them; ours were prepared from the official .mat files and lists. Every image is drawn with three
    seeds and one more whose short side falls below the 321 crop (padded with background)."""
    argv = ["--dataset", "pascal_context", "--data-dir", context, "--batch-size", "2",
            "--checkpoint-dir", str(tmp_path / "ckpt")]
    dataset, _ = setup.make_train_dataset(segmentation_config(script.parse_args(with_our_flags(script.__name__, argv))).data)
    ours = our_items(dataset)
    for index, k in padding_keys(dataset, 321):
        with recording_rngs() as rngs:
            item = dataset[(index, (7, index, k))]
        ours.append((item, index, rngs[0].draws))
    workdir = linked_workdir(str(tmp_path / "work"), {"data/pcontext_dataset": context})
    theirs = run_original(original, "capture", {
        "script": script.__name__, "argv": ["--dataset", "pascal_context", "--batch-size", "2",
                                            "--restore-from", no_weights, "--checkpoint-dir", str(tmp_path / "c")],
        "workdir": workdir, "items": {0: [(index, context_draws(draws)) for _, index, draws in ours]}}, tmp_path)
    their_order = [name[:-len(".jpg")] for name in theirs["ids"][0]]
    order_ok = their_order == list(dataset.ids)
    report(f"PASCAL-Context training ({script.__name__})", "the image order: the original's (its Detail API over "
           "trainval_merged.json) and ours (train.txt)", "identical" if order_ok else f"{their_order} vs {dataset.ids}",
           order_ok)
    assert order_ok
    padded = sum(1 for _, _, draws in ours if draws[1][2] < 321)
    compare_items(ours, theirs["items"][0], f"PASCAL-Context training ({script.__name__}), {padded} padded", report,
                  lambda t: t[0], lambda t: t[1])


def test_context_prepared_from_the_originals_own_caches(original, context, no_weights, tmp_path, report):
    """`python -m data.context prepare` on the mask cache the original wrote on its first run (form (c)):
    the same masks, in the same order, as ours prepared from the official .mat files (form (b))."""
    workdir = linked_workdir(str(tmp_path / "work"), {"data/pcontext_dataset": context})
    theirs = run_original(original, "capture", {
        "script": "train_full", "argv": ["--dataset", "pascal_context", "--restore-from", no_weights,
                                         "--checkpoint-dir", str(tmp_path / "c")], "workdir": workdir}, tmp_path)
    assert os.path.isfile(os.path.join(context, "train.pth")), "the original did not write its mask cache"
    from_caches = str(tmp_path / "from_caches")
    os.makedirs(from_caches)
    os.symlink(os.path.join(context, "JPEGImages"), os.path.join(from_caches, "JPEGImages"))
    prepare(from_caches, source=context, log=lambda *_: None)
    with open(os.path.join(from_caches, "train.txt")) as f:
        order = [line.strip() for line in f]
    their_order = [name[:-len(".jpg")] for name in theirs["ids"][0]]
    masks_differ = sum(int((np.asarray(Image.open(os.path.join(from_caches, "SegmentationClassContext", n + ".png"))) !=
                            np.asarray(Image.open(os.path.join(context, "SegmentationClassContext", n + ".png")))).sum())
                       for n in order)
    ok = order == their_order and masks_differ == 0
    report("PASCAL-Context prepared from the original's caches", f"train.txt order against the original's; the "
           f"{len(order)} masks against those prepared from the .mat files", f"order "
           f"{'identical' if order == their_order else 'differs'}; {masks_differ} label pixels", ok)
    assert ok


# Frequent VOC 2010 image shapes (w, h), both orientations, a square and long sides that truncate.
VOC2010_SHAPES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 334), (334, 500), (500, 500),
                  (500, 281), (353, 500))


def test_context_rescale_sizes(original, tmp_path, report):
    """Every short side the original draws (252..1010) for each shape: the size its training resize
    asks for; and its evaluation resize for these and 200 other shapes. Ours: the functions the
    dataset uses."""
    shorts = list(range(SHORT_SIDE_RANGE[0], SHORT_SIDE_RANGE[1] + 1))
    rng = np.random.default_rng(0)
    val_shapes = list(VOC2010_SHAPES) + [tuple(int(v) for v in rng.integers(50, 1001, 2)) for _ in range(200)]
    theirs = run_original(original, "context_sizes", {"train_shapes": VOC2010_SHAPES, "shorts": shorts,
                                                      "val_shapes": val_shapes}, tmp_path)
    train = sum(scaled_size(w, h, short) != size for (w, h, short), size in theirs["train"].items())
    val = sum(eval_size(w, h) != size for (w, h), size in theirs["val"].items())
    ok = train == 0 and val == 0 and len(theirs["train"]) == len(VOC2010_SHAPES) * len(shorts)
    report("PASCAL-Context rescale", f"training size for {len(theirs['train'])} (w, h, short side) draws; "
           f"evaluation size for {len(theirs['val'])} shapes", f"{train} and {val} sizes differ", ok)
    assert ok


def test_cityscapes_training_items(original, city, no_weights, tmp_path, report):
    argv = ["--dataset", "cityscapes", "--data-dir", city, "--input-size", "256,512", "--batch-size", "2",
            "--checkpoint-dir", str(tmp_path / "ckpt")]
    dataset, _ = setup.make_train_dataset(segmentation_config(train_s4GAN.parse_args(with_our_flags("train_s4GAN", argv))).data)
    ours = our_items(dataset, keys_per_image=2, names=True)
    workdir = linked_workdir(str(tmp_path / "work"), {"data/city_dataset": city})
    theirs = run_original(original, "capture", {
        "script": "train_s4GAN", "argv": ["--dataset", "cityscapes", "--batch-size", "2", "--restore-from", no_weights,
                                          "--checkpoint-dir", str(tmp_path / "c")],
        "workdir": workdir, "items": {0: [(name, city_draws(draws)) for _, name, draws in ours]}}, tmp_path)
    compare_items(ours, theirs["items"][0], "Cityscapes training", report, lambda t: t[0], lambda t: t[1])


# ---- MLMT ---------------------------------------------------------------------------------------------

def mlmt_forced(mode, draws):
    """Ours -> the original's TransformTwice(plain, plain or augmented) draws.

    labeled: ours one flip; the original flips both plain views (the second is never used).
    unlabeled: ours flip (teacher), brightness, contrast, saturation, hue, order, flip, radius;
    the original: flip (plain view), ColorJitter.get_params (order first), flip, GaussianBlur's uniform."""
    if mode == "val":
        return None
    if mode == "labeled":
        (flip,) = draws
        return [Draw("torch_rand", None, flip[2]), Draw("torch_rand", None, 0.75)]
    flip_t, b, c, s, h, order, flip_s, radius = draws
    ranges = tuple(tuple(d[1]) for d in (b, c, s, h))
    return [Draw("torch_rand", None, flip_t[2]), Draw("jitter", ranges, (order[2], b[2], c[2], s[2], h[2])),
            Draw("torch_rand", None, flip_s[2]), plain(radius)]


def test_mlmt_items(original, tmp_path, report):
    root = make_mlmt_data(str(tmp_path / "mlmt"))
    argv = ["--data-dir", root, "--pkl-file", os.path.join(root, "split.pkl"), "--labeled-ratio", "0.5",
            "--batch-size-lab", "2", "--batch-size-unlab", "2", "--workers", "0"]
    args = train_mlmt.parse_args(with_our_flags("train_mlmt", argv + ["--exp-name", "x", "--output-dir", str(tmp_path / "out")]))
    env = init_environment("cpu", 0)
    _, perm, streams = mlmt_data.make_data(MLMTConfig.from_flags(args), env, say=lambda *_: None)
    split = mlmt_data.load_split(MLMTConfig.from_flags(args), env, "val", say=lambda *_: None)
    val = ClassifierImages(split, "val", args.image_size)
    datasets = {"labeled": streams["labeled"].loader.dataset, "unlabeled": streams["unlabeled"].loader.dataset,
                "val": val}
    ours, wanted = {}, {}
    for mode, dataset in datasets.items():
        ours[mode], wanted[mode] = [], []
        for index in range(len(dataset)):
            with recording_rngs() as rngs:
                item = dataset[(index, (3, index))] if mode != "val" else dataset[index]
            ours[mode].append(item)
            wanted[mode].append((index, mlmt_forced(mode, rngs[0].draws if rngs else [])))
    theirs = run_original(original, "mlmt_items", {"argv": argv, "items": wanted}, tmp_path)
    for mode in datasets:
        worst, label_worst = 0.0, 0.0
        for item, their in zip(ours[mode], theirs["items"][mode]):
            if isinstance(their, dict):
                report(f"MLMT {mode} items", "the random draws", their["mismatch"], False)
                pytest.fail(their["mismatch"])
            views = [item[0]] if mode in ("labeled", "val") else [item[0], item[1]]
            their_views = [their[0]] if mode == "val" else list(their[0])[:len(views)]
            for view, their_view in zip(views, their_views):
                worst = max(worst, max_abs(normalize_images(torch.from_numpy(view)[None])[0], their_view))
            if mode != "unlabeled":
                label_worst = max(label_worst, max_abs(item[1], their[1]))
        ok = worst == 0 and label_worst == 0
        report(f"MLMT {mode} items", f"{len(ours[mode])} items: network inputs{', targets' if mode != 'unlabeled' else ''}",
               fmt(max(worst, label_worst)), ok)
        assert ok
    for mode in ("labeled", "unlabeled"):
        assert np.array_equal(streams[mode].sampler.indices, theirs["sampler_indices"][mode])
