"""One run per checkpoint folder: `<folder>/run.lock` (host, PID, start time), taken when a run starts
and removed when it ends.

Without it a second run on the same folder would clear the first one's temporary files in the middle
of a save and overwrite its states. The lock is created with O_CREAT | O_EXCL, which is atomic on
local filesystems and on NFS (v3 and later) alike, so two runs never both hold it. A lock whose
process is gone is taken over only when it was taken on this host (where the PID can be checked); a
lock left by a run on another machine that crashed has to be removed by hand: the error says so.
"""
import json
import os
import socket
import time

from utils.errors import UserError

NAME = "run.lock"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _read(path):
    try:
        with open(path) as f:
            holder = json.load(f)
        return holder if {"host", "pid", "started"} <= set(holder) else None
    except (OSError, ValueError):
        return None


class RunLock:
    def __init__(self, folder, say=print):
        self.path, self.say, self.held = os.path.join(folder, NAME), say, None

    def acquire(self):
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_or_refuse(me)
                continue
            except OSError as exc:
                raise UserError(f"cannot create {self.path}: {exc.strerror or exc}") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = me
            return self
        raise UserError(f"{self.path}: another run keeps taking this --checkpoint-dir")

    def _take_over_or_refuse(self, me):
        holder = _read(self.path)
        if holder is None:  # being written this very moment, or damaged: wait a little, then judge by age
            try:
                age = time.time() - os.path.getmtime(self.path)
            except OSError:
                return  # removed meanwhile: try again
            if age < 10:
                time.sleep(1)
                return
            self.say(f"note: {self.path} was unreadable and {age:.0f} s old: taken over")
        elif holder["host"] == me["host"] and (holder["pid"] == me["pid"] or not _alive(holder["pid"])):
            self.say(f"note: {self.path} of PID {holder['pid']} (started {holder['started']}) is stale, that "
                     f"process is gone: taken over")
        else:
            raise UserError(f"--checkpoint-dir {os.path.dirname(self.path)} is in use by the run of PID "
                            f"{holder['pid']} on {holder['host']}, started {holder['started']}: wait for it or stop "
                            f"it (if that run is gone, on a machine that crashed, remove {self.path})")
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def release(self):
        """Remove the lock if it is still ours."""
        if self.held is not None and _read(self.path) == self.held:
            try:
                os.remove(self.path)
            except OSError:
                pass
        self.held = None
