"""User-facing errors: one line `error: ...` on stderr and exit status 2, never a traceback; and the one
line for a torchrun run whose other process died (exit status 1)."""
import argparse
import errno
import gc
import os
import sys

OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a full disk, a quota, a file-size limit


class UserError(Exception):
    """A problem with the user's input (a flag, a file, the data), reported as one line."""

    prefix, exit_code = "error: ", 2

    def __init__(self, message):
        message = str(message)
        # A DataLoader worker re-raises our error as UserError("Caught UserError ... Original Traceback ...");
        # keep only the original message, which is the last line of that traceback.
        if "Original Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            message = last.split("UserError: ", 1)[-1]
        super().__init__(message)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's one-line error format (exit status 2 as argparse's own)."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def run_cli(main, argv=None):
    """Run a script's main(); turn a UserError into `error: ...` and exit status 2, and the failure of
    another process of a torchrun run into one line and exit status 1."""
    result, exit_code = _run_reporting(main, argv)
    # Free what the run left while the interpreter is whole: a DDP model kept by a reference cycle, or by
    # the frames of the exception handled above, holds its process group, and a gloo group destroyed only
    # during interpreter shutdown can abort the process ("terminate called without an active exception").
    gc.collect()
    if exit_code is not None:
        sys.exit(exit_code)
    return result


def _run_reporting(main, argv):
    """(main's result, None), or (None, the exit status) once the error is reported."""
    try:
        return main(argv), None
    except UserError as exc:
        print(f"{exc.prefix}{exc}", file=sys.stderr)
        return None, exc.exit_code
    except OSError as exc:
        if exc.errno not in OUT_OF_SPACE:  # checkpoints say more (utils/checkpoint.py); this is the rest
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: a write failed: {exc.strerror}{where}; free some space and run again", file=sys.stderr)
        return None, 2
    except RuntimeError as exc:
        message = lost_peer_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return None, 1


LOST_PEER = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL communicator was aborted",
             "Socket Timeout", "timed out")


def lost_peer_message(exc):
    """The one-line message for a collective that failed because another process of the run died,
    naming it where the run has two processes; None if `exc` is not that."""
    text = str(exc)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not any(k in text for k in LOST_PEER):  # (the group may be torn down by now)
        return None
    others = [r for r in range(world) if r != rank]
    who = f"rank {others[0]}" if len(others) == 1 else f"one of ranks {', '.join(map(str, others))}"
    first = text.strip().splitlines()[0].split("] ", 1)[-1].split(". ")[0][:160]
    return (f"rank {rank} of {world}: {who} of this run stopped ({first}); the training state saved last is intact: "
            f"once every process can run again, continue with --resume auto")
