"""Tiny PASCAL-Context datasets in every accepted form, built by the tests themselves."""
import os

import numpy as np
import torch
from PIL import Image

from data.context_layout import CONTEXT_CATEGORY_IDS, map_category_ids

# (id, (h, w)): a wide, a tall, a square and an odd-sized image; the last one is in val.
TRAIN = (("2008_000002", (40, 60)), ("2008_000123", (75, 50)), ("2009_000010", (48, 48)))
VAL = (("2008_000007", (50, 71)), ("2010_000001", (64, 40)))
# 459-class ids outside the 60 (they must become background) next to the 60 themselves.
OTHER_IDS = (1, 3, 100, 200, 300, 459)


def label_map(rng, h, w):
    """A LabelMap of the full release: every one of the 60 ids (and some others) on a 2-pixel grid."""
    ids = np.array(CONTEXT_CATEGORY_IDS + OTHER_IDS)
    return ids[rng.integers(0, len(ids), ((h + 1) // 2, (w + 1) // 2))].repeat(2, 0).repeat(2, 1)[:h, :w]


def write_images(root, items, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    for name, (h, w) in items:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            os.path.join(root, "JPEGImages", name + ".jpg"), quality=95)


def write_list(path, ids):
    with open(path, "w") as f:
        f.writelines(i + "\n" for i in ids)


def make_context_mat(root, seed=0, lists=True):
    """(b): JPEGImages/, trainval/<id>.mat (459-class LabelMap), train.txt / val.txt.

    Returns {id: expected 0..59 mask}."""
    import scipy.io
    rng = np.random.default_rng(seed)
    write_images(root, TRAIN + VAL, seed)
    os.makedirs(os.path.join(root, "trainval"), exist_ok=True)
    expected = {}
    for name, (h, w) in TRAIN + VAL:
        labels = label_map(rng, h, w)
        scipy.io.savemat(os.path.join(root, "trainval", name + ".mat"), {"LabelMap": labels.astype(np.uint16)})
        expected[name] = map_category_ids(labels)
    if lists:
        write_list(os.path.join(root, "train.txt"), [n for n, _ in TRAIN])
        write_list(os.path.join(root, "val.txt"), [n for n, _ in VAL])
    return expected


def image_id(name):
    return int(name.replace("_", ""))


def make_context_cache(root, seed=0, legacy=False):
    """(c): JPEGImages/ and train.pth / val.pth as the original wrote them (torch.save of a dict
    image_id -> PIL mask), in reversed id order so that the order is seen to be kept.

    Returns ({id: mask}, {split: ids in cache order})."""
    rng = np.random.default_rng(seed)
    write_images(root, TRAIN + VAL, seed)
    expected, order = {}, {}
    for split, items in (("train", TRAIN), ("val", VAL)):
        masks = {}
        for name, (h, w) in reversed(items):
            expected[name] = map_category_ids(label_map(rng, h, w))
            masks[image_id(name)] = Image.fromarray(expected[name])
        torch.save(masks, os.path.join(root, f"{split}.pth"), _use_new_zipfile_serialization=not legacy)
        order[split] = [n for n, _ in reversed(items)]
    return expected, order


def make_context_layout(root, seed=0):
    """(a): the project layout itself. Returns {id: mask}."""
    rng = np.random.default_rng(seed)
    write_images(root, TRAIN + VAL, seed)
    os.makedirs(os.path.join(root, "SegmentationClassContext"), exist_ok=True)
    masks = {}
    for name, (h, w) in TRAIN + VAL:
        masks[name] = map_category_ids(label_map(rng, h, w))
        Image.fromarray(masks[name]).save(os.path.join(root, "SegmentationClassContext", name + ".png"))
    write_list(os.path.join(root, "train.txt"), [n for n, _ in TRAIN])
    write_list(os.path.join(root, "val.txt"), [n for n, _ in VAL])
    return masks


class RunsCommand:
    """Unpickling this calls os.system: what a malicious cache would do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def write_malicious_cache(path, marker, legacy=False):
    """A torch.save file whose unpickling would create `marker` (next to a real mask)."""
    payload = {2008000002: Image.fromarray(np.zeros((4, 4), np.uint8)), 2008000123: RunsCommand(f"touch {marker}")}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
