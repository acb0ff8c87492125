"""What the authors' code needs to run on today's stack, and nothing more. Imported by driver.py only,
in its own process, before any of the authors' modules.

The authors wrote for PyTorch 0.4, NumPy < 1.24 and SciPy < 1.2 on CUDA. Each shim below restores one
removed API with the old behaviour, written here from its documented semantics:

- `np.int` (an alias of the builtin int, removed in NumPy 1.24);
- `scipy.misc.imread` / `imresize` / `imsave` (removed in SciPy 1.2/1.3; they were PIL underneath:
  imread = PIL open with palette images converted to RGB(A); imresize = PIL resize of the array as an
  image of its mode, size given as (rows, cols); imsave = PIL save);
- `.cuda()` on tensors and modules: a no-op, so the code runs on the CPU (nn.DataParallel over no
  GPU calls its module directly and keeps the `module.` key prefix); kept real when a task runs the
  code on a GPU (the timing of the original's step in benchmarks/gpu_check.py);
- `torch.load` without `weights_only` (PyTorch >= 2.6 defaults to True; the original's Context mask
  caches hold PIL images);
- `detail`, the Detail API the Context loader imports: a stand-in with the API's semantics for what
  the loader calls (the images of a split from the annotation json, in its order; each image's map of
  category ids), reading the annotation files the tests write;
- `model.deeplabv3` and `data.ade20k_dataset`, which `train_s4GAN_wrn38.py` imports but the
  repository lacks: the first is the repository's own model/deeplabv3p.py, the second a stub that
  refuses to be used.
"""
import json
import os
import sys
import types

import numpy as np
import torch
from PIL import Image


def _imread(path, flatten=False, mode=None):
    image = Image.open(path)
    if mode is not None:
        image = image.convert(mode)
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if flatten:
        image = image.convert("F")
    return np.array(image)


def _toimage(array, mode=None):
    array = np.asarray(array)
    if mode == "F":
        return Image.fromarray(array.astype(np.float32))  # a 2-D float32 array is mode F
    if array.dtype != np.uint8:
        raise NotImplementedError("the shim only converts uint8 images and mode='F' arrays, as the original uses")
    return Image.fromarray(array)


_RESAMPLE = {"nearest": Image.NEAREST, "lanczos": Image.LANCZOS, "bilinear": Image.BILINEAR,
             "bicubic": Image.BICUBIC, "cubic": Image.BICUBIC}


def _imresize(array, size, interp="bilinear", mode=None):
    image = _toimage(array, mode)
    if isinstance(size, (int, float)) and not isinstance(size, tuple):
        raise NotImplementedError("the shim takes (rows, cols) sizes only, as the original uses")
    rows, cols = size
    return np.array(image.resize((cols, rows), resample=_RESAMPLE[interp]))


def _imsave(path, array):
    _toimage(array).save(path)


class _Detail:
    """Stand-in for detail.Detail(annotation_file, image_folder, phase), the parts the Context loader
    uses, with the API's semantics: the images of the json's `images` list kept in a dict by image_id
    (json order), getImgs() their values whose `phase` is one of those the phase string names
    ("train", "val", "test"), img_folder, and getMask(image): a float64 map of category ids, 0 where
    nothing is annotated. The API paints getMask from the json's segmentation annotations; the tests
    write those as the official full-label release's trainval/<stem>.mat LabelMaps beside the json,
    which this stand-in reads."""

    def __init__(self, annotation_file, image_folder, phase):
        with open(annotation_file) as f:
            images = json.load(f)["images"]
        self.img_folder, self.phase = image_folder, phase
        self._labels = os.path.join(os.path.dirname(annotation_file), "trainval")
        self._images = {}
        for image in images:
            self._images[image["image_id"]] = dict(image)

    def getImgs(self, imgs=None):
        if imgs is None:
            chosen = list(self._images.values())
        else:
            imgs = imgs if isinstance(imgs, list) else [imgs]
            chosen = [self._images[i["image_id"] if isinstance(i, dict) else i] for i in imgs]
        phases = [p for p in ("train", "val", "test") if p in self.phase]
        return [image for image in chosen if image["phase"] in phases]

    def getMask(self, image):
        import scipy.io
        image = self.getImgs(image)[0]
        stem = os.path.splitext(image["file_name"])[0]
        label_map = scipy.io.loadmat(os.path.join(self._labels, stem + ".mat"))["LabelMap"]
        mask = np.zeros((image["height"], image["width"]))
        mask[:] = label_map
        return mask


def install(checkout, cuda=False):
    """Apply the shims and put the checkout first on sys.path (cuda: keep the real .cuda())."""
    np.int = int
    misc = types.ModuleType("scipy.misc")
    misc.imread, misc.imresize, misc.imsave = _imread, _imresize, _imsave
    import scipy
    scipy.misc = misc
    sys.modules["scipy.misc"] = misc

    if not cuda:
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        torch.nn.Module.cuda = lambda self, *args, **kwargs: self

    load = torch.load

    def load_without_weights_only(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return load(*args, **kwargs)

    torch.load = load_without_weights_only

    detail = types.ModuleType("detail")
    detail.Detail = _Detail
    sys.modules["detail"] = detail

    sys.path.insert(0, os.path.abspath(checkout))
    import model.deeplabv3p
    sys.modules["model.deeplabv3"] = model.deeplabv3p
    ade = types.ModuleType("data.ade20k_dataset")

    class ADE20K:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("data/ade20k_dataset.py is not in the authors' repository")

    ade.ADE20K = ADE20K
    sys.modules["data.ade20k_dataset"] = ade
