import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from data import context as ctx
from data.context import SPEC, ContextSegmentation
from data.context_layout import CONTEXT_CATEGORY_IDS, CONTEXT_CLASSES, map_category_ids
from data.context_masks import read_mask_cache
from data.context_prepare import prepare
from data.splits import load_permutation
from data.transforms import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, context_train_normalization
from data.config import DataConfig
from tests.context_fixture import (OTHER_IDS, TRAIN, VAL, make_context_cache, make_context_layout, make_context_mat,
                                   write_images, write_list, write_malicious_cache)
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASKS = "SegmentationClassContext"


def quiet(*_):
    pass


def read_png(path):
    return np.array(Image.open(path))


def args_for(root, **extra):
    values = dict(dataset="pascal_context", data_dir=root, data_list=None, input_size=(321, 321), num_classes=60,
                  ignore_label=-1, context_train_mean="rgb")
    values.update(extra)
    return DataConfig(**values)


@pytest.fixture(scope="module")
def context_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pcontext"))
    make_context_layout(root)
    return root


# --- classes, mapping, spec -------------------------------------------------------------------------

def test_sixty_ids_names_and_spec():
    ids = CONTEXT_CATEGORY_IDS
    assert len(ids) == 60 and list(ids) == sorted(set(ids))
    assert ids[:7] == (0, 2, 9, 18, 19, 22, 23) and ids[-1] == 458
    assert len(CONTEXT_CLASSES) == 60 and CONTEXT_CLASSES[0] == "background"
    assert list(CONTEXT_CLASSES[1:]) == sorted(CONTEXT_CLASSES[1:]) and len(set(CONTEXT_CLASSES)) == 60
    assert CONTEXT_CLASSES[37] == "person" and CONTEXT_CLASSES[59] == "wood"
    assert SPEC.name == "pascal_context" and SPEC.num_classes == 60 and SPEC.ignore_label == -1
    assert SPEC.default_data_dir == "./data/pcontext_dataset/"
    assert SPEC.class_names(60, None) == CONTEXT_CLASSES
    assert SPEC.class_names(3, None) == ("class_0", "class_1", "class_2")
    assert SPEC.palette.shape == (256, 3) and SPEC.palette.dtype == np.uint8
    assert len({tuple(c) for c in SPEC.palette[:60]}) == 60 and SPEC.palette[1].tolist() == [128, 0, 0]


def test_category_ids_map_to_their_rank_and_others_to_background():
    assert map_category_ids(np.array(CONTEXT_CATEGORY_IDS)).tolist() == list(range(60))
    assert map_category_ids(np.array(OTHER_IDS)).tolist() == [0] * len(OTHER_IDS)
    assert map_category_ids(np.array([[458, 1000]])).tolist() == [[59, 0]]
    with pytest.raises(ValueError, match="negative"):
        map_category_ids(np.array([2, -3]))


def test_shipped_pc_splits_match_the_4996_training_images():
    for k in range(3):
        assert len(load_permutation(os.path.join(ROOT, "splits", "pc", f"seeded_{k}.pkl"), 4996)) == 4996


# --- prepare: (b) the official .mat release -----------------------------------------------------------

def test_prepare_from_mat_maps_the_459_ids_and_is_idempotent(tmp_path):
    root = str(tmp_path)
    expected = make_context_mat(root)
    assert prepare(root, log=quiet) == {"train": (3, 3), "val": (2, 2)}
    for name, mask in expected.items():
        png = read_png(os.path.join(root, MASKS, name + ".png"))
        assert png.dtype == np.uint8 and png.ndim == 2 and np.array_equal(png, mask)
    assert set(np.unique(np.concatenate([m.ravel() for m in expected.values()]))) == set(range(60))
    assert open(os.path.join(root, "train.txt")).read().split() == [n for n, _ in TRAIN]
    messages = []
    assert prepare(root, log=messages.append) == {"train": (3, 0), "val": (2, 0)}
    assert "already in the project layout" in messages[0]
    os.remove(os.path.join(root, MASKS, TRAIN[1][0] + ".png"))  # an interrupted run: only what is missing
    assert prepare(root, log=quiet) == {"train": (3, 1), "val": (2, 0)}


def test_prepare_from_mat_with_lists_given_by_flags(tmp_path):
    root, elsewhere = str(tmp_path / "root"), tmp_path / "lists"
    os.makedirs(root)
    elsewhere.mkdir()
    make_context_mat(root, lists=False)
    write_list(str(elsewhere / "t.txt"), [TRAIN[2][0], TRAIN[0][0]])
    with pytest.raises(UserError, match="no id lists"):
        prepare(root, log=quiet)
    assert ctx.main(["prepare", "--data-dir", root, "--train-ids", str(elsewhere / "t.txt")]) is None
    assert open(os.path.join(root, "train.txt")).read().split() == [TRAIN[2][0], TRAIN[0][0]]


def test_mat_without_label_map_and_missing_mat_are_named(tmp_path):
    import scipy.io
    root = str(tmp_path)
    make_context_mat(root)
    path = os.path.join(root, "trainval", VAL[0][0] + ".mat")
    scipy.io.savemat(path, {"Something": np.zeros((3, 3))})
    with pytest.raises(UserError, match=f"{path} has no LabelMap"):
        prepare(root, log=quiet)
    os.remove(path)
    with pytest.raises(UserError, match=f"label {path} \\(id {VAL[0][0]} listed in .*val.txt\\) does not exist"):
        prepare(root, log=quiet)


def test_missing_image_for_a_listed_id_is_named(tmp_path):
    root = str(tmp_path)
    make_context_mat(root)
    path = os.path.join(root, "JPEGImages", TRAIN[0][0] + ".jpg")
    os.remove(path)
    with pytest.raises(UserError, match=f"image {path} .*does not exist.*--images"):
        prepare(root, log=quiet)


def test_images_flag_links_the_voc_folder(tmp_path):
    root, voc = str(tmp_path / "root"), str(tmp_path / "voc")
    os.makedirs(root)
    make_context_mat(root)
    os.rename(os.path.join(root, "JPEGImages"), voc)
    prepare(root, images=voc, log=quiet)
    assert os.path.realpath(os.path.join(root, "JPEGImages")) == os.path.realpath(voc)
    assert len(ContextSegmentation(root, "val", train=False)) == 2


# --- prepare: (c) the original's mask caches ---------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True])
def test_prepare_from_caches_keeps_their_order(tmp_path, legacy):
    root = str(tmp_path)
    expected, order = make_context_cache(root, legacy=legacy)
    assert prepare(root, log=quiet) == {"train": (3, 3), "val": (2, 2)}
    for split in ("train", "val"):
        listed = open(os.path.join(root, f"{split}.txt")).read().split()
        assert listed == order[split] and listed != sorted(listed)
    for name, mask in expected.items():
        assert np.array_equal(read_png(os.path.join(root, MASKS, name + ".png")), mask)
    assert ContextSegmentation(root, "train").ids == order["train"]


@pytest.mark.parametrize("protocol", [0, 4])
def test_caches_of_other_pickle_protocols_read_the_same(tmp_path, protocol):
    masks = {2008000002: np.arange(12, dtype=np.uint8).reshape(3, 4), 2008000123: np.full((2, 5), 59, np.uint8)}
    path = str(tmp_path / "val.pth")
    torch.save({k: Image.fromarray(v) for k, v in masks.items()}, path, pickle_protocol=protocol)
    entries = read_mask_cache(path)
    assert [i for i, _ in entries] == ["2008_000002", "2008_000123"]
    assert all(np.array_equal(m, masks[int(i.replace("_", ""))]) for i, m in entries)


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_cache_is_refused_without_running_anything(tmp_path, legacy):
    root, marker = str(tmp_path / "root"), tmp_path / "marker"
    os.makedirs(root)
    write_images(root, TRAIN + VAL)
    write_malicious_cache(os.path.join(root, "train.pth"), marker, legacy=legacy)
    with pytest.raises(UserError) as info:
        prepare(root, log=quiet)
    assert "is refused" in str(info.value) and "system is not allowed" in str(info.value)
    assert not marker.exists()
    assert not os.listdir(os.path.join(root, MASKS))


@pytest.mark.parametrize("payload", [
    {2008000002: np.zeros((2, 2), np.uint8)},              # numpy arrays
    {2008000002: torch.zeros(2, 2, dtype=torch.uint8)},    # tensors
    [Image.fromarray(np.zeros((2, 2), np.uint8))],         # not a dict
    {2008000002: Image.fromarray(np.zeros((2, 2, 3), np.uint8))},  # a colour image
])
def test_cache_with_foreign_objects_is_refused(tmp_path, payload):
    path = str(tmp_path / "train.pth")
    torch.save(payload, path)
    with pytest.raises(UserError, match="is refused"):
        read_mask_cache(path)


def test_plain_pickle_and_garbage_caches(tmp_path):
    path = str(tmp_path / "train.pth")
    with open(path, "wb") as f:
        pickle.dump({1: 2}, f, protocol=2)
    with pytest.raises(UserError, match="not a torch.save file"):
        read_mask_cache(path)
    with open(path, "wb") as f:
        f.write(b"\x00garbage")
    with pytest.raises(UserError, match="not a readable torch.save file"):
        read_mask_cache(path)


def test_cache_mask_above_59_is_named(tmp_path):
    root = str(tmp_path)
    write_images(root, TRAIN)
    masks = {int(n.replace("_", "")): Image.fromarray(np.full((h, w), 3, np.uint8)) for n, (h, w) in TRAIN}
    masks[int(TRAIN[1][0].replace("_", ""))] = Image.fromarray(np.full(TRAIN[1][1], 60, np.uint8))
    torch.save(masks, os.path.join(root, "train.pth"))
    with pytest.raises(UserError, match=f"train.pth \\(id {TRAIN[1][0]}\\) has label values \\[60\\] > 59"):
        prepare(root, log=quiet)


def test_nothing_usable_lists_the_three_forms(tmp_path):
    for call in (lambda: prepare(str(tmp_path), log=quiet), lambda: ContextSegmentation(str(tmp_path), "train")):
        with pytest.raises(UserError) as info:
            call()
        lines = str(info.value).splitlines()
        assert lines[0].endswith(f"put one of these layouts in {tmp_path}/:") and "//" not in str(info.value)
        for line, parts in zip(lines[1:], (("(a)", "JPEGImages/<id>.jpg", "SegmentationClassContext/<id>.png"),
                                           ("(b)", "trainval/<id>.mat"), ("(c)", "train.pth", "val.pth"),
                                           ("(b) and (c)", f"python -m data.context prepare --data-dir {tmp_path}`"))):
            assert line.startswith("  ") and all(part in line for part in parts), line
        assert len(lines) == 5


def test_cli_errors_exit_2_with_the_layouts_on_their_own_lines(tmp_path, capsys):
    from utils.errors import run_cli
    with pytest.raises(SystemExit) as info:
        run_cli(ctx.main, ["prepare", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: no PASCAL-Context annotations") and err.count("\n") == 5
    # a --data-dir typed with its trailing slash names the layouts without doubled slashes
    with pytest.raises(SystemExit):
        run_cli(ctx.main, ["prepare", "--data-dir", str(tmp_path) + "/"])
    assert "//" not in capsys.readouterr().err


def test_unconverted_data_dir_says_to_run_prepare(tmp_path):
    make_context_mat(str(tmp_path))
    with pytest.raises(UserError, match="not converted yet.*trainval/<id>.mat.*python -m data.context prepare"):
        SPEC.build_train(args_for(str(tmp_path)))


# --- (a) the project layout: items ---------------------------------------------------------------------

def test_prepare_on_the_layout_converts_nothing(context_root):
    assert prepare(context_root, log=quiet) == {"train": (3, 0), "val": (2, 0)}


def test_train_item_shapes_and_reproducibility(context_root):
    ds = SPEC.build_train(args_for(context_root))
    assert ds.ids == [n for n, _ in TRAIN]
    image, label, size, name, index = ds[(1, (0, 1, 2, 3))]
    assert image.shape == (3, 321, 321) and image.dtype == np.float32
    assert label.shape == (321, 321) and label.dtype == np.int64 and 0 <= label.min() and label.max() <= 59
    assert tuple(size) == TRAIN[1][1] and name == TRAIN[1][0] and index == 1
    again = ds[(1, (0, 1, 2, 3))]
    assert np.array_equal(image, again[0]) and np.array_equal(label, again[1])
    assert any(not np.array_equal(image, ds[(1, (0, 1, 2, k))][0]) for k in range(4, 8))


def test_train_item_is_the_original_pipeline(context_root):
    """flip, short side in [252, 1010], pad, crop, blur, ToTensor + Normalize, replayed by hand."""
    ds = ContextSegmentation(context_root, "train", crop_size=(300, 280))

    def normalize(img):  # what torchvision's ToTensor + Normalize compute, in torch float32
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
        return x.sub(torch.tensor(IMAGENET_MEAN_RGB)[:, None, None]).div(torch.tensor(IMAGENET_STD_RGB)[:, None, None])

    seen_blur = set()
    for key in range(6):
        image, label, _, name, _ = ds[(0, key)]
        rng = np.random.default_rng(key)
        img, mask = Image.open(ds.image_path(name)).convert("RGB"), Image.open(ds.label_path(name))
        if rng.random() < 0.5:
            img, mask = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        short = int(rng.integers(252, 1011))
        w, h = img.size
        size = ctx.scaled_size(w, h, short)  # checked against hand-worked values below
        img, mask = img.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)
        padded_w, padded_h = max(size[0], 280), max(size[1], 300)
        canvas, canvas_mask = Image.new("RGB", (padded_w, padded_h)), Image.new("L", (padded_w, padded_h))
        canvas.paste(img)
        canvas_mask.paste(mask)
        x, y = int(rng.integers(0, padded_w - 280 + 1)), int(rng.integers(0, padded_h - 300 + 1))
        img, mask = canvas.crop((x, y, x + 280, y + 300)), canvas_mask.crop((x, y, x + 280, y + 300))
        blur = rng.random() < 0.5
        seen_blur.add(blur)
        if blur:
            img = img.filter(ctx.ImageFilter.GaussianBlur(radius=rng.random()))
        assert np.array_equal(image, normalize(img).numpy()), key
        assert np.array_equal(label, np.asarray(mask)), key
    assert seen_blur == {True, False}


@pytest.mark.parametrize("width, height, short, expected", [
    (500, 334, 253, (378, 253)),   # 500 * 253 / 334 = 378.74: truncated, not rounded to 379
    (334, 500, 253, (253, 378)),   # portrait: the same numbers on the other side
    (500, 375, 321, (428, 321)),   # 500 * 321 / 375 = 428 exactly
    (400, 400, 300, (300, 300)),   # square: the landscape branch, 400 * 300 / 400 = 300
    (353, 500, 1010, (1010, 1430)),  # 500 * 1010 / 353 = 1430.59 -> 1430
    (500, 281, 252, (448, 252)),   # 500 * 252 / 281 = 448.40 -> 448
])
def test_training_rescale_truncates_the_long_side(width, height, short, expected):
    """The original's long = int(1.0 * long * short / short_before), values worked out by hand."""
    assert ctx.scaled_size(width, height, short) == expected


def test_small_images_pad_with_background_not_ignore(context_root):
    ds = ContextSegmentation(context_root, "train", crop_size=(1020, 1020))
    index = ds.ids.index("2009_000010")  # square: short = long side <= 1010 < 1020: always padded
    image, label, _, _, _ = ds[(index, 5)]
    corner = (0 - np.array(IMAGENET_MEAN_RGB, np.float32)) / np.array(IMAGENET_STD_RGB, np.float32)
    assert np.allclose(image[:, -1, -1], corner) and label[-1, -1] == 0 and (label[-3:, :] == 0).all()


def test_train_mean_follows_context_train_mean(context_root):
    rgb = SPEC.build_train(args_for(context_root, context_train_mean="rgb"))[(0, 3)][0]
    reversed_ = SPEC.build_train(args_for(context_root, context_train_mean="reversed"))[(0, 3)][0]
    mean_rgb, std = np.array(context_train_normalization("rgb")[0]), np.array(IMAGENET_STD_RGB)
    mean_rev = np.array(context_train_normalization("reversed")[0])
    assert np.allclose(reversed_ - rgb, ((mean_rgb - mean_rev) / std)[:, None, None], atol=1e-5)
    assert not np.allclose(reversed_, rgb)


def test_eval_item_short_side_512_centre_crop(context_root):
    ds = SPEC.build_val(args_for(context_root))
    assert ds.ids == [n for n, _ in VAL]
    for index in range(len(ds)):
        image, label, size, name, _ = ds[index]
        assert image.shape == (3, 512, 512) and label.shape == (512, 512) and tuple(size) == (512, 512)
        img, mask = Image.open(ds.image_path(name)).convert("RGB"), Image.open(ds.label_path(name))
        w, h = img.size
        out = (int(w * 512 / h), 512) if w > h else (512, int(h * 512 / w))
        x, y = int(round((out[0] - 512) / 2.0)), int(round((out[1] - 512) / 2.0))
        crop = img.resize(out, Image.BILINEAR).crop((x, y, x + 512, y + 512))
        crop_mask = mask.resize(out, Image.NEAREST).crop((x, y, x + 512, y + 512))
        rgb = np.asarray(crop)
        expected = ((rgb / np.float32(255) - np.float32(IMAGENET_MEAN_RGB)) / np.float32(IMAGENET_STD_RGB))
        assert np.array_equal(image, expected.astype(np.float32).transpose(2, 0, 1))
        assert np.array_equal(label, np.asarray(crop_mask))
        shown, shown_label = ds.display(index)
        assert shown.dtype == np.uint8 and np.array_equal(shown, rgb) and np.array_equal(shown_label, label)


# --- (a) the project layout: errors --------------------------------------------------------------------

def test_label_above_59_is_named(tmp_path):
    root = str(tmp_path)
    make_context_layout(root)
    path = os.path.join(root, MASKS, TRAIN[0][0] + ".png")
    mask = read_png(path)
    mask[0, 0] = 255  # a 59-class mask (background 255) from another toolbox
    Image.fromarray(mask).save(path)
    ds = ContextSegmentation(root, "train")
    with pytest.raises(UserError, match=f"label {path} has values \\[255\\] > 59"):
        ds[0]


def test_missing_data_list_is_named(context_root, tmp_path):
    with pytest.raises(UserError, match="--data-list .*nope.txt does not exist"):
        SPEC.build_val(args_for(context_root, data_list=str(tmp_path / "nope.txt")))


def test_missing_mask_for_a_listed_image_is_named(tmp_path):
    root = str(tmp_path)
    make_context_layout(root)
    path = os.path.join(root, MASKS, VAL[1][0] + ".png")
    os.remove(path)
    with pytest.raises(UserError, match=f"label {path} for image .*{VAL[1][0]}.jpg"):
        ContextSegmentation(root, "val", train=False)
    with pytest.raises(UserError, match=f"{path} .*does not exist and there is nothing to convert it from"):
        prepare(root, log=quiet)
