import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.voc_fixture import make_voc  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_addoption(parser):
    parser.addoption("--original", default=None, metavar="PATH",
                     help="a checkout of github.com/sud0301/semisup-semseg: run tests/crosscheck/ against the "
                          "authors' code (also SEMISUP_ORIGINAL=PATH); select them with -m original")


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory):
    """A tiny VOC-layout dataset (6 train, 3 val images of different sizes, 255 borders)."""
    return make_voc(str(tmp_path_factory.mktemp("voc")))


@pytest.fixture
def fresh_voc(tmp_path):
    """A private copy the test may damage."""
    return make_voc(str(tmp_path / "voc"))
