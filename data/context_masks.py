"""Reading the masks of the two source forms that `python -m data.context prepare` converts.

(b) read_label_map: the 459-class LabelMap of an official trainval/<id>.mat, mapped to labels 0..59.
(c) read_mask_cache: the original project's train.pth / val.pth (torch-saved dicts id -> PIL mask),
read by a restricted unpickler that rebuilds plain containers and PIL masks only and refuses every
other global, and any tensor storage, before anything is called: nothing in a cache is ever run.

The conversion itself is data/context_prepare.py; the labels and the layout, data/context_layout.py;
the dataset, data/context.py.
"""
import pickle
import zipfile

import numpy as np

from data.context_layout import MAX_CATEGORY_ID, map_category_ids
from utils.errors import UserError


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
# The official release's .mat files

def read_label_map(path):
    """The 459-class LabelMap of an official trainval/<id>.mat."""
    import scipy.io  # only needed for this form of the data
    try:
        content = scipy.io.loadmat(path, variable_names=["LabelMap"])
    except FileNotFoundError:
        raise UserError(f"label {path} does not exist") from None
    except Exception as exc:  # scipy raises several types for corrupt files
        raise UserError(f"cannot read {path} ({type(exc).__name__}: {exc}): a damaged file; extract it again "
                        f"from trainval.tar.gz") from None
    if "LabelMap" not in content:
        raise UserError(f"{path} has no LabelMap variable: expected the PASCAL-Context full-label "
                        f"release's trainval/<id>.mat (trainval.tar.gz)")
    label_map = np.asarray(content["LabelMap"])
    if label_map.ndim != 2 or label_map.dtype.kind not in "iuf" or (
            label_map.dtype.kind == "f" and not np.array_equal(label_map, np.round(label_map))):
        raise UserError(f"{path}: LabelMap is not a 2-D map of integer category ids")
    outside = np.unique(label_map[(label_map < 0) | (label_map > MAX_CATEGORY_ID)])
    if outside.size:
        raise UserError(f"{path}: category ids {outside[:5].astype(np.int64).tolist()} are outside the "
                        f"{MAX_CATEGORY_ID} of PASCAL-Context's full release (0 to {MAX_CATEGORY_ID}): is it "
                        f"another dataset's .mat?")
    return map_category_ids(label_map.astype(np.int64))
