"""Data-loading speed of the Cityscapes, PASCAL-Context and MLMT pipelines: images per second.

    python benchmarks/bench_data.py                       # fake full-size data in a temp folder
    python benchmarks/bench_data.py --workers 0,1,2,4 --batches 12
    python benchmarks/bench_data.py --city-dir ./data/city_dataset/ --context-dir ./data/pcontext_dataset/

Two parts, one JSON line per measurement:

* stages: one process, no loader, milliseconds per image for each stage of the Cityscapes training
  item (PNG decode, label decode and check, resize of the whole image vs of the crop only, the
  rest), i.e. what one worker can deliver at most, and the CPU time of a whole item (the same
  on a machine shared with other work);
* loaders: the training and evaluation datasets behind the engine's own BatchStream / DataLoader
  (seeded sampler, batch --batch-size, --workers worker processes), timed over --batches batches
  after one warm-up batch (worker start-up excluded); mlmt_labeled / mlmt_unlabeled are the MLMT
  classifier's items at 320x320 (the plain view; the plain and the augmented view of each
  unlabeled image: "images" counts items) over the fake Context JPEGs.

The fake Cityscapes images are 2048x1024 RGB PNGs whose content (flat regions, gradients, mild noise)
compresses to about the size of real leftImg8bit files (~2.2 MB); decoding cost follows the size. The
files sit in the page cache after the first pass, so disk speed is not measured.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from data import cityscapes as city  # noqa: E402
from data import context as ctx  # noqa: E402
from methods.mlmt import labels as multilabel  # noqa: E402
from data.sampler import BatchStream, SeededEpochSampler  # noqa: E402
from utils.seeding import init_worker  # noqa: E402


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="0,1,4", help="loader worker counts to time (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=8, help="timed batches per configuration")
    p.add_argument("--images", type=int, default=12, help="fake images per split")
    p.add_argument("--city-dir", default=None, help="a real Cityscapes root (default: fake data)")
    p.add_argument("--context-dir", default=None, help="a prepared PASCAL-Context root (default: fake data)")
    p.add_argument("--only", default="stages,city_train,city_val,context_train,context_val,mlmt_labeled,mlmt_unlabeled,mlmt_unlabeled_device_views",
                   help="which measurements (default: %(default)s)")
    return p.parse_args(argv)


# --- fake data ------------------------------------------------------------------------------------

def _scene(rng, h, w):
    """A street-like picture: gradients, flat boxes, mild noise; compresses like real photos in PNG."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([(x * 0.1 + y * 0.05) % 256, (x * 0.03 + 80) % 256, (y * 0.2) % 256], -1)
    for _ in range(60):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        image[y0:y0 + int(rng.integers(h // 50, h // 3)), x0:x0 + int(rng.integers(w // 100, w // 5))] = \
            rng.integers(0, 256, 3)
    image += rng.normal(0, 1.6, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def fake_city(n):
    root = os.path.join(tempfile.gettempdir(), f"semisup_seg_bench_city_{n}")
    done = os.path.join(root, ".complete")
    if os.path.isfile(done):
        return root
    rng = np.random.default_rng(0)
    ids = np.array(city.VALID_LABEL_IDS + (0, 1, 4))
    for split in ("train", "val"):
        for k in range(n):
            folder = os.path.join(root, "leftImg8bit", split, "fakecity")
            label_folder = os.path.join(root, "gtFine", split, "fakecity")
            os.makedirs(folder, exist_ok=True)
            os.makedirs(label_folder, exist_ok=True)
            frame = f"fakecity_{k:06d}_000019"
            Image.fromarray(_scene(rng, 1024, 2048)).save(os.path.join(folder, frame + "_leftImg8bit.png"))
            label = np.full((1024, 2048), 7, np.uint8)
            for _ in range(80):
                y0, x0 = int(rng.integers(0, 1024)), int(rng.integers(0, 2048))
                label[y0:y0 + int(rng.integers(20, 300)), x0:x0 + int(rng.integers(20, 400))] = rng.choice(ids)
            Image.fromarray(label).save(os.path.join(label_folder, frame + "_gtFine_labelIds.png"))
    open(done, "w").close()
    return root


def fake_context(n):
    """Prepared-layout Context data with VOC-like sizes (around 500x375 JPEGs)."""
    root = os.path.join(tempfile.gettempdir(), f"semisup_seg_bench_context_{n}")
    done = os.path.join(root, ".complete")
    if os.path.isfile(done):
        return root
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, ctx.IMAGE_DIR), exist_ok=True)
    os.makedirs(os.path.join(root, ctx.MASK_DIR), exist_ok=True)
    for split in ("train", "val"):
        names = []
        for k in range(n):
            h, w = ((375, 500), (500, 375), (333, 500), (500, 500))[k % 4]
            name = f"20{8 + (split == 'val')}_{k:06d}"
            Image.fromarray(_scene(rng, h, w)).save(os.path.join(root, ctx.IMAGE_DIR, name + ".jpg"), quality=90)
            mask = rng.integers(0, 60, (h // 25 + 1, w // 25 + 1)).astype(np.uint8).repeat(25, 0).repeat(25, 1)[:h, :w]
            Image.fromarray(mask).save(os.path.join(root, ctx.MASK_DIR, name + ".png"))
            names.append(name)
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.writelines(i + "\n" for i in names)
    open(done, "w").close()
    return root


# --- measurements -------------------------------------------------------------------------------

def best_ms(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * min(times), 2)


def stages(root):
    """Milliseconds per stage of one Cityscapes training item, in this process."""
    ds = city.CityscapesSegmentation(root, "train", crop_size=(256, 512))
    name = ds.ids[0]
    image_path, label_path = ds.image_path(name), ds.label_path(name)
    image, label = city.open_image(image_path), city.open_label_ids(label_path)
    crop = (100, 200, 256, 512)
    out = {
        "image_png_MB": round(os.path.getsize(image_path) / 2**20, 2),
        "decode_image_pil": best_ms(lambda: city.open_image(image_path)),
        "decode_and_check_label": best_ms(lambda: city.open_label_ids(label_path)),
        "resize_whole_image_then_crop": best_ms(
            lambda: image.resize((1024, 512), Image.BILINEAR).crop((200, 100, 712, 356))),
        "resize_crop_only": best_ms(lambda: city.pil_resize(image, (512, 1024), Image.BILINEAR, crop)),
        "label_resize_crop_only": best_ms(lambda: city.pil_resize(label, (512, 1024), Image.NEAREST, crop)),
        "normalize_and_map": best_ms(lambda: (city.normalize(np.asarray(city.pil_resize(image, (512, 1024),
                                                                                          Image.BILINEAR, crop))),
                                              city.LABEL_TO_TRAIN[np.asarray(label)[:256, :512]])),
        "whole_train_item": best_ms(lambda: ds[(0, 1)]),
        "whole_val_item": best_ms(lambda: city.CityscapesSegmentation(root, "val", train=False)[0], repeats=3),
    }
    out["one_worker_images_per_s_max"] = round(1000 / out["whole_train_item"], 1)
    # CPU time is what a worker spends per item whatever else runs on the machine (on a shared,
    # loaded machine the wall-clock figures above are upper bounds).
    t0 = time.process_time()
    for k in range(len(ds)):
        ds[(k, k)]
    out["train_item_cpu_ms"] = round(1000 * (time.process_time() - t0) / len(ds), 1)
    out["one_core_images_per_s"] = round(1000 / out["train_item_cpu_ms"], 1)
    return out


def mlmt_split(context_root):
    """The fake Context training JPEGs as an MLMT split (the presence labels do not matter here)."""
    with open(os.path.join(context_root, "train.txt")) as f:
        ids = [line.strip() for line in f if line.strip()]
    paths = [os.path.join(context_root, ctx.IMAGE_DIR, i + ".jpg") for i in ids]
    return multilabel.ImageLabels(ids, paths, np.zeros((len(ids), 21), np.uint8), "bench")


def loader_rate(dataset, workers, batch_size, batches, shuffle=True):
    sampler = SeededEpochSampler(np.arange(len(dataset)), seed=0, stream=0, shuffle=shuffle)
    stream = BatchStream(dataset, sampler, batch_size, num_workers=workers, worker_init_fn=init_worker)
    next(stream)  # worker start-up and the first batch are not timed
    t0 = time.perf_counter()
    for _ in range(batches):
        next(stream)
    elapsed = time.perf_counter() - t0
    del stream
    return round(batches * batch_size / elapsed, 1)


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(1)
    only = set(args.only.split(","))
    city_root = args.city_dir or fake_city(args.images)
    context_root = args.context_dir or fake_context(max(args.images, 16))
    header = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "batch_size": args.batch_size,
              "city": "fake 2048x1024" if not args.city_dir else args.city_dir,
              "context": "fake ~500x375" if not args.context_dir else args.context_dir}
    print(json.dumps({"setup": header}), flush=True)
    if "stages" in only:
        print(json.dumps({"cityscapes_train_stages_ms": stages(city_root)}), flush=True)
    builders = {
        "city_train": lambda: city.CityscapesSegmentation(city_root, "train", crop_size=(256, 512)),
        "city_val": lambda: city.CityscapesSegmentation(city_root, "val", train=False),
        "context_train": lambda: ctx.ContextSegmentation(context_root, "train", crop_size=(321, 321),
                                                         mean=ctx.IMAGENET_MEAN_RGB[::-1]),
        "context_val": lambda: ctx.ContextSegmentation(context_root, "val", train=False),
        "mlmt_labeled": lambda: multilabel.ClassifierImages(mlmt_split(context_root), "labeled", 320),
        "mlmt_unlabeled": lambda: multilabel.ClassifierImages(mlmt_split(context_root), "unlabeled", 320),
        # --augment-on-device: the loaders only decode and resize; the views are made on the device
        "mlmt_unlabeled_device_views": lambda: multilabel.ClassifierImages(mlmt_split(context_root), "unlabeled", 320,
                                                                           device_augment=True),
    }
    for name, build in builders.items():
        if name not in only:
            continue
        for workers in (int(w) for w in args.workers.split(",")):
            rate = loader_rate(build(), workers, args.batch_size, args.batches)
            print(json.dumps({"pipeline": name, "workers": workers, "images_per_s": rate}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
