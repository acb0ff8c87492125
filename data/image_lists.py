"""Split lists as today's semi-supervised codebases publish them (--labeled-list, --unlabeled-list):
a text file, one image per line, named by its id (`2007_000032`, `aachen/aachen_000000_000019`) or in
the two-column form `JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png` (Cityscapes:
`leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png gtFine/...`). Only the first column
is read. An entry names an image of the training list when its id, or its file name without folder
and suffix, is that image's (splits/README.md lists the shipped files)."""
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from data.splits import split_indices
from utils.errors import UserError

# file-name endings that are not part of an image's name (the longest first)
SUFFIXES = ("_leftImg8bit.png", "_gtFine_labelTrainIds.png", "_gtFine_labelIds.png", "_leftImg8bit", ".jpg",
            ".jpeg", ".png")


def entry_name(entry):
    """The first column of a list line, without a known file suffix ('JPEGImages/x.jpg' -> 'JPEGImages/x')."""
    name = entry.split()[0].replace("\\", "/")
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix.lower()):
            return name[:-len(suffix)]
    return name


def short_name(name):
    """The file name alone: 'leftImg8bit/train/aachen/aachen_000000_000019' -> 'aachen_000000_000019'."""
    return name.rsplit("/", 1)[-1]


def read_image_list(path, flag):
    """[(line number, name)] of a list file; a clear error if it is missing, empty or repeats an image."""
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path} does not exist: give a text file with one image per line (an id, or "
                        f"'JPEGImages/<id>.jpg SegmentationClass/<id>.png'), e.g. one of splits/ (splits/README.md)")
    with open(path) as f:
        entries = [(number, entry_name(line)) for number, line in enumerate(f, 1) if line.strip()]
    if not entries:
        raise UserError(f"{flag} {path} is empty")
    seen = {}
    for number, name in entries:
        if name in seen:
            raise UserError(f"{flag} {path} line {number}: {name} is listed twice (first on line {seen[name]})")
        seen[name] = number
    return entries


class ImageIndex:
    """Finds list entries among a dataset's ids: by the whole id, else by the file name alone when
    only one image of the dataset has it."""

    def __init__(self, ids):
        self.by_id = {name: i for i, name in enumerate(ids)}
        self.by_short = {}
        for i, name in enumerate(ids):
            key = short_name(name)
            self.by_short[key] = None if key in self.by_short else i  # None: two images share it
        self.by_short = {k: v for k, v in self.by_short.items() if v is not None}

    def find(self, name):
        if name in self.by_id:
            return self.by_id[name]
        return self.by_short.get(short_name(name))


def match_list(path, flag, ids):
    """[(line number, name, its position in `ids` or None)] for every entry of a list file, in order."""
    index = ImageIndex(ids)
    return [(number, name, index.find(name)) for number, name in read_image_list(path, flag)]


def list_positions(path, flag, ids, where):
    """The positions in `ids` (the training list, described by `where`) of every image of a list that
    must lie within it (--labeled-list): an int64 array in the list's order."""
    positions = []
    for number, name, found in match_list(path, flag, ids):
        if found is None:
            raise UserError(f"{flag} {path} line {number}: {name} is not an image of the training list ({where}): "
                            f"a labeled image must be one the training list holds")
        positions.append(found)
    if len(set(positions)) != len(positions):
        raise UserError(f"{flag} {path} names an image of the training list twice (by its id and by its file name)")
    return np.asarray(positions, np.int64)


def listed_images(ids, labeled_list, unlabeled_list, where, outside_refused=None):
    """The ListedImages of a run against its training list `ids` (described by `where`). An image of
    the unlabeled list outside the training list takes position len(ids) + its place in the list
    (where the run joins those images), or, given `outside_refused` (why not), is an error."""
    labeled = list_positions(labeled_list, "--labeled-list", ids, where) if labeled_list else None
    if not unlabeled_list:
        return ListedImages(labeled)
    positions = []
    for j, (number, name, found) in enumerate(match_list(unlabeled_list, "--unlabeled-list", ids)):
        if found is None and outside_refused:
            raise UserError(f"--unlabeled-list {unlabeled_list} line {number}: {name} is not an image of the "
                            f"training list ({where}): {outside_refused}")
        positions.append(len(ids) + j if found is None else found)
    return ListedImages(labeled, np.asarray(positions, np.int64))


def labeled_first(labeled, num_images):
    """A split permutation whose first len(labeled) entries are `labeled` (in the list's order), the
    other images after them in their order: the form of splits/*.pkl, so that the run's saved split
    file says which images were labeled."""
    rest = np.setdiff1d(np.arange(num_images, dtype=np.int64), labeled, assume_unique=True)
    return np.concatenate([np.asarray(labeled, np.int64), rest])


@dataclass(frozen=True)
class ListedImages:
    """The images --labeled-list and --unlabeled-list name, as positions in the training dataset
    (None: no such list). Images of --unlabeled-list outside the training list sit after it."""
    labeled: Optional[np.ndarray] = None
    unlabeled: Optional[np.ndarray] = None


def image_pools(perm, num_listed, labeled_ratio, listed):
    """(labeled, unlabeled) positions. With --labeled-list: its images, and the --unlabeled-list
    images if given, else the rest of the training list (the pools of today's split lists). Otherwise
    the split's labeled part and the rest (every image in both when no ratio is given), and
    --unlabeled-list's images join the unlabeled part (those already in it are not repeated)."""
    if listed.labeled is not None:
        count = len(listed.labeled)
        return perm[:count], perm[count:] if listed.unlabeled is None else listed.unlabeled
    labeled, rest = split_indices(perm if perm is not None else np.arange(num_listed, dtype=np.int64), labeled_ratio)
    if listed.unlabeled is None:
        return labeled, rest
    return labeled, np.concatenate([rest, listed.unlabeled[~np.isin(listed.unlabeled, rest)]])
