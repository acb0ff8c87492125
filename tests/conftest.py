import os
import shutil
import sys
import tempfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.voc_fixture import make_voc  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


# The most the suite holds on disk at once (measured: 1.6 GB, the checkpoints of training tests; a
# passing test's folder goes when it ends (pytest.ini), a module's shared runs when its tests end
# (module_tmp)). Below this, refuse up front in one line rather than fail a hundred tests with a full
# disk. SEMISUP_TESTS_NEED_GB changes it.
NEEDS_FREE_GB = float(os.environ.get("SEMISUP_TESTS_NEED_GB", 2.5))
# tests/crosscheck/ with the authors' code: measured 13 GB at once (each side's record of three WRN-38
# iterations, written to files so that memory holds one iteration; 15 GB of memory at its peak)
CROSSCHECK_NEEDS_FREE_GB = float(os.environ.get("SEMISUP_CROSSCHECK_NEED_GB", 16))


def pytest_sessionstart(session):
    if getattr(session.config, "workerinput", None) is not None or session.config.option.collectonly:
        return
    given = session.config.option.basetemp
    folder = os.path.dirname(os.path.abspath(given)) if given else tempfile.gettempdir()
    free = shutil.disk_usage(folder).free / 2**30
    marks = session.config.option.markexpr or ""
    crosscheck = "original" in marks and "not original" not in marks  # -m original: tests/crosscheck/
    needed = max(NEEDS_FREE_GB, CROSSCHECK_NEEDS_FREE_GB if crosscheck else 0)
    if free < needed:
        pytest.exit(f"error: the tests need about {needed} GB free in {folder} and {free:.1f} GB is: "
                    f"free some space there, or give pytest --basetemp on a disk with room", returncode=2)


def pytest_addoption(parser):
    parser.addoption("--original", default=None, metavar="PATH",
                     help="a checkout of github.com/sud0301/semisup-semseg: run tests/crosscheck/ against the "
                          "authors' code (also SEMISUP_ORIGINAL=PATH); select them with -m original")


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory):
    """A tiny VOC-layout dataset (6 train, 3 val images of different sizes, 255 borders)."""
    return make_voc(str(tmp_path_factory.mktemp("voc")))


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """mktemp for the runs a module's tests share: removed when the module's tests end (a training
    run's checkpoints take hundreds of MB; pytest keeps tmp_path_factory's folders to the session's end)."""
    base = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])

    def mktemp(name):
        path = base / name
        path.mkdir()
        return path

    yield mktemp
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_voc(tmp_path):
    """A private copy the test may damage."""
    return make_voc(str(tmp_path / "voc"))
