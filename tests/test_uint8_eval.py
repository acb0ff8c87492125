"""Evaluation batches as uint8, normalised on the device (engine/evaluator.py DeviceNormalizer): the
same floats as the datasets' float items, bit for bit, on VOC (505 padding, an image larger than
it, custom folders' 8k+1 padding), Cityscapes (both label resolutions) and PASCAL-Context; the same
confusion matrix through evaluate(); and the labels stay int64 where uint8 cannot hold them."""
import os

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from data.cityscapes import CityscapesSegmentation
from data.context import ContextSegmentation
from data.voc import VOC_EVAL_SIZE, VOCSegmentation
from engine.evaluator import DeviceNormalizer, eval_collate, evaluate, uint8_batches
from model import build_segmenter
from tests.city_fixture import make_city
from tests.context_fixture import make_context_layout
from tests.voc_fixture import make_voc, write_label


def voc(root, crop=VOC_EVAL_SIZE, **kwargs):
    return VOCSegmentation(root, os.path.join(root, "lists", "val.txt"), crop, pad_only=True, **kwargs)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("uint8")
    voc_root = make_voc(str(base / "voc"))
    rng = np.random.default_rng(0)  # one image larger than the 505 padding: kept whole
    cv2.imwrite(os.path.join(voc_root, "JPEGImages", "big.jpg"), rng.integers(0, 255, (520, 300, 3), dtype=np.uint8))
    write_label(os.path.join(voc_root, "SegmentationClassAug", "big.png"), rng.integers(0, 21, (520, 300)))
    with open(os.path.join(voc_root, "lists", "val.txt"), "a") as f:
        f.write("big\n")
    context_root = str(base / "context")
    os.makedirs(context_root)
    make_context_layout(context_root)
    return {"voc": voc_root, "city": make_city(str(base / "city")), "context": context_root}


DATASETS = {
    "voc": lambda r: voc(r["voc"]),
    "voc-folder": lambda r: voc(r["voc"], crop=None),
    "cityscapes": lambda r: CityscapesSegmentation(r["city"], "val", train=False, resolution=(32, 64)),
    "cityscapes-full-res": lambda r: CityscapesSegmentation(r["city"], "val", train=False, resolution=(32, 64),
                                                            full_res_labels=True),
    "context": lambda r: ContextSegmentation(r["context"], "val", train=False),
}


def batches(dataset, batch_size=4):
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=eval_collate)
    return [group for groups in loader for group in groups]


@pytest.mark.parametrize("name", list(DATASETS))
def test_uint8_batches_normalised_on_the_device_equal_the_float_items(roots, name):
    floats = batches(DATASETS[name](roots))
    dataset = uint8_batches(DATASETS[name](roots))
    raw = batches(dataset)
    normalize = DeviceNormalizer(dataset, torch.device("cpu"))
    assert len(raw) == len(floats) and raw[0][0].dtype == torch.uint8 and raw[0][1].dtype == torch.uint8
    for (image8, label8, size8, names8, idx8), (image, label, size, names, idx) in zip(raw, floats):
        assert image8.shape[-1] == 3 and image8.shape[1:3] == image.shape[2:]  # HWC bytes, a quarter of the floats'
        out = normalize(image8, size8)
        assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(out, image), name  # bit for bit, the padding included
        assert torch.equal(label8.long(), label) and torch.equal(size8, size)
        assert names8 == names and torch.equal(idx8, idx)


def test_padding_and_values_by_hand():
    """Two 2x3 images padded to 3x4: each output value is the table's entry of its byte (the source
    channel as given), the padding the pad value."""
    class Tables:
        @staticmethod
        def normalization_tables():
            tables = np.stack([np.arange(256, dtype=np.float32) * (c + 1) for c in range(3)])
            return tables, (2, 1, 0), -7.0

    images = torch.zeros(2, 3, 4, 3, dtype=torch.uint8)
    images[:, :2, :3] = torch.tensor([10, 20, 30], dtype=torch.uint8)
    out = DeviceNormalizer(Tables(), torch.device("cpu"))(images, torch.tensor([[2, 3], [3, 4]]))
    assert out.shape == (2, 3, 3, 4)
    assert out[0, :, 0, 0].tolist() == [30.0, 40.0, 30.0]  # channel 0 from byte 2 x 1, 1 from byte 1 x 2, ...
    assert out[0, :, 2, :].eq(-7.0).all() and out[0, :, :, 3].eq(-7.0).all()  # outside image 0's 2x3
    assert out[1, :, 2, 3].tolist() == [0.0, 0.0, 0.0]  # image 1 is 3x4: no padding (its zero bytes)


@pytest.mark.parametrize("channels_last", [False, True])
def test_evaluate_gives_the_same_confusion_from_uint8_batches(roots, channels_last):
    torch.manual_seed(0)
    model = build_segmenter("resnet18", 21)
    results = []
    for make in (lambda: voc(roots["voc"]), lambda: uint8_batches(voc(roots["voc"]))):
        dataset = Subset(make(), [0, 1, 2, 3])  # as the trainers' validation subsets
        loader = DataLoader(dataset, batch_size=2, collate_fn=eval_collate)
        predictions = []
        confusion = evaluate(model, loader, 21, torch.device("cpu"), channels_last=channels_last,
                             on_prediction=lambda i, n, p: predictions.append(p.copy()))
        results.append((confusion, predictions))
    assert results[0][0].sum() > 0 and torch.equal(results[0][0], results[1][0])
    assert all(np.array_equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_labels_stay_int64_when_uint8_cannot_hold_them(roots):
    """--ignore-label -1 pads VOC labels with -1: they are moved as int64 (256 classes here, so that
    the fixture's 255 borders are a class)."""
    dataset = uint8_batches(voc(roots["voc"], num_classes=256, ignore_label=-1))
    image, label, *_ = dataset[0]
    assert image.dtype == np.uint8 and label.dtype == np.int64 and label.min() == -1
