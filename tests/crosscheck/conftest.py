"""Crosscheck: our code next to the authors', both executed on the same tiny inputs.

    python -m pytest -m original --original /path/to/semisup-semseg     (or SEMISUP_ORIGINAL=PATH)

The authors' code runs in a process of its own (driver.py, with the compatibility shims of
shims.py); nothing of it is copied here. Without a checkout every test in this folder skips with one
line, and `make test` (CI) does not select them. Each check adds a row (pipeline, what was compared,
the worst difference) to the table printed at the end and written to .pytest_cache/d/crosscheck/crosscheck.md
(and to the file SEMISUP_CROSSCHECK_REPORT names, if set).
"""
import datetime
import hashlib
import os
import shlex
import subprocess

import pytest
import torch

from data.context_prepare import prepare
from tests.crosscheck.common import DriverFailed, call_driver, make_city_data, make_context_data, make_voc_data

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = []


@pytest.fixture(scope="session")
def voc(tmp_path_factory):
    return make_voc_data(str(tmp_path_factory.mktemp("voc")))


@pytest.fixture(scope="session")
def city(tmp_path_factory):
    return make_city_data(str(tmp_path_factory.mktemp("city")))


@pytest.fixture(scope="session")
def context(tmp_path_factory):
    root = make_context_data(str(tmp_path_factory.mktemp("pcontext_dataset")))
    prepare(root, log=lambda *_: None)  # our layout next to the original's caches, lists in cache order
    return root


@pytest.fixture(scope="session")
def no_weights(tmp_path_factory):
    """A --restore-from for the original trainers that matches nothing (they copy by name and shape)."""
    path = str(tmp_path_factory.mktemp("weights") / "empty.pth")
    torch.save({}, path)
    return path


@pytest.fixture(scope="session")
def original(request):
    """The checkout's path; the test skips without one, and fails on a folder that is not one."""
    path = request.config.getoption("--original") or os.environ.get("SEMISUP_ORIGINAL")
    if not path:
        pytest.skip("needs a checkout of the authors' code: --original PATH or SEMISUP_ORIGINAL=PATH "
                    "(git clone https://github.com/sud0301/semisup-semseg)")
    if not os.path.isfile(os.path.join(path, "train_s4GAN.py")):
        pytest.fail(f"--original {path}: no train_s4GAN.py there; give a checkout of sud0301/semisup-semseg")
    return os.path.abspath(path)


def run_original(checkout, task, spec, folder, timeout=3600):
    """Run one task of driver.py on the checkout; returns what it recorded."""
    try:
        return call_driver(checkout, task, spec, folder, timeout)
    except DriverFailed as exc:
        pytest.fail(str(exc))


def with_our_flags(script, argv):
    """`argv` for one of our scripts, plus the flags SEMISUP_CROSSCHECK_OURS gives our side only:
    "FLAGS" for every script, or "SCRIPT: FLAGS; SCRIPT: FLAGS" (script names without .py). How the
    demonstrations (demonstrate.py) make a deliberate difference of one kind."""
    extra = []
    for part in filter(None, (p.strip() for p in os.environ.get("SEMISUP_CROSSCHECK_OURS", "").split(";"))):
        name, _, flags = part.rpartition(":") if ":" in part.split()[0] else ("", "", part)
        if not name or name.strip() == script:
            extra += shlex.split(flags)
    return list(argv) + extra


@pytest.fixture
def report():
    """report(pipeline, compared, worst, ok): one row of the table."""
    def add(pipeline, compared, worst, ok):
        ROWS.append((pipeline, compared, worst, "agrees" if ok else "DIFFERS"))
        return ok
    return add


def checkout_commit(config):
    """The checkout's commit, or for a copy without git history a digest of its Python files."""
    path = config.getoption("--original") or os.environ.get("SEMISUP_ORIGINAL")
    commit = ""
    if os.path.exists(os.path.join(path, ".git")):  # its own history, not that of a folder around it
        try:
            commit = subprocess.run(["git", "-C", path, "log", "-1", "--format=%h (%cs)"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
        except Exception:
            pass
    return commit or f"(a copy without git history; its .py files' sha256 {source_digest(path)})"


def source_digest(path):
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(folder, name), "rb") as f:
                h.update(os.path.relpath(os.path.join(folder, name), path).encode() + b"\0" + f.read())
    return h.hexdigest()[:12]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not ROWS:
        return
    header = ("pipeline", "what was compared", "worst difference", "result")
    lines = [f"Crosscheck against the authors' code {checkout_commit(config)}, {datetime.date.today()}:", "",
             "| " + " | ".join(header) + " |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in ROWS]
    terminalreporter.write_sep("=", "crosscheck")
    for line in lines:
        terminalreporter.write_line(line)
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    folder = cache.mkdir("crosscheck") if cache is not None else None
    paths = [os.path.join(str(folder), "crosscheck.md")] if folder is not None else []
    paths += [os.environ["SEMISUP_CROSSCHECK_REPORT"]] if os.environ.get("SEMISUP_CROSSCHECK_REPORT") else []
    for path in paths:
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        terminalreporter.write_line(f"(also in {path})")
