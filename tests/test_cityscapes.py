import os
import shutil

import numpy as np
import pytest
from PIL import Image

from data import cityscapes as city
from data.cityscapes import (CITY_CLASSES, CITY_IGNORE_LABEL, CITY_MEAN, SPEC, VALID_LABEL_IDS, VOID_LABEL_IDS,
                             CityscapesSegmentation, encode_labels, pil_resize)
from data.splits import load_permutation
from data.config import DataConfig
from tests.city_fixture import label_dir, make_city
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", params=["original", "official"])
def city_root(request, tmp_path_factory):
    return make_city(str(tmp_path_factory.mktemp(f"city_{request.param}")), layout=request.param)


@pytest.fixture
def fresh_city(tmp_path):
    return make_city(str(tmp_path / "city"))


def args_for(root, **extra):
    values = dict(dataset="cityscapes", data_dir=root, data_list=None, input_size=(256, 512), num_classes=19,
                  ignore_label=250, context_train_mean="reversed")
    values.update(extra)
    return DataConfig(**values)


def read_raw(ds, index):
    name = ds.ids[index]
    return Image.open(ds.image_path(name)).convert("RGB"), Image.open(ds.label_path(name))


# --- labels, names, colours ------------------------------------------------------------------

def test_label_ids_map_to_train_ids_and_void_to_250():
    assert encode_labels(np.array(VALID_LABEL_IDS)).tolist() == list(range(19))
    assert (encode_labels(np.array(VOID_LABEL_IDS)) == CITY_IGNORE_LABEL).all()
    assert encode_labels(np.array([255], np.uint8)).tolist() == [250]  # -1 as an 8-bit file stores it
    for bad in (34, 100, 254, -2, 256):
        with pytest.raises(ValueError, match=str(bad)):
            encode_labels(np.array([7, bad]))


def test_names_colours_and_spec():
    assert len(CITY_CLASSES) == 19 and CITY_CLASSES[0] == "road" and CITY_CLASSES[18] == "bicycle"
    assert SPEC.name == "cityscapes" and SPEC.num_classes == 19 and SPEC.ignore_label == 250
    assert SPEC.default_data_dir == "./data/city_dataset/"
    assert SPEC.class_names(19, None) == CITY_CLASSES and SPEC.class_names(5, None)[0] == "class_0"
    assert SPEC.palette.shape == (256, 3) and SPEC.palette.dtype == np.uint8
    assert SPEC.palette[0].tolist() == [128, 64, 128] and SPEC.palette[13].tolist() == [0, 0, 142]
    assert SPEC.palette[18].tolist() == [119, 11, 32] and SPEC.palette[250].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in SPEC.palette[:19]}) == 19


# --- PIL resizing: the fast path equals the original's ---------------------------------------

@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_crop_only_resize_equals_resize_then_crop(mode):
    rng = np.random.default_rng(1)
    resample = Image.BILINEAR if mode == "RGB" else Image.NEAREST
    shape = (96, 160, 3) if mode == "RGB" else (96, 160)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
    for out_hw, crop in (((48, 80), (5, 7, 20, 40)), ((48, 80), (0, 0, 48, 80)), ((48, 80), (28, 40, 20, 40)),
                         ((32, 40), (3, 1, 16, 24)), ((96, 160), (10, 10, 30, 30)),  # factors 2, 3x4, 1
                         ((50, 70), (2, 3, 21, 33))):  # not a whole factor: resize, then crop
        top, left, h, w = crop
        reference = image.resize(out_hw[::-1], resample).crop((left, top, left + w, top + h))
        assert np.array_equal(np.asarray(pil_resize(image, out_hw, resample, crop)), np.asarray(reference))


def test_eval_resize_is_pil_bilinear_and_nearest_at_2x(tmp_path):
    root = make_city(str(tmp_path / "c"), size=(64, 128))
    ds = CityscapesSegmentation(root, "val", train=False, resolution=(32, 64))
    image, label = read_raw(ds, 0)
    rgb, lab = ds.display(0)
    assert np.array_equal(rgb, np.asarray(image.resize((64, 32), Image.BILINEAR)))
    raw_nearest = np.asarray(label.resize((64, 32), Image.NEAREST))
    assert np.array_equal(lab, encode_labels(raw_nearest))
    assert np.array_equal(raw_nearest, np.asarray(label)[1::2, 1::2])  # PIL nearest at 2x: odd rows/columns


# --- training items ----------------------------------------------------------------------------

def test_layouts_are_found_and_files_sorted(city_root):
    ds = CityscapesSegmentation(city_root, "train")
    assert ds.ids == ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019", "bochum/bochum_000000_000019"]
    assert len(CityscapesSegmentation(city_root, "val", train=False)) == 3


def test_train_item_is_the_original_pipeline(city_root):
    """resize (PIL) -> crop -> flip -> BGR, minus the mean, / 255; labels mapped to trainIds."""
    ds = CityscapesSegmentation(city_root, "train", crop_size=(16, 24), resolution=(32, 64))
    key = (3, 0, 1, 2)
    image, label, size, name, index = ds[(1, key)]
    assert image.shape == (3, 16, 24) and image.dtype == np.float32
    assert label.shape == (16, 24) and label.dtype == np.int64
    assert tuple(size) == (64, 128) and size.dtype == np.int64 and name == ds.ids[1] and index == 1
    rng = np.random.default_rng(key)  # the draws in the loader's order: top, left, flip
    top, left, flip = int(rng.integers(0, 32 - 16 + 1)), int(rng.integers(0, 64 - 24 + 1)), rng.random() < 0.5
    raw_image, raw_label = read_raw(ds, 1)
    box = (left, top, left + 24, top + 16)
    rgb = np.asarray(raw_image.resize((64, 32), Image.BILINEAR).crop(box))
    ids = np.asarray(raw_label.resize((64, 32), Image.NEAREST).crop(box))
    if flip:
        rgb, ids = rgb[:, ::-1], ids[:, ::-1]
    expected = ((rgb[:, :, ::-1].astype(np.float64) - CITY_MEAN) / 255.0).astype(np.float32).transpose(2, 0, 1)
    assert np.array_equal(image, expected)
    assert np.array_equal(label, encode_labels(ids))


def test_train_item_at_default_resolution_and_every_label_id(city_root):
    ds = SPEC.build_train(args_for(city_root))
    image, label, size, _, _ = ds[(0, 7)]
    assert image.shape == (3, 256, 512) and label.shape == (256, 512)
    assert set(np.unique(label)) <= set(range(19)) | {250}
    full = CityscapesSegmentation(city_root, "train", crop_size=(512, 1024))  # the crop is the whole image
    _, label, _, _, _ = full[(0, 7)]
    assert set(np.unique(label)) == set(range(19)) | {250}  # the stripe image holds every labelId


def test_train_item_is_reproducible_with_a_key(city_root):
    ds = CityscapesSegmentation(city_root, "train", crop_size=(64, 96))
    a, b = ds[(2, (1, 2, 3, 4))], ds[(2, (1, 2, 3, 4))]
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    others = [ds[(2, (1, 2, 3, k))][0] for k in range(5, 9)]
    assert any(not np.array_equal(a[0], o) for o in others)


def test_crop_larger_than_the_training_resolution_is_refused(city_root):
    with pytest.raises(UserError, match="--input-size 600,512"):
        CityscapesSegmentation(city_root, "train", crop_size=(600, 512))


# --- evaluation items ----------------------------------------------------------------------------

def test_eval_item_at_half_resolution(city_root):
    ds = SPEC.build_val(args_for(city_root))
    image, label, size, name, index = ds[1]
    assert image.shape == (3, 512, 1024) and label.shape == (512, 1024) and tuple(size) == (512, 1024)
    raw_image, raw_label = read_raw(ds, 1)
    rgb = np.asarray(raw_image.resize((1024, 512), Image.BILINEAR))
    assert np.array_equal(image, ((rgb[:, :, ::-1] - CITY_MEAN) / 255.0).astype(np.float32).transpose(2, 0, 1))
    assert np.array_equal(label, encode_labels(np.asarray(raw_label.resize((1024, 512), Image.NEAREST))))
    shown, shown_label = ds.display(1)
    assert shown.shape == (512, 1024, 3) and shown.dtype == np.uint8 and np.array_equal(shown, rgb)
    assert np.array_equal(shown_label, label)


def test_eval_full_res_keeps_the_labels(city_root):
    ds = SPEC.build_val(args_for(city_root, eval_full_res=True))
    image, label, size, _, _ = ds[0]
    raw_image, raw_label = read_raw(ds, 0)
    assert image.shape == (3, 512, 1024)  # the network input is the same
    assert label.shape == (64, 128) and tuple(size) == (64, 128)
    assert np.array_equal(label, encode_labels(np.asarray(raw_label)))
    rgb, shown_label = ds.display(0)
    assert np.array_equal(rgb, np.asarray(raw_image)) and np.array_equal(shown_label, label)


def test_data_list_restricts_and_orders(tmp_path, city_root):
    listing = tmp_path / "list.txt"
    listing.write_text("bochum_000000_000019\nleftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png\n")
    ds = SPEC.build_train(args_for(city_root, data_list=str(listing)))
    assert ds.ids == ["bochum/bochum_000000_000019", "aachen/aachen_000001_000019"]
    listing.write_text("aachen_000009_000019\n")
    with pytest.raises(UserError, match=r"aachen_000009_000019_leftImg8bit.png .*listed in"):
        SPEC.build_train(args_for(city_root, data_list=str(listing)))


def test_shipped_city_splits_fit_the_training_set():
    for k in range(3):
        assert len(load_permutation(os.path.join(ROOT, "splits", "city", f"seeded_{k}.pkl"), 2975)) == 2975


# --- clear errors --------------------------------------------------------------------------------

def test_missing_folders_name_both_layouts_and_zips(tmp_path):
    for root in (str(tmp_path / "nothing"), str(tmp_path)):
        with pytest.raises(UserError) as info:
            CityscapesSegmentation(root, "train")
        message = str(info.value)
        assert "\n" not in message
        for part in ("leftImg8bit/train", "gtFine_trainvaltest/gtFine/train", " gtFine/train",
                     "gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"):
            assert part in message


def test_missing_label_folder_and_empty_image_folder(fresh_city):
    shutil.rmtree(os.path.join(fresh_city, "gtFine_trainvaltest"))
    with pytest.raises(UserError, match="no gtFine_trainvaltest/gtFine/train/ nor gtFine/train/"):
        CityscapesSegmentation(fresh_city, "train")
    os.makedirs(label_dir(fresh_city, "official", "val"))
    shutil.rmtree(os.path.join(fresh_city, "leftImg8bit", "val"))
    os.makedirs(os.path.join(fresh_city, "leftImg8bit", "val"))
    with pytest.raises(UserError, match="holds no \\*_leftImg8bit.png"):
        CityscapesSegmentation(fresh_city, "val", train=False)


def test_missing_label_file_names_it(fresh_city):
    frame = "bochum_000000_000019"
    path = os.path.join(label_dir(fresh_city, "original", "train"), "bochum", frame + "_gtFine_labelIds.png")
    os.remove(path)
    with pytest.raises(UserError, match=f"label {path} for image .*{frame}_leftImg8bit.png does not exist"):
        CityscapesSegmentation(fresh_city, "train")


def test_label_id_outside_the_table_names_the_file(fresh_city):
    path = os.path.join(label_dir(fresh_city, "original", "val"), "lindau", "lindau_000000_000019_gtFine_labelIds.png")
    label = np.array(Image.open(path))
    label[3, 5] = 40
    Image.fromarray(label).save(path)
    ds = CityscapesSegmentation(fresh_city, "val", train=False)
    with pytest.raises(UserError, match=f"label {path} has values \\[40\\] that are not Cityscapes labelIds"):
        ds[ds.ids.index("lindau/lindau_000000_000019")]


def test_colour_label_and_size_mismatch_are_refused(fresh_city):
    ds = CityscapesSegmentation(fresh_city, "train")
    path = ds.label_path(ds.ids[0])
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(path)
    with pytest.raises(UserError, match="mode RGB"):
        ds[0]
    Image.fromarray(np.full((32, 128), 7, np.uint8)).save(path)
    with pytest.raises(UserError, match="is 128x32 but its image"):
        ds[0]


def test_labels_in_every_8bit_form_read_the_same(tmp_path):
    values = np.array([[0, 7, 33], [255, 26, 12]], np.uint8)
    expected = encode_labels(values)
    Image.fromarray(values).save(tmp_path / "l.png")
    palette = Image.frombytes("P", (3, 2), values.tobytes())
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    palette.save(tmp_path / "p.png")
    Image.fromarray(values.astype(np.uint16)).save(tmp_path / "i.png")
    for name in ("l.png", "p.png", "i.png"):
        assert np.array_equal(city.LABEL_TO_TRAIN[np.asarray(city.open_label_ids(str(tmp_path / name)))], expected)
