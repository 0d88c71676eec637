"""The store's filesystem fills up in the middle of a layer and of a merge.

The engine's up-front space checks are switched off, so that it meets ENOSPC midway. No sealed point may be
lost or changed, no partial file may stay, the source keeps only the bitmap the store tracks with, and the
same run succeeds once there is room again.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import backup
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import load
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import commit, convert, copyranges
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import NoSpaceError
from ansible_collections.backingchain.qcow2.tests.helpers.backup_store import assert_store_sound, keep_view
from ansible_collections.backingchain.qcow2.tests.helpers.chains import MiB, fill_filesystem
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import qemu_img_create, qemu_img_json, qemu_io


@pytest.fixture
def store_on_small_fs(small_fs, tmp_path, monkeypatch):
    for module in (commit, convert, copyranges):
        monkeypatch.setattr(module, 'require_space', lambda *args: None)
    source = qemu_img_create(tmp_path / 'disk.qcow2', 32 * MiB)
    qemu_io(source, 'write -P 0x11 0 1M')
    store = small_fs / 'store'
    views = {0: keep_view(source, tmp_path, 'view-0.qcow2')}
    backup.run_backup(backup.Request(str(store), str(source)))
    return store, source, views


def _bitmaps(source):
    info = qemu_img_json('info', '-U', source)
    return [b['name'] for b in info['format-specific']['data'].get('bitmaps', [])]


def _no_partial_files(store):
    names = [p.name for p in store.rglob('*')]
    assert not [n for n in names if n.endswith('.tmp')], names


def test_no_space_in_the_middle_of_a_layer(store_on_small_fs, tmp_path):
    store, source, views = store_on_small_fs
    qemu_io(source, 'write -P 0x21 4M 6M')
    tracking = load(str(store))['chains'][0]['points'][0]['bitmap']
    fill_filesystem(store, MiB)
    with pytest.raises(NoSpaceError, match='No space left on device'):
        backup.run_backup(backup.Request(str(store), str(source)))
    _no_partial_files(store)
    assert assert_store_sound(store, views, tmp_path, engine_restore=False) == 1
    assert _bitmaps(source) == [tracking]  # the failed point's bitmap is gone, the tracking one stays
    os.unlink(store / 'filler')
    views[1] = keep_view(source, tmp_path, 'view-1.qcow2')
    result = backup.run_backup(backup.Request(str(store), str(source)))
    assert result['level'] == 'incremental' and result['point']['seq'] == 1
    assert_store_sound(store, views, tmp_path)


def test_no_space_in_the_middle_of_a_merge(store_on_small_fs, tmp_path):
    store, source, views = store_on_small_fs
    qemu_io(source, 'write -P 0x31 4M 6M')  # clusters the full does not have yet: the merge must allocate them
    views[1] = keep_view(source, tmp_path, 'view-1.qcow2')
    backup.run_backup(backup.Request(str(store), str(source)))
    qemu_io(source, 'write -P 0x32 0 64k')
    views[2] = keep_view(source, tmp_path, 'view-2.qcow2')
    backup.run_backup(backup.Request(str(store), str(source)))
    fill_filesystem(store, MiB)
    with pytest.raises(NoSpaceError, match='No space left on device'):
        backup.retain(str(store), keep=2)
    _no_partial_files(store)
    assert load(str(store))['merging'] == {'chain': 1, 'full': 0, 'increment': 1}
    # point 0 was retiring; points 1 and 2 read as they did (leaks in the full are what a stopped commit leaves)
    assert assert_store_sound(store, views, tmp_path, engine_restore=False, leaks_ok=True, only_sealed=False) == 2
    plan = backup.plan_backup(backup.Request(str(store), str(source), keep=2))  # as if the merge were finished
    assert (plan.level, plan.retention) == ('incremental', [backup.Step('merge', 1, [1, 2])])
    os.unlink(store / 'filler')
    assert backup.retain(str(store), keep=2) == []  # the recorded merge is finished first; nothing more to drop
    manifest = load(str(store))
    assert manifest['merging'] is None and [p['seq'] for p in manifest['chains'][0]['points']] == [1, 2]
    assert assert_store_sound(store, views, tmp_path) == 2  # and the full is clean: its leaks were given back
