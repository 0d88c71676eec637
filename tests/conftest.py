"""pytest configuration shared by every test of backingchain.qcow2.

Collection code imports itself as ansible_collections.backingchain.qcow2.*,
so tests must import it that way too. ansible-test runs tests from a copy at
.../ansible_collections/backingchain/qcow2/; under plain pytest the checkout
can be anywhere, so we build a temporary ansible_collections/<ns>/<name>
symlink to the checkout and put its parent first on sys.path.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = 'backingchain'
NAME = 'qcow2'


def _collections_root() -> str:
    """Return a directory that holds ansible_collections/<ns>/<name> pointing at REPO."""
    if REPO.parts[-3:] == ('ansible_collections', NAMESPACE, NAME):
        return str(REPO.parent.parent.parent)
    root = tempfile.mkdtemp(prefix='backingchain-qcow2-collections-')
    link = Path(root, 'ansible_collections', NAMESPACE, NAME)
    link.parent.mkdir(parents=True)
    link.symlink_to(REPO, target_is_directory=True)

    def _cleanup() -> None:
        link.unlink()  # the symlink only, never what it points at
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(_cleanup)
    return root


sys.path.insert(0, _collections_root())


try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # ansible-test's units venv only has tests/unit/requirements.txt
    pass
else:
    # Shared machines are slow and noisy: no per-example deadline. CI prints
    # the blob needed to reproduce a failure. Choose with HYPOTHESIS_PROFILE.
    _hypothesis_settings.register_profile('dev', deadline=None)
    _hypothesis_settings.register_profile('ci', deadline=None, print_blob=True)
    _hypothesis_settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci' if os.environ.get('CI') else 'dev'))


@pytest.fixture
def tmp_image_dir(tmp_path: Path) -> Path:
    """An empty per-test directory for disk images, removed by pytest later."""
    path = tmp_path / 'images'
    path.mkdir()
    return path
