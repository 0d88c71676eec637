"""Bitmap changes killed at each of their writes, flushes and truncates (BACKINGCHAIN_QCOW2_CRASH_AT=N).

After each crash qemu-img check finds no corruption (leaks are what an interrupted change may leave), qemu
reads every bitmap as it was before the change or as it is after it, never a mix and never in use, and the
same change run again reaches the state an uninterrupted run reaches.
"""

from __future__ import annotations

import shutil

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import MiB, count_events, run_engine
from ansible_collections.backingchain.qcow2.tests.helpers.limits import crash_points, record_crash_points
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    dirty_ranges, qemu_img, qemu_img_check, qemu_img_create, qemu_img_info, qemu_io)

KILLED = -9

CHANGES = {
    'add': {'name': 'new', 'granularity': 4096},
    'remove': {'name': 'chk', 'state': 'absent'},
    'clear': {'name': 'chk', 'state': 'cleared'},
    'disable': {'name': 'chk', 'enabled': False},
    'merge': {'name': 'chk', 'merge_from': [{'name': 'other'}, {'name': 'chk', 'backing_chain': True}]},
    'add and merge': {'name': 'new', 'granularity': 512, 'merge_from': [{'name': 'chk'}]},
}


def qemu_view(path):
    return {b['name']: (b['flags'], b['granularity'], dirty_ranges(path, b['name']))
            for b in qemu_img_info(path)['format-specific']['data'].get('bitmaps', [])}


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    d = tmp_path_factory.mktemp('bitmap-crash')
    base = qemu_img_create(d / 'base.qcow2', 4 * MiB, options={'cluster_size': 4096})
    qemu_img('bitmap', '--add', base, 'chk')
    qemu_io(base, 'write -P 1 3M 64k')
    top = qemu_img_create(d / 'top.qcow2', backing='base.qcow2', options={'cluster_size': 4096}, cwd=d)
    qemu_img('bitmap', '--add', top, 'chk')
    qemu_img('bitmap', '--add', '-g', '512', '--disable', top, 'other')
    qemu_io(top, 'write -P 2 0 100k', 'write -z 1M 8k')
    qemu_img('bitmap', '--enable', top, 'other')
    qemu_io(top, 'write -P 3 2M 1000')
    return d


@pytest.mark.parametrize('change', sorted(CHANGES))
def test_a_bitmap_change_killed_anywhere_leaves_the_bitmaps_before_or_after(pristine, tmp_path, change,
                                                                            record_property):
    kwargs = dict(CHANGES[change])
    before = qemu_view(pristine / 'top.qcow2')
    done = tmp_path / 'done'
    shutil.copytree(pristine, done)
    kwargs['path'] = str(done / 'top.qcow2')
    events = count_events('bitmap', kwargs)
    after = qemu_view(done / 'top.qcow2')
    assert after != before
    points = crash_points(events)
    for n in points:
        work = tmp_path / ('crash%d' % n)
        shutil.copytree(pristine, work)
        kwargs['path'] = str(work / 'top.qcow2')
        proc = run_engine('bitmap', kwargs, crash_at=n)
        assert proc.returncode == KILLED, (n, proc.stderr)
        result = qemu_img_check(work / 'top.qcow2')
        assert not result.report.get('corruptions') and not result.report.get('check-errors'), (n, result)
        assert qemu_view(work / 'top.qcow2') in (before, after), n
        api.bitmap(**kwargs)
        assert qemu_view(work / 'top.qcow2') == after, n
        assert not api.bitmap(**kwargs).changed, n
        assert qemu_view(work / 'base.qcow2') == qemu_view(pristine / 'base.qcow2')  # a merge source is only read
        shutil.rmtree(work)
    record_crash_points(record_property, points, events)
