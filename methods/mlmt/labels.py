"""Image-level (multi-label) data for the MLMT classifier (train_mlmt.py).

Two sources of the class-presence vectors:

- any registry dataset (`--dataset`): class c is present in an image if one of its label pixels
  equals c (the ignore value counts for nothing); for VOC the background is present in every image,
  as in the original's label files. They are derived once, with a progress bar, and cached next to
  the list as `<list name>.mlmt-labels.npz`; the cache is keyed by the ids, the number of classes
  and the size and modification time of every label file, so it is rebuilt when any of them changes.
- the original's layout: `<data-dir>/train/<file>` and `val/<file>` images, listed in
  `train_img.txt` / `val_img.txt` (`<id>.jpg` per line), with `train_label.txt` / `val_label.txt`
  holding one row of 0/1 per image: the foreground classes first and the background LAST.

Labels are kept in class order (background first) as `uint8` (N, C); the classifier's targets are
in its unit order (background last, model/classifier.py): `to_unit_order`.

The three image pipelines of the original (Resize to a square, bilinear; ImageNet mean/std):
plain (resize, random flip) for labeled images and the teacher's view of unlabeled ones,
augmented (resize, colour jitter 0.4/0.4/0.4/0.1, random flip, Gaussian blur of radius U[0.1, 2.0]
always) for the student's view, validation (resize only). Every random draw comes from the key the
seeded sampler gives the sample (data/sampler.py), so a run does not depend on the workers.
"""
import hashlib
import io
import os
import sys

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data.transforms import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, check_label_values, read_label
from data.voc import DEFAULT_LISTS
from utils.checkpoint import atomic_write_bytes
from utils.errors import UserError

CACHE_FORMAT = "mlmt-labels-1"
# classes marked present in every image whatever the pixels say (the original's VOC files do so)
ALWAYS_PRESENT = {"pascal_voc": (0,)}
# registry datasets whose label PNGs do not hold the class indices themselves
NOT_CLASS_INDEX_PNGS = {"cityscapes": "its label PNGs hold the 34 Cityscapes label ids, not the 19 train ids "
                                      "(the paper has no Cityscapes MLMT result)"}
ORIGINAL_FILES = {"train": ("train", "train_img.txt", "train_label.txt"),
                  "val": ("val", "val_img.txt", "val_label.txt")}
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
BLUR_RADIUS = (0.1, 2.0)


class ImageLabels:
    """One split: ids, image paths and (N, C) uint8 presence labels in class order."""

    def __init__(self, ids, image_paths, labels, source):
        self.ids, self.image_paths = list(ids), list(image_paths)
        self.labels = np.asarray(labels, np.uint8)
        self.source = source  # where the labels came from, for messages

    def __len__(self):
        return len(self.ids)


def to_unit_order(labels):
    """Class order (background first) -> the classifier's unit order (background last)."""
    return np.roll(labels, -1, axis=1)


def from_unit_order(values):
    return np.roll(values, 1, axis=1)


# ---------------------------------------------------------------- the original's layout
def has_original_layout(data_dir):
    return all(os.path.isfile(os.path.join(data_dir, name)) for name in ORIGINAL_FILES["train"][1:])


def read_original_split(data_dir, split, num_classes):
    """<data-dir>/<split>/ images with <split>_img.txt and <split>_label.txt (background last)."""
    folder, image_list, label_list = ORIGINAL_FILES[split]
    image_list, label_list = os.path.join(data_dir, image_list), os.path.join(data_dir, label_list)
    for path in (image_list, label_list):
        if not os.path.isfile(path):
            raise UserError(f"{path} does not exist (the original's MLMT layout needs {folder}/, "
                            f"{os.path.basename(image_list)} and {os.path.basename(label_list)} in --data-dir)")
    with open(image_list) as f:
        files = [line.strip() for line in f]
    while files and not files[-1]:
        files.pop()
    for number, name in enumerate(files, 1):
        if not name:
            raise UserError(f"{image_list} line {number} is empty")
    rows = []
    with open(label_list) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = [int(v) for v in line.split()]
            except ValueError:
                raise UserError(f"{label_list} line {number}: {line.strip()[:60]!r} is not a row of 0/1 "
                                f"values") from None
            if len(row) != num_classes:
                raise UserError(f"{label_list} line {number} has {len(row)} values, expected {num_classes} "
                                f"(--num-classes; the foreground classes, then the background)")
            if any(v not in (0, 1) for v in row):
                raise UserError(f"{label_list} line {number} has values other than 0 and 1")
            rows.append(row)
    if len(rows) != len(files):
        raise UserError(f"{label_list} has {len(rows)} rows but {image_list} lists {len(files)} images: "
                        f"row i must belong to line i")
    if not files:
        raise UserError(f"{image_list} is empty")
    paths = [os.path.join(data_dir, folder, name) for name in files]
    for number, path in enumerate(paths, 1):
        if not os.path.isfile(path):
            raise UserError(f"{path} (line {number} of {image_list}) does not exist")
    ids = [os.path.splitext(name)[0] for name in files]
    return ImageLabels(ids, paths, from_unit_order(np.asarray(rows, np.uint8)), label_list)


# ---------------------------------------------------------------- labels derived from label PNGs
def _presence(path, num_classes, ignore_label):
    label = read_label(path)
    check_label_values(label, num_classes, ignore_label, path)
    values = label[(label >= 0) & (label < num_classes)]
    return np.bincount(values.ravel(), minlength=num_classes)[:num_classes] > 0


class _PresenceReader(Dataset):
    def __init__(self, paths, num_classes, ignore_label):
        self.paths, self.num_classes, self.ignore_label = paths, num_classes, ignore_label

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return _presence(self.paths[index], self.num_classes, self.ignore_label)


def _as_is(item):
    return item


def cache_key(ids, label_paths, num_classes, ignore_label, always_present):
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{num_classes}|{ignore_label}|{tuple(always_present)}".encode())
    for name, path in zip(ids, label_paths):
        try:
            info = os.stat(path)
        except OSError:
            raise UserError(f"label {path} (image {name}) does not exist") from None
        digest.update(f"\n{name}|{path}|{info.st_size}|{info.st_mtime_ns}".encode())
    return digest.hexdigest()


def read_cache(path, key):
    if not path or not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return np.array(data["labels"], np.uint8)
    except Exception:  # an unreadable cache is simply rebuilt
        return None


def write_cache(path, key, labels, log=print):
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), labels=labels)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except UserError as exc:
        log(f"note: the image-level labels are not cached ({exc}); they will be derived again next time")
        return False
    return True


def derive_labels(ids, label_paths, num_classes, ignore_label, always_present=(), cache_path=None,
                  num_workers=0, log=print):
    """(N, C) uint8 presence of each class in each label PNG, from the cache when it is current."""
    key = cache_key(ids, label_paths, num_classes, ignore_label, always_present)
    labels = read_cache(cache_path, key)
    if labels is not None and labels.shape == (len(ids), num_classes):
        log(f"image-level labels of {len(ids)} images: {cache_path}")
        return labels
    log(f"deriving image-level labels from {len(ids)} label PNGs "
        f"({os.path.dirname(label_paths[0]) if label_paths else ''}; cached once done)")
    reader = DataLoader(_PresenceReader(label_paths, num_classes, ignore_label), batch_size=None,
                        num_workers=num_workers, collate_fn=_as_is,
                        generator=torch.Generator())  # not the global one: a first run would draw from it
    labels = np.zeros((len(ids), num_classes), np.uint8)
    with tqdm(total=len(ids), desc="image-level labels", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:
        for index, present in enumerate(reader):
            labels[index] = present
            bar.update(1)
    labels[:, list(always_present)] = 1
    if cache_path and write_cache(cache_path, key, labels, log):
        log(f"cached in {cache_path}")
    return labels


def cache_path_for(dataset, list_candidates, data_dir, split):
    """Next to the list the dataset was read from (the first candidate holding exactly its ids),
    else in the data folder."""
    for path in list_candidates:
        if path and os.path.isfile(path):
            with open(path) as f:
                listed = [line.split()[0] for line in f if line.strip()]
            if listed == list(dataset.ids):
                stem = os.path.splitext(os.path.basename(path))[0]
                return os.path.join(os.path.dirname(os.path.abspath(path)), f"{stem}.mlmt-labels.npz")
    return os.path.join(data_dir, f"{split}.mlmt-labels.npz")


def default_list_candidates(data_dir, data_list, split, dataset):
    return [data_list, getattr(dataset, "list_path", None), DEFAULT_LISTS.get(split),
            os.path.join(data_dir, f"{split}.txt"), os.path.join(data_dir, "lists", f"{split}.txt")]


def missing_classes(labels, indices=None):
    """Class indices with no positive among `indices` (all rows if None)."""
    rows = labels if indices is None else labels[np.asarray(indices, np.int64)]
    return np.flatnonzero(rows.sum(0) == 0).tolist()


# ---------------------------------------------------------------- images
def read_rgb_pil(path):
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {path} (corrupt or truncated: {exc})") from None


def to_chw_uint8(image):
    """PIL RGB -> uint8 3xHxW. The loaders ship bytes (a quarter of float32's), and the step normalises
    them on its device with normalize_images."""
    return np.ascontiguousarray(np.asarray(image, np.uint8).transpose(2, 0, 1))


def normalize_images(images, mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB):
    """uint8 (B, 3, H, W) on any device -> float32 (x / 255 - mean) / std: ToTensor + Normalize's
    float32 operations in their order. Every divisor is a tensor on the images' device, so each
    division is a true one (a CUDA division by a CPU scalar multiplies by its reciprocal instead)."""
    def constant(values):
        return torch.tensor(values, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)

    x = images.float() / constant([255.0])
    return (x - constant(mean)) / constant(std)


JITTER_ORDER = ("brightness", "contrast", "saturation", "hue")
# the draws of an unlabeled item, one float64 row: the teacher view's flip; the jitter factors in
# JITTER_ORDER; the order in which they apply (a permutation of 0..3); the student view's flip; the
# blur radius (flips: 1.0 = flip)
DRAWS = ("teacher_flip", "brightness", "contrast", "saturation", "hue", "order0", "order1", "order2", "order3",
         "student_flip", "blur_radius")


def view_draws(rng):
    """The random numbers of an unlabeled item's two views, drawn in the order of the original's
    transforms: the teacher view's flip, torchvision's ColorJitter(0.4, 0.4, 0.4, 0.1) (a factor
    drawn uniformly per adjustment, hue a shift in [-0.1, 0.1], then their order), the student
    view's flip, the blur radius."""
    teacher_flip = rng.random() < 0.5
    factors = [rng.uniform(max(0.0, 1 - JITTER[name]), 1 + JITTER[name]) for name in JITTER_ORDER[:3]]
    hue = rng.uniform(-JITTER["hue"], JITTER["hue"])
    order = rng.permutation(len(JITTER_ORDER))
    student_flip = rng.random() < 0.5
    radius = rng.uniform(*BLUR_RADIUS)
    return np.array([teacher_flip, *factors, hue, *order, student_flip, radius], np.float64)


def color_jitter(image, draws):
    """The four adjustments of ColorJitter with the factors and order of `draws` (PIL, as torchvision)."""
    adjust = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
              "saturation": TF.adjust_saturation, "hue": TF.adjust_hue}
    for k in draws[5:9].astype(int):
        name = JITTER_ORDER[k]
        image = adjust[name](image, float(draws[1 + k]))
    return image


def flipped(image, flip):
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image


def augmented_view(resized, draws):
    image = flipped(color_jitter(resized, draws), draws[9] > 0.5)
    return to_chw_uint8(image.filter(ImageFilter.GaussianBlur(radius=float(draws[10]))))


class ClassifierImages(Dataset):
    """The MLMT items of one split; `mode`:

    labeled   -> (plain view, targets float32 (C,) in unit order, index)
    unlabeled -> (plain view for the teacher, augmented view for the student, index); the two views
                 are flipped independently; with device_augment: (the resized image, its view_draws,
                 index), the views made on the training device (methods/mlmt/views.py)
    val       -> (the image resized, targets, index)

    Each view is the image resized to size x size (bilinear), then transformed; views are uint8
    3xHxW (normalize_images makes them the networks' input). An item may be (index, key) as
    yielded by data.sampler; the key seeds all its randomness."""

    MODES = ("labeled", "unlabeled", "val")

    def __init__(self, split, mode, size=320, device_augment=False):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        self.split, self.mode, self.size, self.device_augment = split, mode, size, device_augment
        self.ids = split.ids
        self.targets = to_unit_order(split.labels).astype(np.float32)

    def __len__(self):
        return len(self.split)

    def __getitem__(self, item):
        index, key = item if isinstance(item, tuple) else (item, None)
        resized = read_rgb_pil(self.split.image_paths[index]).resize((self.size, self.size), Image.BILINEAR)
        if self.mode == "val":
            return to_chw_uint8(resized), self.targets[index], index
        rng = np.random.default_rng(key if key is not None else np.random.randint(0, 2**31 - 1))
        if self.mode == "labeled":
            return to_chw_uint8(flipped(resized, rng.random() < 0.5)), self.targets[index], index
        draws = view_draws(rng)
        if self.device_augment:  # the views are made on the device (methods/mlmt/views.py)
            return to_chw_uint8(resized), draws, index
        return to_chw_uint8(flipped(resized, draws[0] > 0.5)), augmented_view(resized, draws), index
