"""Atomic file writes: write a temporary file in the same folder, fsync, then rename over the target.

A crash or a full disk mid-write leaves the previous file intact, never a truncated one.
"""
import contextlib
import os
import tempfile

import torch

from utils.errors import UserError


@contextlib.contextmanager
def atomic_open(path):
    """Open a temporary file for writing; on success it replaces `path`, on failure it is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
        _fsync_folder(folder)
    except OSError as exc:
        _remove_quietly(tmp)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write_bytes(path, data):
    with atomic_open(path) as f:
        f.write(data)


def atomic_torch_save(obj, path):
    with atomic_open(path) as f:
        torch.save(obj, f)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass
