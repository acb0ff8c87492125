"""`python -m data.context prepare`: convert the PASCAL-Context annotations once into the project layout.

prepare() takes whichever form is present (see data/context.py for the layout and the three forms,
data/context_layout.py for the code that finds them):
(a) the layout itself is used as is; (b) trainval/<id>.mat and (c) the original's mask caches are read
through data/context_masks.py and written as SegmentationClassContext/<id>.png plus train.txt / val.txt.
Masks are written atomically, so a rerun only writes what is missing (or everything with force=True).
"""
import io
import os

import numpy as np
from PIL import Image

from data.context_layout import (IMAGE_DIR, MASK_DIR, MAT_DIR, NUM_CLASSES, SPLITS, STANDARD_SIZES, find_source,
                                 missing_files, read_ids, three_forms)
from data.context_masks import read_label_map, read_mask_cache
from utils.checkpoint import atomic_write_bytes
from utils.errors import UserError


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
        raise UserError(f"--data-dir {root} does not exist; {three_forms(root)}")
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
                            f"nothing to convert it from; {three_forms(root)}")
        if listed:
            log(f"{root} is in the project layout (a) and there is nothing to convert")
            return {s: (len(listed[s]), 0) for s in SPLITS}
        raise UserError(f"no PASCAL-Context annotations found in {root}; {three_forms(root)}")
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
