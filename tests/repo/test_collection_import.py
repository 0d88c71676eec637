"""tests/conftest.py makes this checkout importable as the collection."""

from __future__ import annotations

import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def test_collection_package_is_this_checkout():
    package = importlib.import_module('ansible_collections.backingchain.qcow2')
    paths = [Path(p).resolve() for p in package.__path__]
    assert paths == [REPO]


def test_collection_subpackages_import_from_this_checkout():
    helpers = importlib.import_module('ansible_collections.backingchain.qcow2.tests.helpers.qemu')
    assert Path(helpers.__file__).resolve() == REPO / 'tests' / 'helpers' / 'qemu.py'
