"""Atomic file writes: write a temporary file in the same folder, flush, fsync, rename it over the
target, fsync the folder. A crash or a full disk at any point leaves the previous file intact, never a
truncated one; what a crash can leave is the temporary file (`.tmp-<8 characters>-<name>`), which
`remove_stale_temporaries` clears when a run starts. Outputs that need not be atomic (evaluate.py's
prediction PNGs) use `reported_writes`, which turns a failed write into the same kind of one line.

Faults can be injected for tests: `set_fault(hook)` calls hook(stage, path) at each stage of a write
(written, flushed, synced, rotated, renamed), and the environment variable
SEMISUP_TEST_FAULT=<file name>:<stage>:<kill|raise|enospc|eio>[:<n-th write of that file>] does the
same for a whole process (kill: SIGKILL at that point).
"""
import contextlib
import errno
import os
import re
import shutil
import signal
import tempfile

import torch

from utils.errors import OUT_OF_SPACE, UserError

STAGES = ("written", "flushed", "synced", "rotated", "renamed")
TEMPORARY = re.compile(r"^\.tmp-[a-z0-9_]{8}-.+$")  # what atomic_open names its temporary files
RESUME = "the previous files are intact: free some space and continue with --resume auto"
_fault = None
_writes = {}


def set_fault(hook):
    """Install (or, with None, remove) the fault hook: hook(stage, path) before each stage."""
    global _fault
    _fault = hook


def _fault_spec():
    """SEMISUP_TEST_FAULT as (file name, stage, action, n-th write), or None; malformed: one line."""
    spec = os.environ.get("SEMISUP_TEST_FAULT")
    if not spec:
        return None
    parts = spec.split(":")
    if (len(parts) not in (3, 4) or parts[1] not in STAGES or parts[2] not in ("kill", "raise", "enospc", "eio")
            or (len(parts) == 4 and not parts[3].isdigit())):
        raise UserError(f"SEMISUP_TEST_FAULT={spec} is not <file name>:<{'|'.join(STAGES)}>:<kill|raise|enospc|eio>"
                        f"[:<n-th write>] (a variable for tests: unset it)")
    return parts[0], parts[1], parts[2], int(parts[3]) if len(parts) == 4 else 1


def _stage(stage, path):
    if _fault is not None:
        _fault(stage, path)
    spec = _fault_spec()
    if spec:
        name, at, action, nth = spec
        if name == os.path.basename(path) and at == stage and _writes.get(path, 0) == nth:
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            codes = {"enospc": errno.ENOSPC, "eio": errno.EIO}
            if action in codes:
                raise OSError(codes[action], os.strerror(codes[action]))
            raise RuntimeError(f"injected fault at {stage} of {path}")


def _size(n):
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n} bytes"


@contextlib.contextmanager
def atomic_open(path, size_hint=None, keep_previous=None, advice=RESUME):
    """Open a temporary file for writing; on success it replaces `path`, on failure it is removed.

    `keep_previous`: a path that the file being replaced moves to first (the previous generation).
    An OSError (a full disk, an I/O error) becomes one line naming the folder, the size needed and
    the space free, then `advice`; the previous file stays as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    _writes[path] = _writes.get(path, 0) + 1
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            written = f.tell()
            _stage("written", path)
            f.flush()
            _stage("flushed", path)
            os.fsync(f.fileno())
            _stage("synced", path)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        if keep_previous and os.path.isfile(path):
            os.replace(path, keep_previous)
            _stage("rotated", path)
        os.replace(tmp, path)
        _stage("renamed", path)
        _fsync_folder(folder)
    except OSError as exc:
        _remove_quietly(tmp)
        needed = max(written, size_hint or 0)
        raise UserError(f"cannot write {path}: {exc.strerror or exc} (in {folder}: about {_size(needed)} needed"
                        f"{_free(folder)}); {advice}") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextlib.contextmanager
def reported_writes(path):
    """For outputs that are not training states (evaluate.py's predictions and result.txt): an
    OSError while writing `path` becomes one line naming it and the space free in its folder."""
    try:
        yield
    except OSError as exc:
        if exc.errno in OUT_OF_SPACE:  # the file was opened (so truncated) and is not whole; a file
            _remove_quietly(path)      # that could not be opened at all (EACCES, say) is left alone
        folder = os.path.dirname(os.path.abspath(path))
        raise UserError(f"cannot write {path}: {exc.strerror or exc} (in {folder}{_free(folder)})") from None


def _free(folder):
    try:
        return f", {_size(shutil.disk_usage(folder).free)} free"
    except OSError:
        return ""


def atomic_write_bytes(path, data, advice=RESUME):
    with atomic_open(path, size_hint=len(data), advice=advice) as f:
        f.write(data)


def tensor_bytes(obj):
    """The bytes of the tensors in a nested state (what a torch.save of it needs, roughly)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


class _WriteErrors:
    """A file's write() that keeps the first OSError it raised. torch.save turns a failed write (a
    full disk, a file-size limit) into RuntimeError('unexpected pos ...'), which names no cause."""

    def __init__(self, f):
        self.f = f
        self.error = None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self):
        self.f.flush()


def atomic_torch_save(obj, path, keep_previous=None):
    with atomic_open(path, size_hint=tensor_bytes(obj), keep_previous=keep_previous) as f:
        sink = _WriteErrors(f)
        try:
            torch.save(obj, sink)
        except RuntimeError:
            if sink.error is None:
                raise
            raise sink.error from None  # atomic_open makes it one line naming the folder and the space


def remove_stale_temporaries(folder):
    """Delete the temporary files that a killed write of ours left in `folder` (only names of
    atomic_open's pattern); returns their names."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        if TEMPORARY.match(name) and os.path.isfile(os.path.join(folder, name)):
            _remove_quietly(os.path.join(folder, name))
            removed.append(name)
    return removed


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder):
    """Make the rename itself durable (a crash right after it keeps the new name)."""
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
