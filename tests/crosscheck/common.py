"""Inputs both codes read (datasets in the original's on-disk layouts, built here), and comparisons."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from data.cityscapes import VALID_LABEL_IDS, VOID_LABEL_IDS
from data.context_layout import CONTEXT_CATEGORY_IDS
from tests.voc_fixture import make_voc

HERE = os.path.dirname(os.path.abspath(__file__))


class DriverFailed(RuntimeError):
    pass


def call_driver(checkout, task, spec, folder, timeout=3600):
    """Run one task of driver.py on the checkout, in its own process with this one's thread count;
    returns what it recorded (DriverFailed with the end of its stderr when it fails)."""
    os.makedirs(folder, exist_ok=True)
    in_path, out_path = os.path.join(folder, f"{task}.in.pt"), os.path.join(folder, f"{task}.out.pt")
    torch.save(portable({"threads": torch.get_num_threads(), **spec}), in_path)
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "driver.py"), checkout, task, in_path, out_path],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise DriverFailed(f"the original's code failed in task {task}:\n{proc.stderr[-4000:]}")
    result = torch.load(out_path, weights_only=False)
    os.remove(out_path)
    return result


def portable(obj):
    """Named tuples (draws.Draw) as plain tuples: the driver cannot import this package."""
    if isinstance(obj, tuple):
        return tuple(portable(o) for o in obj)
    if isinstance(obj, list):
        return [portable(o) for o in obj]
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    return obj


# VOC: training images larger and smaller than the 321 crop (both paths: crop, and pad then crop);
# validation images up to 500 px, as VOC's (the evaluation pads them to 505). Each training image has
# its own range of values: D's real input is scaled by the range of another batch (the labeled CE
# batch), which only shows when batches differ in range.
VOC_TRAIN_SIZES = ((360, 420), (330, 480), (300, 340), (350, 350), (280, 420), (420, 300), (330, 330),
                   (400, 360), (290, 500), (340, 300), (321, 321), (450, 380))
VOC_VAL_SIZES = ((375, 500), (500, 333), (281, 500))
# PASCAL-Context (VOC 2010 shapes): landscape, portrait, square, and sizes whose rescale truncates.
CONTEXT_TRAIN = (("2008_000002", (375, 500)), ("2008_000123", (500, 334)), ("2009_000010", (400, 400)),
                 ("2009_000200", (281, 500)), ("2010_000045", (333, 500)))
CONTEXT_VAL = (("2008_000007", (500, 353)), ("2010_000001", (334, 500)))
# Cityscapes at its real size (the pipelines halve it): 4 training, 2 validation images, in cities
# whose names do not sort in the order os.walk may list them.
CITY_SIZE = (1024, 2048)
CITY_TRAIN = {"zurich": 2, "aachen": 2, "bremen": 2}
CITY_VAL = {"munster": 1, "frankfurt": 1}
# labelIds a real gtFine_labelIds.png holds: the table's ids except -1 (license plates are not drawn)
CITY_LABEL_BYTES = tuple(sorted(i for i in VALID_LABEL_IDS + VOID_LABEL_IDS if i >= 0))


def write_split(path, n, seed):
    """A split permutation in the original's format (pickled int64 array)."""
    with open(path, "wb") as f:
        pickle.dump(np.random.default_rng(seed).permutation(n).astype(np.int64), f, protocol=3)
    return path


def make_voc_data(root):
    make_voc(root, sizes_train=VOC_TRAIN_SIZES, sizes_val=VOC_VAL_SIZES, seed=3)
    with open(os.path.join(root, "lists", "train_aug.txt")) as f:
        for k, name in enumerate(line.strip() for line in f):
            path = os.path.join(root, "JPEGImages", name + ".jpg")
            image = np.asarray(Image.open(path)).astype(np.float64)
            low, span = 10 * k, 255 - 20 * k  # a range of its own
            Image.fromarray((low + image * span / 255).astype(np.uint8)).save(path, quality=95)
    write_split(os.path.join(root, "split.pkl"), len(VOC_TRAIN_SIZES), seed=5)
    return root


def smooth_image(rng, h, w, cells=(16, 32)):
    """A random RGB image of soft blobs (compresses well, unlike noise; resizing it is not trivial),
    in a range of values of its own."""
    small = Image.fromarray(rng.integers(0, 256, (cells[0], cells[1], 3), dtype=np.uint8))
    noise = rng.integers(-12, 13, (h, w, 3))
    image = np.clip(np.asarray(small.resize((w, h), Image.BILINEAR)).astype(np.int64) + noise, 0, 255)
    low = int(rng.integers(0, 80))
    span = int(rng.integers(100, 256 - low))
    return (low + image * span // 255).astype(np.uint8)


def blocks(rng, h, w, values, cells=(8, 16)):
    grid = np.asarray(values)[rng.integers(0, len(values), cells)]
    return grid.repeat(h // cells[0], 0).repeat(w // cells[1], 1)


def make_city_data(root, seed=0, val=CITY_VAL):
    """leftImg8bit/ and gtFine_trainvaltest/gtFine/ (the original's layout) at 2048x1024; `val`: the
    number of validation images per city."""
    rng = np.random.default_rng(seed)
    h, w = CITY_SIZE
    for split, cities in (("train", CITY_TRAIN), ("val", val)):
        for city, count in cities.items():
            for folder in ("leftImg8bit", os.path.join("gtFine_trainvaltest", "gtFine")):
                os.makedirs(os.path.join(root, folder, split, city), exist_ok=True)
            for k in range(count):
                frame = f"{city}_{k:06d}_000019"
                Image.fromarray(smooth_image(rng, h, w)).save(
                    os.path.join(root, "leftImg8bit", split, city, frame + "_leftImg8bit.png"), compress_level=1)
                Image.fromarray(blocks(rng, h, w, CITY_LABEL_BYTES).astype(np.uint8)).save(
                    os.path.join(root, "gtFine_trainvaltest", "gtFine", split, city, frame + "_gtFine_labelIds.png"))
    write_split(os.path.join(root, "split.pkl"), sum(CITY_TRAIN.values()), seed=7)
    return root


def make_context_data(root, seed=0):
    """pcontext_dataset/ as the original reads it: JPEGImages/ and trainval_merged.json listing every
    image (sorted by id, the two phases interleaved), with each image's annotation as the official
    full-label release's trainval/<id>.mat (a LabelMap of the 60 category ids, 0 unlabeled), from which
    the original's loader builds its own mask caches (train.pth, val.pth) the first time it runs; and
    the official lists train.txt / val.txt (sorted), from which ours is prepared (form (b))."""
    import scipy.io
    rng = np.random.default_rng(seed)
    for folder in ("JPEGImages", "trainval"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    images = []
    for split, items in (("train", CONTEXT_TRAIN), ("val", CONTEXT_VAL)):
        for name, (h, w) in items:
            Image.fromarray(smooth_image(rng, h, w)).save(os.path.join(root, "JPEGImages", name + ".jpg"), quality=95)
            cells = rng.integers(0, len(CONTEXT_CATEGORY_IDS), (12, 16))  # blocks of every class, and 0
            ids = np.asarray(CONTEXT_CATEGORY_IDS)[cells.repeat(-(-h // 12), 0).repeat(-(-w // 16), 1)[:h, :w]]
            scipy.io.savemat(os.path.join(root, "trainval", name + ".mat"), {"LabelMap": ids.astype(np.uint16)})
            images.append({"image_id": int(name.replace("_", "")), "file_name": name + ".jpg", "phase": split,
                           "height": h, "width": w})
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.writelines(name + "\n" for name, _ in sorted(items))
    with open(os.path.join(root, "trainval_merged.json"), "w") as f:
        json.dump({"images": sorted(images, key=lambda image: image["image_id"])}, f)
    write_split(os.path.join(root, "split.pkl"), len(CONTEXT_TRAIN), seed=9)
    return root


def make_mlmt_data(root, num_train=8, num_val=3, num_classes=21, seed=0):
    """The original's MLMT layout: train/ and val/ images, train_img.txt / train_label.txt (rows of
    0/1, foreground classes first, background last) and the same for val."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        names, rows = [], []
        for k in range(count):
            name = f"2008_{split}_{k:04d}.jpg"
            h, w = int(rng.integers(200, 400)), int(rng.integers(200, 400))
            Image.fromarray(smooth_image(rng, h, w, (8, 8))).save(os.path.join(root, split, name), quality=95)
            row = (rng.random(num_classes) < 0.2).astype(int)
            row[-1] = 1  # background, always present
            names.append(name)
            rows.append(row)
        with open(os.path.join(root, f"{split}_img.txt"), "w") as f:
            f.writelines(n + "\n" for n in names)
        np.savetxt(os.path.join(root, f"{split}_label.txt"), np.asarray(rows), fmt="%d")
    write_split(os.path.join(root, "split.pkl"), num_train, seed=11)
    return root


def linked_workdir(folder, links):
    """A working directory for the original, which reads ./data/<...> and ./pretrained_models/<...>."""
    os.makedirs(folder, exist_ok=True)
    for rel, target in links.items():
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.lexists(path):
            os.symlink(os.path.abspath(target), path)
    return folder


# ------------------------------------------------------------------------------------------------
# Comparisons

def as_array(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, np.float64)


def max_abs(a, b):
    a, b = as_array(a), as_array(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max()) if a.size else 0.0


def relative(a, b):
    """max |a - b| over max |b|: the difference relative to the tensor's scale."""
    scale = float(np.abs(as_array(b)).max()) if as_array(b).size else 0.0
    diff = max_abs(a, b)
    return diff / scale if scale > 0 else diff


def worst_of(ours, theirs, measure=relative):
    """(worst value, its key) over the common keys of two {name: tensor} dicts; the key sets must match."""
    assert set(ours) == set(theirs), (sorted(set(ours) ^ set(theirs))[:5])
    values = {k: measure(ours[k], theirs[k]) for k in ours}
    key = max(values, key=values.get) if values else None
    return (values[key] if key else 0.0), key


def norm_relative(a, b):
    """||a - b|| / ||b||: a difference relative to the size of the tensor it is compared with."""
    a, b = as_array(a), as_array(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = float(np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return diff / scale if scale > 0 else diff


def change_difference(before, ours, theirs, listings, rtol):
    """The change one optimizer step made to each tensor on our side against the original's:
    d = ||(after - before)_ours - (after - before)_theirs|| / ||(after - before)_theirs||, each side from
    its own `before` ({name: tensor} pair). A weight is float32: each of the `listings[name]` in-place
    updates of a step rounds it to a representable value, and the two sides' roundings may differ by one
    float32 step each time, so a tensor agrees when d <= rtol + listings * ||spacing(weight)|| / ||change||.
    Returns (worst d, its tensor, whether every tensor agrees, how many agree only by that resolution)."""
    worst, worst_key, ok, by_resolution = 0.0, None, True, 0
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))[:5]
    for k in ours:
        change_o = as_array(ours[k]) - as_array(before[0][k])
        change_t = as_array(theirs[k]) - as_array(before[1][k])
        scale = float(np.linalg.norm(change_t))
        diff = float(np.linalg.norm(change_o - change_t))
        d = diff / scale if scale > 0 else diff
        resolution = listings[k] * float(np.linalg.norm(np.spacing(np.abs(as_array(theirs[k])).astype(np.float32))))
        ok = ok and diff <= rtol * scale + resolution
        by_resolution += int(rtol * scale < diff <= rtol * scale + resolution)
        if d > worst:
            worst, worst_key = d, k
    return worst, worst_key, ok, by_resolution


def iou_lines(text):
    """{class index: (name, value)} of 'class  i name IU v' lines, and the meanIOU value."""
    rows, miou = {}, None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "class" and parts[-2] == "IU":
            rows[int(parts[1])] = (" ".join(parts[2:-2]), parts[-1])
        elif line.startswith("meanIOU:"):
            miou = float(line.split(":")[1])
    return rows, miou


def result_txt_differences(ours, theirs, same_names):
    """Ours writes each IoU with 4 decimals (n/a where undefined), the original with 2 (nan)."""
    (ours_rows, ours_miou), (their_rows, their_miou) = iou_lines(ours), iou_lines(theirs)
    out = [] if set(ours_rows) == set(their_rows) else [f"classes {sorted(ours_rows)} vs {sorted(their_rows)}"]
    for i in sorted(set(ours_rows) & set(their_rows)):
        (name, value), (their_name, their_value) = ours_rows[i], their_rows[i]
        as_theirs = "nan" if value == "n/a" else f"{float(value):.2f}"
        if as_theirs != their_value:
            out.append(f"class {i}: {value} vs {their_value}")
        if same_names and name != their_name.replace("_", " "):  # the original wrote traffic_light, ...
            out.append(f"class {i} name {name!r} vs {their_name!r}")
    if ours_miou is None or their_miou is None or abs(ours_miou - their_miou) > 1e-12:
        out.append(f"meanIOU {ours_miou} vs {their_miou}")
    return out


def fmt(value):
    return "0 (identical)" if value == 0 else f"{value:.2e}"


def write_wrn38_imagenet(path, trunk_state):
    """The ImageNet WRN-38 file as the original's wrn38() loads it (strictly, into a DataParallel):
    {'state_dict': {'module.<name>': tensor}}, the trunk's tensors plus the classification network's
    end (bn_out, classifier.fc over 1000 classes), here filled with arbitrary values."""
    state = {f"module.{k}": v for k, v in trunk_state.items()}
    channels = trunk_state["mod7.block1.convs.conv3.weight"].shape[0]
    state.update({"module.bn_out.0.weight": torch.ones(channels), "module.bn_out.0.bias": torch.zeros(channels),
                  "module.bn_out.0.running_mean": torch.zeros(channels),
                  "module.bn_out.0.running_var": torch.ones(channels),
                  "module.bn_out.0.num_batches_tracked": torch.tensor(0),
                  "module.classifier.fc.weight": torch.zeros(1000, channels), "module.classifier.fc.bias": torch.zeros(1000)})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": state}, path)
    return path
