"""Cityscapes (fine annotations, 19 classes) in the original's layout and pipeline.

Accepted layouts under --data-dir (default ./data/city_dataset/):

    leftImg8bit/{train,val}/<city>/<frame>_leftImg8bit.png            (leftImg8bit_trainvaltest.zip)
    gtFine_trainvaltest/gtFine/{train,val}/<city>/<frame>_gtFine_labelIds.png
        the original's layout: gtFine_trainvaltest.zip extracted into a folder of that name, or
    gtFine/{train,val}/<city>/<frame>_gtFine_labelIds.png
        the official extraction of gtFine_trainvaltest.zip directly under the root.

File order. The original listed the images with an unsorted os.walk, so its index order depended on
the filesystem and cannot be reproduced. Here the images are sorted by path. The split files index
this order, so the original authors' `splits/city/split_0.pkl` selects other images here than it did
for them (it still loads: it is a permutation of the 2,975 training images).

Labels. The labelIds are mapped to the 19 trainIds (road ... bicycle); the void ids become 250, the
ignore value. -1 (license plate) is in the table as well; an 8-bit PNG can only store it as 255, so
255 is read as -1. Any other value is an error naming the file.

Training (the original's): the image is resized to 1024x512 (PIL bilinear, antialiased), the label
by PIL nearest; random crop of --input-size (README: 256,512); horizontal flip with probability 1/2;
then RGB -> BGR, minus (73.15835921, 82.90891754, 72.39239876) (the original's mean, subtracted
channel by channel after the swap), divided by 255, CHW.

Evaluation (the original's): the image is resized to 1024x512 and the labels are downsampled by PIL
nearest to 1024x512 and scored there. With --eval-full-res the labels stay at their full 2048x1024
(the evaluator upsamples the logits to the label's size), the protocol most later papers report.

Resizing uses PIL as the original did: OpenCV's INTER_LINEAR / INTER_NEAREST pick other values. For
training only the crop is resized (PIL's `box`), which gives exactly the pixels of resizing the
whole image and then cropping when the resize factor is a whole number (2 for real Cityscapes); other
sizes take the plain resize-then-crop path. Decoding the 2048x1024 PNG is most of the cost (~40 ms).

--data-list (optional): a text file of images of the split, one per line, as names
('aachen_000000_000019'), '<city>/<frame>' or paths ending in _leftImg8bit.png; the dataset then
holds those images in that order. Without it, every image of the split, sorted.
"""
import os

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from data.classes import generic_class_names
from data.spec import DatasetSpec
from data.transforms import compact_label
from utils.errors import UserError

CITY_IGNORE_LABEL = 250
# Subtracted from the B, G, R channels in this order: the original swaps RGB -> BGR and then
# subtracts what is an RGB-order mean (a quirk kept for fidelity), then divides by 255.
CITY_MEAN = np.array((73.15835921, 82.90891754, 72.39239876), np.float64)

VOID_LABEL_IDS = (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, -1)
VALID_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITY_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)
# The official Cityscapes colours of the 19 trainIds.
CITY_COLOURS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

TRAIN_RESOLUTION = (512, 1024)  # (height, width) the training images are resized to
EVAL_RESOLUTION = (512, 1024)   # the network input (and, by default, the scored labels) in evaluation
IMAGE_SUFFIX, LABEL_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png"
LABEL_LAYOUTS = (os.path.join("gtFine_trainvaltest", "gtFine"), "gtFine")  # original first, then official


def _label_tables():
    """(lookup labelId byte -> trainId, known[byte]): 8-bit label PNGs index these 256-entry tables."""
    lut = np.full(256, CITY_IGNORE_LABEL, np.uint8)
    known = np.zeros(256, bool)
    for label_id in VOID_LABEL_IDS:
        known[label_id % 256] = True  # -1 is stored as 255 in an 8-bit file
    for train_id, label_id in enumerate(VALID_LABEL_IDS):
        lut[label_id] = train_id
        known[label_id] = True
    return lut, known


LABEL_TO_TRAIN, KNOWN_LABEL_IDS = _label_tables()


def encode_labels(label_ids):
    """labelIds (any integer array) -> trainIds int64, void -> 250; unknown ids -> ValueError."""
    values = np.asarray(label_ids).astype(np.int64)
    values = np.where(values == -1, 255, values)
    known = (values >= 0) & (values <= 255) & KNOWN_LABEL_IDS[np.clip(values, 0, 255)]
    if not known.all():
        bad = np.unique(np.asarray(label_ids)[~known])
        raise ValueError(f"labelIds {bad[:5].tolist()} are not Cityscapes labelIds")
    return LABEL_TO_TRAIN[values].astype(np.int64)


def city_palette(n=256):
    palette = np.zeros((n, 3), np.uint8)
    palette[:len(CITY_COLOURS)] = CITY_COLOURS
    return palette


def class_names(num_classes, data_dir=None):
    return CITY_CLASSES if num_classes == len(CITY_CLASSES) else generic_class_names(num_classes)


def _layout_error(root, split, missing):
    return UserError(
        f"--data-dir {root}: {missing}. Expected leftImg8bit/{split}/<city>/*{IMAGE_SUFFIX} "
        f"(leftImg8bit_trainvaltest.zip) with either gtFine_trainvaltest/gtFine/{split}/<city>/"
        f"*{LABEL_SUFFIX} (the original's layout: gtFine_trainvaltest.zip extracted into a folder "
        f"named gtFine_trainvaltest) or gtFine/{split}/<city>/*{LABEL_SUFFIX} (gtFine_trainvaltest.zip "
        f"extracted into the root); both zips: https://www.cityscapes-dataset.com/downloads/")


def find_split_dirs(root, split):
    """(image folder, label folder) of a split; a UserError naming both layouts if absent."""
    if not os.path.isdir(root):
        raise _layout_error(root, split, "the folder does not exist")
    image_dir = os.path.join(root, "leftImg8bit", split)
    label_dirs = [os.path.join(root, layout, split) for layout in LABEL_LAYOUTS]
    label_dir = next((d for d in label_dirs if os.path.isdir(d)), None)
    if not os.path.isdir(image_dir):
        raise _layout_error(root, split, f"there is no leftImg8bit/{split}/ folder")
    if label_dir is None:
        raise _layout_error(root, split, f"there is no gtFine_trainvaltest/gtFine/{split}/ nor gtFine/{split}/ folder")
    return image_dir, label_dir


def discover(image_dir, suffix=IMAGE_SUFFIX):
    """Sorted names '<city>/<frame>' of every *<suffix> file (default *_leftImg8bit.png) under image_dir."""
    found = []
    for folder, _, files in os.walk(image_dir):
        rel = os.path.relpath(folder, image_dir)
        for f in files:
            if f.endswith(suffix):
                frame = f[:-len(suffix)]
                found.append(frame if rel == "." else os.path.join(rel, frame).replace(os.sep, "/"))
    return sorted(found)


def _name_from_entry(entry):
    """A --data-list line -> '<city>/<frame>': accepts 'aachen_000000_000019', 'aachen/aachen_..._leftImg8bit.png',
    'leftImg8bit/train/aachen/...png' or a label file name (the city is the frame's first '_' field)."""
    entry = entry.strip().replace("\\", "/")
    base = entry.rsplit("/", 1)[-1]
    for suffix in (IMAGE_SUFFIX, LABEL_SUFFIX, ".png"):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
            break
    parts = entry.split("/")
    city = parts[-2] if len(parts) >= 2 else base.split("_")[0]
    return f"{city}/{base}"


def read_names(list_path, flag):
    if not os.path.isfile(list_path):
        raise UserError(f"{flag} {list_path} does not exist")
    with open(list_path) as f:
        names = [_name_from_entry(line.split()[0]) for line in f if line.strip()]
    if not names:
        raise UserError(f"{flag} {list_path} is empty")
    return names


def open_image(path):
    """The RGB image as a (loaded) PIL image; a clear error if missing or unreadable."""
    try:
        img = Image.open(path)  # not `with`: closing the image would drop its pixels; load() closes the file
        img.load()
        return img if img.mode == "RGB" else img.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {path} (corrupt or truncated: {exc})") from None


def open_label_ids(path):
    """The labelIds PNG as a PIL 'L' image, every pixel checked against the table."""
    try:
        img = Image.open(path)
        img.load()
        if img.mode in ("L", "P"):  # a palette PNG stores the ids as its indices: read them as is
            label = img if img.mode == "L" else Image.frombytes("L", img.size, img.tobytes())
            counts = np.asarray(label.histogram()[:256])
        elif img.mode in ("I", "I;16", "I;16B", "I;16L"):
            values = np.asarray(img).astype(np.int64)
            if values.min() < 0 or values.max() > 255:
                raise UserError(f"label {path} has labelIds outside 0..255: it is not a Cityscapes "
                                f"*{LABEL_SUFFIX} file")
            label = Image.fromarray(values.astype(np.uint8))
            counts = np.bincount(values.ravel(), minlength=256)
        else:
            raise UserError(f"label {path} has mode {img.mode}: expected a single-channel labelIds PNG")
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"label {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read label {path} (corrupt or truncated: {exc})") from None
    unknown = np.flatnonzero((counts > 0) & ~KNOWN_LABEL_IDS)
    if unknown.size:
        raise UserError(f"label {path} has values {unknown[:5].tolist()} that are not Cityscapes labelIds "
                        f"(expected *{LABEL_SUFFIX}, not trainIds or colour images)")
    return label


def pil_resize(image, size_hw, resample, crop=None):
    """PIL resize to size_hw = (h, w), then crop (top, left, h, w) of the result.

    With a crop and a whole-number factor between the sizes, only the crop is computed, through
    PIL's `box`: PIL places each output sample at the same source position and clips the filter
    window to the whole image (not to the box), so the result is the same, pixel for pixel
    (tests/test_cityscapes.py checks it), at a quarter of the cost for a 512x256 crop.
    """
    out_h, out_w = size_hw
    src_w, src_h = image.size
    if crop is None:
        return image if image.size == (out_w, out_h) else image.resize((out_w, out_h), resample)
    top, left, h, w = crop
    if image.size == (out_w, out_h):
        return image.crop((left, top, left + w, top + h))
    if src_w % out_w == 0 and src_h % out_h == 0:
        fx, fy = src_w // out_w, src_h // out_h
        box = (left * fx, top * fy, (left + w) * fx, (top + h) * fy)
        return image.resize((w, h), resample, box=box)
    return image.resize((out_w, out_h), resample).crop((left, top, left + w, top + h))


# (v - mean) / 255 for every byte v, per BGR channel: computed in float64 like the original, rounded to
# float32 once. Looking the values up gives the very same floats as computing them per pixel, 10x faster.
_NORMALIZED = ((np.arange(256, dtype=np.float64)[None, :] - CITY_MEAN[:, None]) / 255.0).astype(np.float32)


def normalize(rgb):
    """uint8 RGB HxWx3 -> float32 3xHxW: BGR, minus CITY_MEAN, / 255."""
    out = np.empty((3,) + rgb.shape[:2], np.float32)
    for channel in range(3):  # output channel 0 is blue, i.e. RGB channel 2
        np.take(_NORMALIZED[channel], rgb[:, :, 2 - channel], out=out[channel])
    return out


class CityscapesSegmentation(Dataset):
    """Items: (image float32 3xHxW, label int64 HxW (trainIds, 250 void), size int64 [h, w], name, index).

    train=True: resize to TRAIN_RESOLUTION, random crop of crop_size, random flip; `size` is the
    original image's (h, w). train=False: resize to `resolution`; labels at that resolution too,
    or at full resolution with full_res_labels; `size` = the label's (h, w), the scored region.
    native_size (--full-resolution, today's protocol): no resizing: training crops of the image as it
    is, evaluation of the image and its label as they are (2048x1024).
    Names are '<city>/<frame>'. An item may be (index, key): the key seeds that sample's
    augmentation (np.random.default_rng(key)), so a run does not depend on the number of workers.
    `uint8_eval` (train=False): the image stays uint8 RGB, normalised on the device by the evaluator
    (normalization_tables()).
    """
    uint8_eval = False

    def __init__(self, root, split="train", list_path=None, crop_size=(256, 512), train=True,
                 resolution=None, full_res_labels=False, list_flag="--data-list", check_files=True,
                 native_size=False):
        self.root, self.split, self.train = root, split, train
        self.image_dir, self.label_dir = find_split_dirs(root, split)
        self.resolution = tuple(resolution or (TRAIN_RESOLUTION if train else EVAL_RESOLUTION))
        self.crop_h, self.crop_w = crop_size
        self.full_res_labels = full_res_labels or native_size
        self.native_size = native_size  # each image at its own size (2048x1024): no resizing at all
        if train and not native_size and (self.crop_h > self.resolution[0] or self.crop_w > self.resolution[1]):
            raise UserError(f"--input-size {self.crop_h},{self.crop_w} is larger than the "
                            f"{self.resolution[0]}x{self.resolution[1]} (h x w) Cityscapes training images")
        if list_path:
            self.ids = read_names(list_path, list_flag)
        else:
            self.ids = discover(self.image_dir)
            if not self.ids:
                raise _layout_error(root, split, f"{self.image_dir} holds no *{IMAGE_SUFFIX} file")
            if check_files:
                self._check_no_orphan_labels()
        if check_files:
            self._check_files(list_path)

    def _check_no_orphan_labels(self):
        """A label whose image is missing means an incomplete extraction of leftImg8bit: say so now,
        rather than train on fewer images than the split files count."""
        images = set(self.ids)
        orphans = [name for name in discover(self.label_dir, LABEL_SUFFIX) if name not in images]
        if orphans:
            raise UserError(f"label {self.label_path(orphans[0])} has no image {self.image_path(orphans[0])} "
                            f"({len(orphans)} label(s) without image in {self.label_dir}): re-extract "
                            f"leftImg8bit_trainvaltest.zip, or remove the labels of images you left out")

    def image_path(self, name):
        return os.path.join(self.image_dir, name + IMAGE_SUFFIX)

    def label_path(self, name):
        return os.path.join(self.label_dir, name + LABEL_SUFFIX)

    def _check_files(self, list_path):
        where = f" (listed in {list_path})" if list_path else ""
        for name in self.ids:
            image, label = self.image_path(name), self.label_path(name)
            if not os.path.isfile(image):
                raise UserError(f"image {image}{where} does not exist")
            if not os.path.isfile(label):
                raise UserError(f"label {label} for image {image} does not exist")

    def __len__(self):
        return len(self.ids)

    def _read(self, name):
        image, label = open_image(self.image_path(name)), open_label_ids(self.label_path(name))
        if image.size != label.size:
            raise UserError(f"label {self.label_path(name)} is {label.size[0]}x{label.size[1]} but its image "
                            f"{self.image_path(name)} is {image.size[0]}x{image.size[1]}")
        return image, label

    def __getitem__(self, item):
        index, key = item if isinstance(item, tuple) else (item, None)
        name = self.ids[index]
        if not self.train:
            rgb, label = self._eval_pair(index)
            if self.uint8_eval:
                return np.ascontiguousarray(rgb), compact_label(label), np.array(label.shape, np.int64), name, index
            return normalize(rgb), label, np.array(label.shape, np.int64), name, index
        rng = np.random.default_rng(key if key is not None else np.random.randint(0, 2**31 - 1))
        image, label = self._read(name)
        size = np.array((image.size[1], image.size[0]), np.int64)
        resolution = tuple(size) if self.native_size else self.resolution
        if self.native_size and (self.crop_h > resolution[0] or self.crop_w > resolution[1]):
            raise UserError(f"--input-size {self.crop_h},{self.crop_w} is larger than {self.image_path(name)} "
                            f"({resolution[1]}x{resolution[0]})")
        top = int(rng.integers(0, resolution[0] - self.crop_h + 1))
        left = int(rng.integers(0, resolution[1] - self.crop_w + 1))
        crop = (top, left, self.crop_h, self.crop_w)
        rgb = np.asarray(pil_resize(image, resolution, Image.BILINEAR, crop))
        ids = np.asarray(pil_resize(label, resolution, Image.NEAREST, crop))
        if rng.random() < 0.5:
            rgb, ids = rgb[:, ::-1], ids[:, ::-1]
        return normalize(rgb), LABEL_TO_TRAIN[ids].astype(np.int64), size, name, index

    @staticmethod
    def normalization_tables():
        """(tables, sources, pad) as normalize(): output channel c is tables[c][rgb[..., sources[c]]]."""
        return _NORMALIZED, (2, 1, 0), 0.0

    def _eval_pair(self, index):
        name = self.ids[index]
        image, label = self._read(name)
        if self.native_size:
            return np.asarray(image), LABEL_TO_TRAIN[np.asarray(label)].astype(np.int64)
        rgb = np.asarray(pil_resize(image, self.resolution, Image.BILINEAR))
        if not self.full_res_labels:
            label = pil_resize(label, self.resolution, Image.NEAREST)
        return rgb, LABEL_TO_TRAIN[np.asarray(label)].astype(np.int64)

    def label_indices(self, name):
        """The label of `name` as trainIds at full resolution (for `python -m data.check`)."""
        return encode_labels(np.asarray(open_label_ids(self.label_path(name))))

    def display(self, index):
        """(RGB uint8 HxWx3, label int64 HxW) at the scoring resolution, for montages."""
        rgb, label = self._eval_pair(index)
        if rgb.shape[:2] != label.shape:  # full-resolution scoring: show the full image
            rgb = np.asarray(open_image(self.image_path(self.ids[index])))
        return np.ascontiguousarray(rgb), label


def build_train(config):
    return CityscapesSegmentation(config.data_dir, "train", config.data_list, crop_size=tuple(config.input_size),
                                  train=True, native_size=config.full_resolution, check_files=config.check_files)


def build_val(config):
    return CityscapesSegmentation(config.data_dir, "val", config.data_list, train=False,
                                  full_res_labels=config.eval_full_res, native_size=config.full_resolution,
                                  check_files=config.check_files)


SPEC = DatasetSpec(
    name="cityscapes",
    default_data_dir="./data/city_dataset/",
    num_classes=len(CITY_CLASSES),
    ignore_label=CITY_IGNORE_LABEL,
    palette=city_palette(),
    class_names=class_names,
    build_train=build_train,
    build_val=build_val,
)
