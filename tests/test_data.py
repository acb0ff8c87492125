import os
import pickle

import cv2
import numpy as np
import pytest

from data.sampler import BatchStream, SeededEpochSampler
from data.splits import load_permutation, save_permutation, seeded_permutation, split_indices
from data.transforms import read_label
from data.voc import VOC_MEAN_BGR, VOCSegmentation, main as voc_main
from tests.voc_fixture import make_voc, write_label
from utils.errors import UserError


def test_label_png_index_and_palette_read_the_same_classes(tmp_path):
    label = np.array([[0, 1, 15], [20, 255, 7]], np.uint8)
    write_label(tmp_path / "l.png", label, palette=False)
    write_label(tmp_path / "p.png", label, palette=True)
    assert np.array_equal(read_label(str(tmp_path / "l.png")), label)
    assert np.array_equal(read_label(str(tmp_path / "p.png")), label)  # indices, not luminance


def test_voc_item_mean_channels_padding_and_crop(voc_root):
    ds = VOCSegmentation(voc_root, os.path.join(voc_root, "lists/train_aug.txt"), crop_size=(100, 100))
    image, label, size, name, index = ds[(1, (0, 0, 0, 0))]
    assert image.shape == (3, 100, 100) and image.dtype == np.float32 and label.shape == (100, 100)
    h, w = size
    assert (h, w) == (75, 50) and index == 1 and name == ds.ids[1]
    raw = cv2.imread(ds.image_path(name)).astype(np.float32)
    # RGB order after subtracting the BGR mean; offset 0 because the padded image equals the crop
    assert np.allclose(image[0, :h, :w], raw[:, :, 2] - VOC_MEAN_BGR[2])
    assert np.allclose(image[2, :h, :w], raw[:, :, 0] - VOC_MEAN_BGR[0])
    assert (image[:, h:, :] == 0).all() and (label[h:, :] == 255).all() and (label[:, w:] == 255).all()


def test_voc_random_crop_is_seeded_by_the_sample_key(voc_root):
    ds = VOCSegmentation(voc_root, os.path.join(voc_root, "lists/train_aug.txt"), crop_size=(33, 33),
                         scale=True, mirror=True)
    a = ds[(3, (1, 2, 3, 4))]
    b = ds[(3, (1, 2, 3, 4))]
    c = ds[(3, (1, 2, 3, 5))]
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == (3, 33, 33)
    assert not np.array_equal(a[0], c[0])


def test_voc_eval_pads_without_cropping(voc_root):
    ds = VOCSegmentation(voc_root, os.path.join(voc_root, "lists/val.txt"), (505, 505), pad_only=True)
    image, label, size, _, _ = ds[0]
    assert image.shape == (3, 505, 505) and tuple(size) == (70, 60)
    assert (label[70:] == 255).all()


def test_missing_list_explains_make_lists(voc_root):
    with pytest.raises(UserError, match="make-lists"):
        VOCSegmentation(voc_root, os.path.join(voc_root, "lists/nope.txt"))


def test_make_lists_writes_train_aug_without_val(tmp_path):
    root = make_voc(str(tmp_path / "voc"))
    out = tmp_path / "lists"
    os.makedirs(out)
    (out / "val.txt").write_text(open(os.path.join(root, "lists/val.txt")).read())
    voc_main(["make-lists", "--data-dir", root, "--out-dir", str(out)])
    train = (out / "train_aug.txt").read_text().split()
    val = (out / "val.txt").read_text().split()
    assert train == sorted(train) and len(train) == 6 and not set(train) & set(val)


def test_split_file_of_the_original_format_loads(tmp_path):
    perm = np.random.RandomState(0).permutation(10).astype(np.int64)
    path = tmp_path / "split_0.pkl"
    with open(path, "wb") as f:
        pickle.dump(perm, f, protocol=3)
    assert np.array_equal(load_permutation(str(path), 10), perm)
    with open(path, "wb") as f:
        pickle.dump(perm.tolist(), f, protocol=2)  # a plain list of ints is fine too
    assert np.array_equal(load_permutation(str(path), 10), perm)


def test_split_saved_and_prefix_is_labeled(tmp_path):
    perm = seeded_permutation(10, 3)
    assert np.array_equal(perm, seeded_permutation(10, 3)) and sorted(perm) == list(range(10))
    save_permutation(str(tmp_path / "s.pkl"), perm)
    with open(tmp_path / "s.pkl", "rb") as f:
        assert np.array_equal(pickle.load(f), perm)
    labeled, unlabeled = split_indices(perm, 0.25)
    assert labeled.tolist() == perm[:2].tolist() and unlabeled.tolist() == perm[2:].tolist()
    both = split_indices(perm, None)
    assert both[0].tolist() == both[1].tolist() == list(range(10))


def test_split_of_wrong_length_is_refused(tmp_path):
    save_permutation(str(tmp_path / "s.pkl"), np.arange(9))
    with pytest.raises(UserError, match="not a permutation of the 10"):
        load_permutation(str(tmp_path / "s.pkl"), 10)


def test_sampler_shuffles_per_epoch_and_resumes_mid_epoch():
    s = SeededEpochSampler(np.arange(10, 20), seed=1, stream=0)
    first = [i for i, _ in s]
    assert sorted(first) == list(range(10, 20))
    s.set_epoch(1)
    second = [i for i, _ in s]
    assert second != first
    s.set_epoch(1, skip=4)
    assert [i for i, _ in s] == second[4:]


def test_sampler_shards_cover_the_epoch():
    shards = [[i for i, _ in SeededEpochSampler(np.arange(7), 1, 0, rank=r, world_size=2)] for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4
    assert set(shards[0]) | set(shards[1]) == set(range(7))


def test_batch_stream_restarts_epochs_and_restores_position(voc_root):
    ds = VOCSegmentation(voc_root, os.path.join(voc_root, "lists/train_aug.txt"), crop_size=(17, 17))
    stream = BatchStream(ds, SeededEpochSampler(np.arange(6), 5, 0), batch_size=4)
    names = [next(stream)[3] for _ in range(5)]  # epochs of 4 + 2 images
    assert [len(n) for n in names] == [4, 2, 4, 2, 4]
    state = stream.state_dict()
    after = next(stream)
    again = BatchStream(ds, SeededEpochSampler(np.arange(6), 5, 0), batch_size=4)
    again.load_state_dict(state)
    replay = next(again)
    assert replay[3] == after[3] and np.array_equal(replay[0].numpy(), after[0].numpy())


def test_the_shipped_split_files_hold_the_authors_permutations():
    """splits/<dataset>/split_0.pkl: the original authors' permutations (splits/README.md gives each
    array's sha256 and first entries; the crosscheck compares them with the authors' files)."""
    import hashlib
    import re
    from tests.helpers import ROOT
    with open(os.path.join(ROOT, "splits", "README.md")) as f:
        rows = re.findall(r"\| `(\w+)/split_0\.pkl` \| ([\d,]+) [^|]*\| ([\d, ]+) \| `([0-9a-f]{64})` \|", f.read())
    assert [r[0] for r in rows] == ["voc", "pc", "city"]
    for folder, n, first, digest in rows:
        perm = load_permutation(os.path.join(ROOT, "splits", folder, "split_0.pkl"), int(n.replace(",", "")))
        assert hashlib.sha256(perm.astype("<i8").tobytes()).hexdigest() == digest, folder
        assert perm[:3].tolist() == [int(v) for v in first.split(",")], folder
