"""Labeled/unlabeled splits: a permutation of the training list's indices, labeled = its prefix.

The file format is the original's: a pickled numpy int64 array (protocol 3). Split files are often
downloaded, so they are read by an unpickler that admits numpy integer arrays and lists of ints
only; anything else (a pickle that would run code, say) is refused.
"""
import argparse
import io
import os
import pickle
import sys

import numpy as np

from utils.checkpoint import atomic_write_bytes
from utils.errors import UserError


def _numpy_globals():
    allowed = {}
    for module_name in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                        "numpy._core.numeric"):
        for attr in ("_reconstruct", "_frombuffer"):
            allowed[(module_name, attr)] = None
    return allowed


_ALLOWED = _numpy_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles encode raw bytes this way
            import codecs
            return codecs.encode
        if (module, name) in _ALLOWED:
            core = np._core if hasattr(np, "_core") else np.core
            source = core.multiarray if module.endswith("multiarray") else core.numeric
            return getattr(source, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")


def load_permutation(path, n, flag="--split-id"):
    """Read a split file and check that it is a permutation of range(n)."""
    if not os.path.isfile(path):
        hint = ""
        if os.path.basename(path) == "split_0.pkl":
            hint = (": the original authors' split ships as splits/<dataset>/split_0.pkl (run from the "
                    "project's folder, or give its full path); or --split-id none (seeded by --random-seed)")
        raise UserError(f"{flag} {path} does not exist{hint}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise UserError(f"{flag} {path} is refused: it is not a plain integer array ({exc})") from None
    except Exception as exc:
        raise UserError(f"{flag} {path} is not a readable split file ({exc})") from None
    if isinstance(obj, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in obj):
        obj = np.asarray(obj, np.int64)
    if not isinstance(obj, np.ndarray) or obj.dtype.kind not in "iu" or obj.ndim != 1:
        raise UserError(f"{flag} {path} is refused: it must hold a 1-D integer array or a list of ints")
    perm = obj.astype(np.int64)
    if len(perm) != n or not np.array_equal(np.sort(perm), np.arange(n)):
        raise UserError(f"{flag} {path} is not a permutation of the {n} training images "
                        f"(length {len(perm)}): it belongs to another dataset or list")
    return perm


def seeded_permutation(n, seed):
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def save_permutation(path, perm):
    atomic_write_bytes(path, pickle.dumps(np.asarray(perm, np.int64), protocol=3))


def split_indices(perm, labeled_ratio):
    """labeled = first int(ratio * N) entries, unlabeled = the rest; ratio None: all are both."""
    if labeled_ratio is None:
        everything = np.arange(len(perm), dtype=np.int64)
        return everything, everything
    count = int(labeled_ratio * len(perm))
    if count == 0:
        raise UserError(f"--labeled-ratio {labeled_ratio} labels 0 of {len(perm)} images")
    return perm[:count], perm[count:]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data.splits",
                                     description="Write a seeded split permutation in the original's format.")
    parser.add_argument("--num-images", type=int, required=True, help="length of the training list")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True, help="output .pkl path")
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_permutation(args.out, seeded_permutation(args.num_images, args.seed))
    print(f"wrote {args.out}: permutation of {args.num_images} indices, seed {args.seed}")


if __name__ == "__main__":
    from utils.errors import run_cli
    run_cli(main, sys.argv[1:])
