"""Running the scripts from tests, in-process (fast) or as a real subprocess."""
import contextlib
import fnmatch
import os
import shutil
import subprocess
import sys

import pytest

from utils.errors import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(main, argv, capsys=None):
    """Run a script's main as the command line would; return (exit status, stdout, stderr).

    Without pytest's capsys (module-scoped fixtures) the output is not captured: ("", "")."""
    try:
        run_cli(main, argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def iou_output(out):
    """evaluate.py's printed IoU table, without the timing line that follows it."""
    return out.rsplit("\nevaluated ", 1)[0]


def expect_error(main, argv, capsys, *fragments, detail_lines=0):
    """Exit status 2 and one line `error: ...` holding every fragment; `detail_lines` indented lines
    may follow it (the PASCAL-Context layouts), and the fragments may be in them."""
    code, _, err = run_main(main, argv, capsys)
    lines = err.rstrip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 + detail_lines and lines[0].startswith("error: "), err
    assert all(line.startswith("  ") for line in lines[1:]), err
    for fragment in fragments:
        assert fragment in err, err
    return err.rstrip()


def run_subprocess(args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", 300), **kwargs)


def tiny_train_flags(voc_root, checkpoint_dir, *extra):
    return ["--data-dir", voc_root, "--data-list", os.path.join(voc_root, "lists/train_aug.txt"),
            "--backbone", "resnet18", "--restore-from", "none", "--input-size", "33,33",
            "--batch-size", "2", "--num-workers", "0", "--checkpoint-dir", str(checkpoint_dir), *extra]


def tiny_eval_flags(voc_root, checkpoint, save_dir, *extra):
    return ["--data-dir", voc_root, "--data-list", os.path.join(voc_root, "lists/val.txt"),
            "--backbone", "resnet18", "--restore-from", str(checkpoint), "--save-dir", str(save_dir),
            "--num-workers", "0", *extra]


needs_cuda = pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")


@contextlib.contextmanager
def crash_at(step_class, iteration):
    """Inside the block, `step_class.__call__` raises RuntimeError("simulated crash") at `iteration`,
    and the block must end in that crash; afterwards the real __call__ is back."""
    original = step_class.__call__

    def crashing(self, i, *args, **kwargs):
        if i == iteration:
            raise RuntimeError("simulated crash")
        return original(self, i, *args, **kwargs)

    step_class.__call__ = crashing
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            yield
    finally:
        step_class.__call__ = original


def assert_identical(a, b):
    """Two nested states (dicts, lists, tensors, numbers) are equal to the bit: tensors of the same
    dtype and values, everything else == (NaN equal to NaN)."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_identical(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_identical(x, y)
    else:
        assert a == b or (a != a and b != b)


def tracked_files(untracked=False):
    """The repository's files as a clone has them: git's list, or without git the tree less what
    .gitignore names. `untracked`: also the files git does not track yet but does not ignore (new
    modules before their commit)."""
    try:
        command = ["git", "ls-files", "-z"] + (["--cached", "--others", "--exclude-standard"] if untracked else [])
        listing = subprocess.run(command, cwd=ROOT, capture_output=True, check=True).stdout
        return sorted(f for f in listing.decode().split("\0") if f and os.path.isfile(os.path.join(ROOT, f)))
    except (OSError, subprocess.CalledProcessError):
        patterns = [p.strip().rstrip("/") for p in open(os.path.join(ROOT, ".gitignore")) if p.strip()] + [".git"]

        def ignored(rel):
            return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(os.path.basename(rel), p) for p in patterns)
        out = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if not ignored(os.path.relpath(os.path.join(folder, d), ROOT))]
            out += [r for r in (os.path.relpath(os.path.join(folder, f), ROOT) for f in files) if not ignored(r)]
        return sorted(out)


def copy_repository(folder, untracked=False):
    """The repository's tracked files copied into `folder` (what a fresh clone holds); returns it.
    `untracked`: with the files not yet tracked that git does not ignore (the working tree as it
    would be committed)."""
    for name in tracked_files(untracked):
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), os.path.join(folder, name))
    return folder
