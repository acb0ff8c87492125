"""PASCAL-Context, 60 classes (59 + background), in the original's training and evaluation pipelines.

Project layout under --data-dir (default ./data/pcontext_dataset/):

    JPEGImages/<id>.jpg                 the VOC 2010 images
    SegmentationClassContext/<id>.png   single-channel class indices 0..59 (0 = background)
    train.txt, val.txt                  ids, one per line (4,996 / 5,104 in the standard split);
                                        the line number is the index the split files refer to

Convert the annotations you have into it once with

    python -m data.context prepare --data-dir ./data/pcontext_dataset/

which accepts (a) this layout already present (e.g. converted by another toolbox): used as is;
(b) the official full-label release: trainval/<id>.mat (trainval.tar.gz from the PASCAL-Context
site), a `LabelMap` of the 459-class ids, with the train/val id lists at <root>/train.txt and
<root>/val.txt (or --train-ids / --val-ids); (c) the original's mask caches train.pth / val.pth
(torch-saved dicts id -> PIL mask), read without unpickling arbitrary objects; the lists are then
written in the caches' order, so that the original authors' splits/pc/split_0.pkl selects the same
images as for them (with (b), that holds only if your lists are in the Detail API's order).

Labels. Label k is the position of the original category id in the sorted list of the 60 ids
below; any other id becomes background (0), as in the masks the original trained on. Background is
a class like the others and nothing is ignored: the matching flag is `--ignore-label -1` (no pixel
has that value; padding is background 0).

Training (the original's): horizontal flip (p = 1/2); the short side resized to a random integer in
[252, 1010] (PIL bilinear / nearest); padded right and bottom to the crop (image 0, mask 0); random
crop of --input-size (321,321); Gaussian blur of radius U[0, 1) with p = 1/2; RGB / 255, minus the
mean of --context-train-mean, divided by the ImageNet std. Evaluation: short side 512, centre crop
512x512 (only that crop is scored), ImageNet mean in RGB order.
"""
import argparse
import io
import os
import pickle
import sys
import zipfile

import numpy as np
from PIL import Image, ImageFilter
from torch.utils.data import Dataset

from data.classes import generic_class_names, voc_palette
from data.spec import DatasetSpec
from data.transforms import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, context_train_normalization
from utils.checkpoint import atomic_write_bytes
from utils.errors import ArgumentParser, UserError

# The 59 PASCAL-Context benchmark categories among the 459 of the full release, plus 0: sorted.
CONTEXT_CATEGORY_IDS = (
    0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113,
    115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326,
    347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)
# In label order. The full release numbers its categories alphabetically, so this is also the
# alphabetical order (the original's evaluate.py printed another, wrong, order).
CONTEXT_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse",
    "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform", "pottedplant",
    "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table", "track",
    "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)
NUM_CLASSES = len(CONTEXT_CLASSES)
CONTEXT_IGNORE_LABEL = -1  # nothing is ignored: every pixel, background included, is a class
IMAGE_DIR, MASK_DIR, MAT_DIR = "JPEGImages", "SegmentationClassContext", "trainval"
SPLITS = ("train", "val")
BASE_SIZE = 505                                  # the original's base size: short side in [252, 1010]
SHORT_SIDE_RANGE = (int(BASE_SIZE * 0.5), int(BASE_SIZE * 2.0))
EVAL_SIZE = 512                                  # short side and centre crop in evaluation
STANDARD_SIZES = {"train": 4996, "val": 5104}
DEFAULT_DATA_DIR = "./data/pcontext_dataset/"
FLIP_LEFT_RIGHT = getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT  # Image.Transpose: Pillow >= 9.1


def map_category_ids(label_map):
    """459-class ids (any integer array) -> uint8 labels 0..59; ids outside the 60 -> 0."""
    label_map = np.asarray(label_map)
    if label_map.size == 0:
        return label_map.astype(np.uint8)
    if label_map.min() < 0:
        raise ValueError(f"negative category ids {np.unique(label_map[label_map < 0])[:5].tolist()}")
    lut = np.zeros(max(int(label_map.max()) + 1, CONTEXT_CATEGORY_IDS[-1] + 1), np.uint8)
    lut[list(CONTEXT_CATEGORY_IDS)] = np.arange(NUM_CLASSES, dtype=np.uint8)
    return lut[label_map.astype(np.int64)]


def context_palette(n=256):
    return voc_palette(n)


def class_names(num_classes, data_dir=None):
    return CONTEXT_CLASSES if num_classes == NUM_CLASSES else generic_class_names(num_classes)


# --------------------------------------------------------------------------------------------
# Where the annotations are

def _three_forms(root):
    return (f"put one of: (a) the project layout {root}/{IMAGE_DIR}/<id>.jpg + {root}/{MASK_DIR}/<id>.png "
            f"(values 0..59) + {root}/train.txt and {root}/val.txt; (b) the official full-label release "
            f"(trainval.tar.gz) as {root}/{MAT_DIR}/<id>.mat with the id lists at {root}/train.txt and "
            f"{root}/val.txt; (c) the original's mask caches {root}/train.pth and {root}/val.pth "
            f"(pascal_context_labels.tar.gz) with the images in {root}/{IMAGE_DIR}/; (b) and (c) are "
            f"converted to (a) once by `python -m data.context prepare --data-dir {root}`")


def _mat_dir(folder):
    """The folder holding <id>.mat files: folder/trainval/ or folder itself; None if neither."""
    for candidate in (os.path.join(folder, MAT_DIR), folder):
        if os.path.isdir(candidate) and any(f.endswith(".mat") for f in os.listdir(candidate)):
            return candidate
    return None


def _caches(folder):
    return {split: os.path.join(folder, f"{split}.pth") for split in SPLITS
            if os.path.isfile(os.path.join(folder, f"{split}.pth"))}


def find_source(folder):
    """('cache', {split: path}) or ('mat', mat folder) or (None, None). Caches come first: they
    hold the masks the original trained on and fix its list order."""
    caches = _caches(folder) if os.path.isdir(folder) else {}
    if caches:
        return "cache", caches
    mat_dir = _mat_dir(folder) if os.path.isdir(folder) else None
    if mat_dir:
        return "mat", mat_dir
    return None, None


def read_ids(path, flag):
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path} does not exist")
    with open(path) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise UserError(f"{flag} {path} is empty")
    return ids


def missing_files(root, ids):
    """The first listed id whose image or mask is missing: (id, path), or None."""
    for i in ids:
        for path in (os.path.join(root, IMAGE_DIR, i + ".jpg"), os.path.join(root, MASK_DIR, i + ".png")):
            if not os.path.isfile(path):
                return i, path
    return None


def check_prepared(root, split, list_path=None, list_flag="--data-list"):
    """The split's list path when root is in the project layout; otherwise a UserError that says
    what was found and how to convert it."""
    if not os.path.isdir(root):
        raise UserError(f"--data-dir {root} does not exist: {_three_forms(root)}")
    converted = os.path.isdir(os.path.join(root, MASK_DIR))
    if list_path and converted and not os.path.isfile(list_path):
        raise UserError(f"{list_flag} {list_path} does not exist")
    list_path = list_path or os.path.join(root, f"{split}.txt")
    if converted and os.path.isfile(list_path):
        return list_path
    form, where = find_source(root)
    if form == "cache":
        found = "the original's mask caches " + ", ".join(where.values())
    elif form == "mat":
        found = f"the full-label release {where}/<id>.mat"
    else:
        raise UserError(f"--data-dir {root} holds no usable PASCAL-Context data: {_three_forms(root)}")
    raise UserError(f"--data-dir {root} is not converted yet ({os.path.join(root, MASK_DIR)} or "
                    f"{list_path} is missing); it holds {found}: convert it once with "
                    f"`python -m data.context prepare --data-dir {root}`")


# --------------------------------------------------------------------------------------------
# Reading the original's mask caches without running anything from them

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of a torch.save file in the pre-zip format


class _Refused(pickle.UnpicklingError):
    """A global or a storage that a mask cache has no business holding."""


class _PickledImage:
    """Stands in for PIL.Image.Image while unpickling: keeps the pickled state, runs nothing."""

    def __setstate__(self, state):
        self.state = state


def _latin1_encode(text, encoding="latin1"):
    """Pickle protocol 2 stores bytes as _codecs.encode(str, 'latin1'); nothing else is allowed."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


def _reconstructor(cls, base, state):
    """Protocol 0/1 pickles rebuild objects through copyreg._reconstructor: only our stand-in."""
    if cls is not _PickledImage or base is not object or state is not None:
        raise _Refused("copyreg._reconstructor is only allowed for PIL images")
    return _PickledImage()


class _MaskCacheUnpickler(pickle.Unpickler):
    """Rebuilds plain containers and PIL images (as _PickledImage) only; every other global, and any
    tensor storage, is refused before anything is called."""

    _ALLOWED = {
        ("PIL.Image", "Image"): _PickledImage,
        ("_codecs", "encode"): _latin1_encode,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("copy_reg", "_reconstructor"): _reconstructor,
        ("builtins", "object"): object,
        ("__builtin__", "object"): object,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name} is not allowed") from None

    def persistent_load(self, pid):
        raise _Refused("tensor storages are not allowed")


def _unpickle_cache(path):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(names) != 1:
                raise pickle.UnpicklingError("not a torch.save archive (no single data.pkl)")
            with archive.open(names[0]) as f:
                return _MaskCacheUnpickler(f, encoding="latin1").load()
    with open(path, "rb") as f:  # the format before PyTorch 1.6: magic, protocol, sys info, object
        # latin1: Python 2 pickles hold the mask bytes as str (decoded back to bytes below)
        if _MaskCacheUnpickler(f, encoding="latin1").load() != LEGACY_MAGIC:
            raise pickle.UnpicklingError("not a torch.save file")
        _MaskCacheUnpickler(f, encoding="latin1").load()
        _MaskCacheUnpickler(f, encoding="latin1").load()
        return _MaskCacheUnpickler(f, encoding="latin1").load()


def cache_key_to_id(key):
    """The Detail API keys masks by image_id, e.g. 2008000002 for 2008_000002.jpg."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        text = str(int(key))
        return f"{text[:4]}_{text[4:]}" if len(text) == 10 else text
    if isinstance(key, str):
        key = key.rsplit("/", 1)[-1]
        for ext in (".jpg", ".png"):
            if key.endswith(ext):
                key = key[:-len(ext)]
        return f"{key[:4]}_{key[4:]}" if len(key) == 10 and key.isdigit() else key
    raise UserError(f"unexpected mask key {key!r}")


def _mask_from_state(obj, path, key):
    state = getattr(obj, "state", None) if isinstance(obj, _PickledImage) else None
    if not isinstance(state, (list, tuple)) or len(state) < 5:
        raise UserError(f"mask cache {path} is refused: entry {key!r} holds {type(obj).__name__}, "
                        f"not a PIL mask")
    _, mode, size, _, data = state[:5]
    if isinstance(data, str):
        data = data.encode("latin1")
    if (mode not in ("L", "P") or not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and v > 0 for v in size) or not isinstance(data, bytes)
            or len(data) != size[0] * size[1]):
        raise UserError(f"mask cache {path} is refused: entry {key!r} is not a single-channel 8-bit "
                        f"PIL mask (mode {mode!r}, size {size!r})")
    width, height = size
    return np.frombuffer(data, np.uint8).reshape(height, width)


def read_mask_cache(path):
    """[(id, uint8 mask)] of a train.pth / val.pth in the cache's own order; foreign objects refused."""
    try:
        obj = _unpickle_cache(path)
    except _Refused as exc:
        raise UserError(f"mask cache {path} is refused: it holds something other than PIL masks ({exc}); "
                        f"nothing in it was run") from None
    except FileNotFoundError:
        raise UserError(f"mask cache {path} does not exist") from None
    except Exception as exc:  # anything a truncated or foreign file makes the unpickler raise
        raise UserError(f"mask cache {path} is not a readable torch.save file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise UserError(f"mask cache {path} is refused: it holds a {type(obj).__name__}, not a dict id -> mask")
    return [(cache_key_to_id(key), _mask_from_state(value, path, key)) for key, value in obj.items()]


# --------------------------------------------------------------------------------------------
# prepare: convert once into the project layout

def _check_mask_values(mask, source):
    if mask.size and int(mask.max()) >= NUM_CLASSES:
        values = np.unique(mask[mask >= NUM_CLASSES])[:5].tolist()
        raise UserError(f"{source} has label values {values} > {NUM_CLASSES - 1}: PASCAL-Context masks "
                        f"hold 0..{NUM_CLASSES - 1} (background 0)")


def _write_png(path, mask):
    """temp + rename in the same folder: an interrupted run never leaves a half-written mask, so
    files that exist are complete and a rerun skips them."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, np.uint8)).save(buffer, format="PNG")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_label_map(path):
    """The 459-class LabelMap of an official trainval/<id>.mat."""
    import scipy.io  # only needed for this form of the data
    try:
        content = scipy.io.loadmat(path, variable_names=["LabelMap"])
    except FileNotFoundError:
        raise UserError(f"label {path} does not exist") from None
    except Exception as exc:  # scipy raises several types for corrupt files
        raise UserError(f"cannot read {path} ({type(exc).__name__}: {exc})") from None
    if "LabelMap" not in content:
        raise UserError(f"{path} has no LabelMap variable: expected the PASCAL-Context full-label "
                        f"release's trainval/<id>.mat (trainval.tar.gz)")
    label_map = np.asarray(content["LabelMap"])
    if label_map.ndim != 2 or label_map.dtype.kind not in "iuf" or (
            label_map.dtype.kind == "f" and not np.array_equal(label_map, np.round(label_map))):
        raise UserError(f"{path}: LabelMap is not a 2-D map of integer category ids")
    try:
        return map_category_ids(label_map.astype(np.int64))
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


def _progress(total, desc):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="mask", disable=None, dynamic_ncols=True)


def _check_images(root, ids, list_name):
    for i in ids:
        path = os.path.join(root, IMAGE_DIR, i + ".jpg")
        if not os.path.isfile(path):
            raise UserError(f"image {path} (id {i} of {list_name}) does not exist: put the VOC 2010 "
                            f"JPEGImages there (or pass --images <VOC2010/JPEGImages>)")


def _write_list(path, ids):
    atomic_write_bytes(path, "".join(i + "\n" for i in ids).encode())


def _convert_caches(root, caches, force, log):
    counts = {}
    for split, path in caches.items():
        log(f"reading {path} (mask cache, restricted unpickler)")
        entries = read_mask_cache(path)
        if not entries:
            raise UserError(f"mask cache {path} holds no masks")
        ids = [i for i, _ in entries]
        _check_images(root, ids, path)
        written = 0
        with _progress(len(entries), f"{split} masks") as bar:
            for i, mask in entries:
                _check_mask_values(mask, f"mask cache {path} (id {i})")
                target = os.path.join(root, MASK_DIR, i + ".png")
                if force or not os.path.isfile(target):
                    _write_png(target, mask)
                    written += 1
                bar.update()
        _write_list(os.path.join(root, f"{split}.txt"), ids)
        counts[split] = (len(ids), written)
        del entries
    return counts


def _convert_mats(root, mat_dir, lists, force, log):
    counts = {}
    for split, list_path in lists.items():
        ids = read_ids(list_path, f"--{split}-ids")
        _check_images(root, ids, list_path)
        for i in ids:
            path = os.path.join(mat_dir, i + ".mat")
            if not os.path.isfile(path):
                raise UserError(f"label {path} (id {i} listed in {list_path}) does not exist")
        written = 0
        with _progress(len(ids), f"{split} masks") as bar:
            for i in ids:
                target = os.path.join(root, MASK_DIR, i + ".png")
                if force or not os.path.isfile(target):
                    _write_png(target, read_label_map(os.path.join(mat_dir, i + ".mat")))
                    written += 1
                bar.update()
        own_list = os.path.join(root, f"{split}.txt")
        if os.path.abspath(list_path) != os.path.abspath(own_list):
            _write_list(own_list, ids)
        counts[split] = (len(ids), written)
    return counts


def prepare(data_dir, source=None, train_ids=None, val_ids=None, images=None, force=False, log=print):
    """Convert whichever form of the annotations is present into the project layout (idempotent).

    Returns {split: (number of ids, masks written)}."""
    root = data_dir
    if not os.path.isdir(root):
        raise UserError(f"--data-dir {root} does not exist: {_three_forms(root)}")
    if images:
        link = os.path.join(root, IMAGE_DIR)
        if not os.path.isdir(images):
            raise UserError(f"--images {images} is not a folder")
        if not os.path.exists(link):
            try:
                os.symlink(os.path.abspath(images), link)
            except OSError as exc:
                raise UserError(f"cannot link {link} -> {images}: {exc.strerror or exc}") from None
        elif os.path.realpath(link) != os.path.realpath(images):
            raise UserError(f"--images {images}: {link} already exists and is another folder")
    lists = {s: os.path.join(root, f"{s}.txt") for s in SPLITS}
    problem, listed = None, None
    if all(os.path.isfile(p) for p in lists.values()):
        listed = {s: read_ids(p, str(p)) for s, p in lists.items()}
        problem = next((m for m in (missing_files(root, listed[s]) for s in SPLITS) if m), None)
    if listed and problem is None and source is None and not force and not train_ids and not val_ids:
        log(f"{root} is already in the project layout (a): nothing to convert")
        return {s: (len(listed[s]), 0) for s in SPLITS}
    folder = source or root
    if source is not None and not os.path.isdir(source):
        raise UserError(f"--from {source} is not a folder")
    form, where = find_source(folder)
    if form is None:
        if source is not None:
            raise UserError(f"--from {source} holds neither train.pth / val.pth nor <id>.mat files "
                            f"(directly or in {MAT_DIR}/)")
        if problem:
            raise UserError(f"{problem[1]} (id {problem[0]} listed in {root}) does not exist and there is "
                            f"nothing to convert it from: {_three_forms(root)}")
        if listed:
            log(f"{root} is in the project layout (a) and there is nothing to convert")
            return {s: (len(listed[s]), 0) for s in SPLITS}
        raise UserError(f"no PASCAL-Context annotations found in {root}: {_three_forms(root)}")
    os.makedirs(os.path.join(root, MASK_DIR), exist_ok=True)
    if form == "cache":
        missing = [s for s in SPLITS if s not in where]
        if missing:
            log(f"note: no {missing[0]}.pth in {folder}: only {', '.join(where)} converted")
        counts = _convert_caches(root, where, force, log)
    else:
        given = {"train": train_ids, "val": val_ids}
        mat_lists = {s: given[s] or lists[s] for s in SPLITS if given[s] or os.path.isfile(lists[s])}
        if not mat_lists:
            raise UserError(f"found {where}/<id>.mat but no id lists: put the PASCAL-Context train and val "
                            f"ids (4,996 / 5,104) at {lists['train']} and {lists['val']}, or pass "
                            f"--train-ids / --val-ids")
        log(f"converting {where}/<id>.mat (459-class LabelMap -> 60 classes)")
        counts = _convert_mats(root, where, mat_lists, force, log)
    for split, (n, written) in counts.items():
        note = "" if n == STANDARD_SIZES[split] else f" (the standard split has {STANDARD_SIZES[split]:,}" + (
            "; splits/pc/seeded_*.pkl need 4,996)" if split == "train" else ")")
        log(f"{split}: {n} ids, {written} masks written{note}")
    return counts


# --------------------------------------------------------------------------------------------
# The datasets

def open_rgb(path):
    try:
        img = Image.open(path)  # not `with`: closing the image would drop its pixels; load() closes the file
        img.load()
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {path} (corrupt or truncated: {exc})") from None
    return img if img.mode == "RGB" else img.convert("RGB")


def open_mask(path):
    """A 0..59 mask PNG as a PIL 'L' image (palette PNGs: their indices), values checked."""
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise UserError(f"label {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read label {path} (corrupt or truncated: {exc})") from None
    if img.mode == "P":
        img = Image.frombytes("L", img.size, img.tobytes())
    elif img.mode != "L":
        raise UserError(f"label {path} has mode {img.mode}: expected a single-channel 0..59 PNG "
                        f"(run `python -m data.context prepare`)")
    counts = np.asarray(img.histogram()[:256])
    if counts[NUM_CLASSES:].any():
        values = (np.flatnonzero(counts[NUM_CLASSES:]) + NUM_CLASSES)[:5].tolist()
        raise UserError(f"label {path} has values {values} > {NUM_CLASSES - 1}: PASCAL-Context masks "
                        f"hold 0..{NUM_CLASSES - 1} with background 0 (59-class masks with 255 are not "
                        f"accepted; convert the annotations with `python -m data.context prepare`)")
    return img


def to_normalized_tensor(rgb, mean, std):
    """uint8 HxWx3 -> float32 3xHxW: /255 then (x - mean) / std, in float32 like ToTensor + Normalize.

    Each output depends on one byte only, so the 256 values per channel are computed with those
    float32 operations once and looked up: the same floats as per pixel, several times faster."""
    table = (np.arange(256, dtype=np.float32)[None, :] / np.float32(255) - np.asarray(mean, np.float32)[:, None]) \
        / np.asarray(std, np.float32)[:, None]
    out = np.empty((3,) + rgb.shape[:2], np.float32)
    for channel in range(3):
        np.take(table[channel], rgb[:, :, channel], out=out[channel])
    return out


def scaled_size(width, height, short):
    """(w, h) with the short side = short; the other side rounded half up, as the original's training."""
    if height > width:
        return short, int(height * short / width + 0.5)
    return int(width * short / height + 0.5), short


class ContextSegmentation(Dataset):
    """Items: (image float32 3xHxW, label int64 HxW (0..59), size int64 [h, w], id, index).

    train=True: the original's random pipeline (see the module docstring), `size` = the image's
    original (h, w); an item may be (index, key), the key seeding all of that sample's randomness.
    train=False: short side 512, centre 512x512 crop; `size` = (512, 512), the scored region.
    """

    def __init__(self, root, split="train", list_path=None, train=True, crop_size=(321, 321),
                 mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB, list_flag="--data-list", check_files=True):
        list_path = check_prepared(root, split, list_path, list_flag)
        self.root, self.train = root, train
        self.ids = read_ids(list_path, list_flag)
        self.crop_h, self.crop_w = crop_size
        self.mean, self.std = tuple(mean), tuple(std)
        for name in self.ids if check_files else ():
            image, mask = self.image_path(name), self.label_path(name)
            if not os.path.isfile(image):
                raise UserError(f"image {image} (listed in {list_path}) does not exist")
            if not os.path.isfile(mask):
                raise UserError(f"label {mask} for image {image} (listed in {list_path}) does not exist")

    def image_path(self, name):
        return os.path.join(self.root, IMAGE_DIR, name + ".jpg")

    def label_path(self, name):
        return os.path.join(self.root, MASK_DIR, name + ".png")

    def __len__(self):
        return len(self.ids)

    def _read(self, name):
        image, mask = open_rgb(self.image_path(name)), open_mask(self.label_path(name))
        if image.size != mask.size:
            raise UserError(f"label {self.label_path(name)} is {mask.size[0]}x{mask.size[1]} but its image "
                            f"{self.image_path(name)} is {image.size[0]}x{image.size[1]}")
        return image, mask

    def __getitem__(self, item):
        index, key = item if isinstance(item, tuple) else (item, None)
        name = self.ids[index]
        if not self.train:
            rgb, label = self._eval_pair(index)
            return (to_normalized_tensor(rgb, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB), label,
                    np.array(label.shape, np.int64), name, index)
        rng = np.random.default_rng(key if key is not None else np.random.randint(0, 2**31 - 1))
        image, mask = self._read(name)
        size = np.array((image.size[1], image.size[0]), np.int64)
        if rng.random() < 0.5:
            image, mask = image.transpose(FLIP_LEFT_RIGHT), mask.transpose(FLIP_LEFT_RIGHT)
        short = int(rng.integers(SHORT_SIDE_RANGE[0], SHORT_SIDE_RANGE[1] + 1))
        out_size = scaled_size(image.size[0], image.size[1], short)
        rgb = np.asarray(image.resize(out_size, Image.BILINEAR))
        label = np.asarray(mask.resize(out_size, Image.NEAREST))
        pad_h, pad_w = max(self.crop_h - label.shape[0], 0), max(self.crop_w - label.shape[1], 0)
        if pad_h or pad_w:  # image black, mask background: nothing is ignored in Context
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)))
            label = np.pad(label, ((0, pad_h), (0, pad_w)))
        left = int(rng.integers(0, label.shape[1] - self.crop_w + 1))
        top = int(rng.integers(0, label.shape[0] - self.crop_h + 1))
        rgb = rgb[top:top + self.crop_h, left:left + self.crop_w]
        label = label[top:top + self.crop_h, left:left + self.crop_w]
        if rng.random() < 0.5:
            blurred = Image.fromarray(np.ascontiguousarray(rgb)).filter(ImageFilter.GaussianBlur(radius=rng.random()))
            rgb = np.asarray(blurred)
        return to_normalized_tensor(rgb, self.mean, self.std), label.astype(np.int64), size, name, index

    def _eval_pair(self, index):
        image, mask = self._read(self.ids[index])
        width, height = image.size
        # The original's evaluation truncates the long side and rounds the crop offset with Python's
        # round() (half to even); both decide which pixels are scored, so they are kept.
        if width > height:
            out_size = (int(width * EVAL_SIZE / height), EVAL_SIZE)
        else:
            out_size = (EVAL_SIZE, int(height * EVAL_SIZE / width))
        image, mask = image.resize(out_size, Image.BILINEAR), mask.resize(out_size, Image.NEAREST)
        left, top = int(round((out_size[0] - EVAL_SIZE) / 2.0)), int(round((out_size[1] - EVAL_SIZE) / 2.0))
        box = (left, top, left + EVAL_SIZE, top + EVAL_SIZE)
        return np.asarray(image.crop(box)), np.asarray(mask.crop(box)).astype(np.int64)

    def label_indices(self, name):
        """The mask of `name` as class indices 0..59 (for `python -m data.check`)."""
        return np.asarray(open_mask(self.label_path(name))).astype(np.int64)

    def display(self, index):
        """(RGB uint8 512x512x3, label int64 512x512): the scored crop, for montages."""
        rgb, label = self._eval_pair(index)
        return np.ascontiguousarray(rgb), label


def build_train(args):
    mean, std = context_train_normalization(getattr(args, "context_train_mean", None) or "rgb")
    return ContextSegmentation(args.data_dir, "train", args.data_list, train=True,
                               crop_size=tuple(args.input_size), mean=mean, std=std,
                               check_files=getattr(args, "check_files", True))


def build_val(args):
    return ContextSegmentation(args.data_dir, "val", args.data_list, train=False,
                               check_files=getattr(args, "check_files", True))


SPEC = DatasetSpec(
    name="pascal_context",
    default_data_dir=DEFAULT_DATA_DIR,
    num_classes=NUM_CLASSES,
    ignore_label=CONTEXT_IGNORE_LABEL,
    palette=context_palette(),
    class_names=class_names,
    build_train=build_train,
    build_val=build_val,
)


def main(argv=None):
    parser = ArgumentParser(prog="python -m data.context", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="convert the annotations once into the project layout")
    prep.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the dataset root (default: %(default)s)")
    prep.add_argument("--from", dest="source", default=None,
                      help="folder with train.pth / val.pth or <id>.mat files (directly or in trainval/), "
                           "if not in --data-dir")
    prep.add_argument("--train-ids", default=None, help="train id list for .mat files (default: <data-dir>/train.txt)")
    prep.add_argument("--val-ids", default=None, help="val id list for .mat files (default: <data-dir>/val.txt)")
    prep.add_argument("--images", default=None,
                      help="your VOC2010 JPEGImages folder, linked as <data-dir>/JPEGImages if that is missing")
    prep.add_argument("--force", action="store_true", help="rewrite masks that already exist")
    args = parser.parse_args(argv)
    prepare(args.data_dir, args.source, args.train_ids, args.val_ids, args.images, args.force)


if __name__ == "__main__":
    from utils.errors import run_cli
    run_cli(main, sys.argv[1:])
