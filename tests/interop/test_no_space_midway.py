"""The filesystem fills up while an operation runs (the space check passed, then something else took the room).

The up-front space check is switched off for these tests, so that the engine meets ENOSPC in the
middle of its writes. It must stop with NoSpaceError naming the file, leave every image readable
with the same guest view and no corruption in qemu-img check (leaks allowed), leave no temporary
file, and finish the job once there is room again (the clusters the stopped run allocated are
leaked, as qemu leaves them; the engine's check with repair gives them back).
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api, commit, convert, rebase
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import NoSpaceError
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    MiB,
    Layer,
    assert_clean,
    build_chain,
    fill_filesystem,
    same_view,
    view_of,
)
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import backing_chain

CHAIN = [
    Layer('base.qcow2', 64 * MiB, steps=('write -P 0x11 0 4M',)),
    Layer('top.qcow2', steps=('write -P 0x21 3M 2M', 'write -P 0x22 16M 2M', 'write -z 40M 1M')),
]
ROOM_LEFT = MiB  # less than any of the operations below writes


@pytest.fixture
def full(small_fs, tmp_path, monkeypatch):
    for module in (commit, convert, rebase):
        monkeypatch.setattr(module, 'require_space', lambda *args: None)
    build_chain(small_fs, CHAIN)
    before = view_of(small_fs / 'top.qcow2', tmp_path)
    fill_filesystem(small_fs, ROOM_LEFT)
    return small_fs, before


def _images(directory):
    return sorted(p for p in directory.iterdir() if p.suffix == '.qcow2')


def _stopped_cleanly(directory, before, call, names, absent=None):
    with pytest.raises(NoSpaceError, match='No space left on device') as stopped:
        call()
    assert any(name in str(stopped.value) for name in names), str(stopped.value)
    assert_clean(_images(directory), leaks_ok=True)
    assert same_view(directory / 'top.qcow2', before)
    assert not [p.name for p in directory.iterdir() if p.name.endswith('.tmp')]
    assert absent is None or not absent.exists()  # a new image appears whole or not at all
    os.unlink(directory / 'filler')  # room again: the same call finishes the job
    result = call()
    # what the stopped run had allocated is leaked, as qemu leaves it; the engine's check gives it back
    assert_clean(_images(directory), leaks_ok=True)
    for image in _images(directory):
        assert api.check(str(image), repair='leaks')['exit_code'] == 0
    assert_clean(_images(directory))
    return result


def test_commit_runs_out_of_space(full):
    directory, before = full
    result = _stopped_cleanly(directory, before, lambda: api.commit(str(directory / 'top.qcow2')), ['base.qcow2'])
    assert result.changed is True
    assert_clean(_images(directory))
    assert same_view(directory / 'base.qcow2', before)


def test_flatten_runs_out_of_space(full):
    directory, before = full
    result = _stopped_cleanly(directory, before, lambda: api.rebase(str(directory / 'top.qcow2'), ''), ['top.qcow2'])
    assert result.changed is True
    assert backing_chain(directory / 'top.qcow2') == [(str(directory / 'top.qcow2'), 'qcow2')]
    assert_clean(_images(directory))
    assert same_view(directory / 'top.qcow2', before)


def test_convert_runs_out_of_space(full):
    directory, before = full
    dest = directory / 'flat.qcow2'
    result = _stopped_cleanly(directory, before, lambda: api.convert(str(directory / 'top.qcow2'), str(dest)),
                              ['flat.qcow2'], absent=dest)
    assert result.changed is True
    assert_clean([dest])
    assert same_view(dest, before)
