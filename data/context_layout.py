"""PASCAL-Context's labels and on-disk layout, shared by the dataset and the conversion.

The labels: the 60 category ids of the full release that are kept, in label order, their names, and
map_category_ids (459-class ids -> labels 0..59). The layout: the folder names, the three accepted
forms of the annotations (three_forms, find_source), the id lists (read_ids) and the check that a
folder is in the project layout (check_prepared). The dataset is data/context.py (its docstring
describes the layout and the forms); the conversion, data/context_prepare.py, reading the masks of
the source forms through data/context_masks.py. This module imports none of them.
"""
import os

import numpy as np

from utils.errors import UserError

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
MAX_CATEGORY_ID = 459  # the full release numbers its categories 1..459 (0: unlabeled)
IMAGE_DIR, MASK_DIR, MAT_DIR = "JPEGImages", "SegmentationClassContext", "trainval"
SPLITS = ("train", "val")
STANDARD_SIZES = {"train": 4996, "val": 5104}


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


# --------------------------------------------------------------------------------------------
# Where the annotations are (what the dataset checks and data/context_prepare.py converts)

def three_forms(root):
    """The three accepted layouts, one per line (the only multi-line error: one line would not read)."""
    root = root.rstrip("/") or "/"
    return (f"put one of these layouts in {root}/:\n"
            f"  (a) the project layout: {IMAGE_DIR}/<id>.jpg, {MASK_DIR}/<id>.png (values 0..59), train.txt, "
            f"val.txt\n"
            f"  (b) the official full-label release (trainval.tar.gz): {MAT_DIR}/<id>.mat, with train.txt and "
            f"val.txt\n"
            f"  (c) the original's mask caches (pascal_context_labels.tar.gz): train.pth and val.pth, with "
            f"{IMAGE_DIR}/<id>.jpg\n"
            f"  (b) and (c) are converted to (a) once by `python -m data.context prepare --data-dir {root}`")


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
        raise UserError(f"--data-dir {root} does not exist; {three_forms(root)}")
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
        raise UserError(f"--data-dir {root} holds no usable PASCAL-Context data; {three_forms(root)}")
    raise UserError(f"--data-dir {root} is not converted yet ({os.path.join(root, MASK_DIR)} or "
                    f"{list_path} is missing); it holds {found}: convert it once with "
                    f"`python -m data.context prepare --data-dir {root}`")
