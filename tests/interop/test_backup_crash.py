"""A backup point and a merge killed (SIGKILL) at their steps, then run again.

The child kills itself at its Nth event: an engine write, flush or truncate, or the moment just before or just
after a manifest replacement. After each kill every point the manifest lists as sealed still reads, through
qemu-img, as the source did when it was taken, and no layer is corrupt; the next run finishes what was left (a
merge), removes what was not sealed, leaves no stale bitmap in the source, and every point restores.
"""

from __future__ import annotations

import shutil

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import backup, verify
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import load, new_manifest, save
from ansible_collections.backingchain.qcow2.tests.helpers.backup_store import (
    assert_store_sound,
    keep_view,
    run_store_op,
    sealed_layers,
    store_op,
)
from ansible_collections.backingchain.qcow2.tests.helpers.chains import MiB, copy_images
from ansible_collections.backingchain.qcow2.tests.helpers.crash import KILLED
from ansible_collections.backingchain.qcow2.tests.helpers.limits import crash_points, record_crash_points
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import qemu_img_create, qemu_img_json, qemu_io

CRASH_BUDGET = 60  # events tried per run (limits.crash_points; CRASH_POINTS=all tries every one)


@pytest.fixture
def three_points(tmp_path):
    """A store with three points of a disk and, in the disk, changes for a fourth; views of each state."""
    work = tmp_path / 'work'
    (work / 'store').mkdir(parents=True)
    save(str(work / 'store'), new_manifest(hash_part=65536))  # small parts: a merge rehashes only some
    source = qemu_img_create(work / 'disk.qcow2', 8 * MiB)
    views = {}
    for seq, writes in enumerate((('write -P 0x11 0 3M',), ('write -P 0x21 1M 512k', 'write -z 2M 64k'),
                                  ('write -P 0x31 5M 1M', 'discard 0 64k'))):
        qemu_io(source, *writes)
        views[seq] = keep_view(source, tmp_path, 'view-%d.qcow2' % seq)
        backup.run_backup(backup.Request(str(work / 'store'), str(source)))
    qemu_io(source, 'write -P 0x41 3M 1M', 'write -z 1M 64k')
    views['next'] = keep_view(source, tmp_path, 'view-next.qcow2')
    pristine = copy_images(work, tmp_path / 'pristine')
    shutil.copytree(work / 'store', pristine / 'store')
    return work, pristine, views


def _reset(work, pristine):
    shutil.rmtree(work)
    shutil.copytree(pristine, work)


def _views_for(store, views):
    """Every sealed seq mapped to its view: 0..2 as taken, anything newer is the changed source."""
    return {seq: views.get(seq, views['next']) for seq in sealed_layers(store)}


def _own_bitmaps(source, manifest):
    info = qemu_img_json('info', '-U', source)
    names = [b['name'] for b in info['format-specific']['data'].get('bitmaps', [])]
    return [n for n in names if n.startswith('bcq-backup-%s-' % manifest['store_id'])]


@pytest.mark.parametrize('op,kwargs', [
    ('backup', {'keep': 2}),  # an increment, then two merges
    ('retain', {'keep': 1}),  # merges alone
], ids=['backup-with-merges', 'merges'])
def test_killed_at_every_step_then_run_again(three_points, tmp_path, record_property, op, kwargs):
    work, pristine, views = three_points
    store, source = work / 'store', work / 'disk.qcow2'
    args = dict(kwargs, store=str(store)) if op == 'retain' else dict(kwargs, store=str(store), source=str(source))
    _result, events = store_op(op, args)
    assert events > 5
    points = crash_points(events, CRASH_BUDGET)
    for crash_at in points:
        _reset(work, pristine)
        proc = run_store_op(op, args, crash_at=crash_at)
        assert proc.returncode in (KILLED, 0), proc.stderr
        assert_store_sound(store, _views_for(store, views), tmp_path, engine_restore=False, only_sealed=False,
                           leaks_ok=True)
        store_op(op, args)  # the next run finishes the job
        manifest = load(str(store))
        assert manifest['merging'] is None
        assert_store_sound(store, _views_for(store, views), tmp_path)
        assert _own_bitmaps(source, manifest) == [manifest['chains'][-1]['points'][-1]['bitmap']]
        assert verify.verify(str(store))['problems'] == []  # the sealed digests match the files
    record_crash_points(record_property, points, events)
