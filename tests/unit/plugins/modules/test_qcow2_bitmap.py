# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_bitmap
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, make_image, write
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import converge, run_failed, run_ok


def bitmaps(path):
    return {b['name']: b for b in api.list_bitmaps(path)[0]['bitmaps']}


def dirty(path, name):
    return api.dirty_ranges(path, name, allow_disabled=True).ranges


def test_present_absent(tmp_path):
    path = make_image(tmp_path / 'disk.qcow2', size=4 * MIB)
    check, real, _c2, _r2 = converge(qcow2_bitmap, {'path': path, 'name': 'b1'}, tmp_path)
    assert check['actions'] == real['actions'] == ['add']
    assert check['bitmap'] == real['bitmap']
    assert real['bitmap'] == {'name': 'b1', 'granularity': 65536, 'flags': ['auto'], 'in_use': False, 'enabled': True,
                              'trusted': True, 'reason': None, 'dirty_bytes': 0}
    write(path, MIB + 1, b'x')
    assert dirty(path, 'b1') == [(MIB, 65536)]
    _c, real, _c2, _r2 = converge(qcow2_bitmap, {'path': path, 'name': 'b1', 'state': 'absent'}, tmp_path)
    assert real['actions'] == ['remove'] and 'bitmap' not in real
    assert bitmaps(path) == {}
    assert api.check(path)['exit_code'] == 0


def test_granularity_enabled_and_cleared(tmp_path):
    path = make_image(tmp_path / 'disk.qcow2', size=4 * MIB, cluster_size=4096)
    converge(qcow2_bitmap, {'path': path, 'name': 'b', 'granularity': '512', 'enabled': False}, tmp_path)
    assert bitmaps(path)['b']['granularity'] == 512 and not bitmaps(path)['b']['enabled']
    write(path, 0, b'x')
    assert dirty(path, 'b') == []  # disabled: records nothing
    converge(qcow2_bitmap, {'path': path, 'name': 'b', 'enabled': True}, tmp_path)
    write(path, 4096, b'x' * 1000)
    assert dirty(path, 'b') == [(4096, 1024)]
    # the same granularity written another way is no change; a different one is refused
    assert run_ok(qcow2_bitmap, {'path': path, 'name': 'b', 'granularity': '0.5K'})['changed'] is False
    failed = run_failed(qcow2_bitmap, {'path': path, 'name': 'b', 'granularity': '4K'})
    assert 'granularity of 512 bytes, not 4096' in failed['msg']
    _c, real, _c2, _r2 = converge(qcow2_bitmap, {'path': path, 'name': 'b', 'state': 'cleared'}, tmp_path)
    assert real['bitmap']['dirty_bytes'] == 0 and dirty(path, 'b') == []


def test_cleared_adds_a_missing_bitmap_and_diff_shows_before_and_after(tmp_path):
    path = make_image(tmp_path / 'disk.qcow2', size=MIB)
    result = run_ok(qcow2_bitmap, {'path': path, 'name': 'new', 'state': 'cleared', 'enabled': False}, diff=True)
    assert result['changed'] and result['actions'] == ['add']
    assert result['diff']['before'] == {'path': path, 'bitmap': None}
    assert result['diff']['after']['bitmap']['enabled'] is False


def test_merge_from_another_bitmap_another_image_and_the_backing_chain(tmp_path):
    base = make_image(tmp_path / 'base.qcow2', size=4 * MIB)
    api.change_bitmap(base, 'add', 'chk')
    write(base, 0, b'b' * 100)
    top = make_image(tmp_path / 'top.qcow2', backing='base.qcow2')
    api.change_bitmap(top, 'add', 'chk')
    api.change_bitmap(top, 'add', 'other', granularity=512)
    write(top, 2 * MIB, b't' * 10)
    elsewhere = make_image(tmp_path / 'elsewhere.qcow2', size=4 * MIB)
    api.change_bitmap(elsewhere, 'add', 'e')
    write(elsewhere, 3 * MIB, b'e')
    args = {'path': top, 'name': 'all', 'merge_from': [
        {'name': 'chk', 'backing_chain': True}, {'name': 'other'}, {'name': 'e', 'path': elsewhere}]}
    check, real, _c2, _r2 = converge(qcow2_bitmap, args, tmp_path)
    assert real['actions'] == check['actions'] == [
        'add', 'merge chk of the chain from %s down' % base, 'merge other of %s' % top, 'merge e of %s' % elsewhere]
    assert check['bitmap'] == real['bitmap']
    assert dirty(top, 'all') == [(0, 65536), (2 * MIB, 65536), (3 * MIB, 65536)]
    assert real['bitmap']['dirty_bytes'] == 3 * 65536
    write(elsewhere, MIB, b'e')
    result = run_ok(qcow2_bitmap, args, check_mode=True)
    assert result['changed'] and result['actions'] == ['merge e of %s' % elsewhere]
    assert result['bitmap']['dirty_bytes'] == 4 * 65536


def test_refusals_name_the_problem(tmp_path):
    path = make_image(tmp_path / 'disk.qcow2', size=MIB)
    v2 = make_image(tmp_path / 'v2.qcow2', size=MIB, compat='0.10')
    small = make_image(tmp_path / 'small.qcow2', size=MIB // 2)
    api.change_bitmap(small, 'add', 's')
    cases = [
        ({'path': v2, 'name': 'b'}, 'Cannot store dirty bitmaps in qcow2 v2 files'),
        ({'path': path, 'name': 'b', 'granularity': '3000'}, 'Granularity must be power of 2 and at least 512'),
        ({'path': path, 'name': 'b', 'granularity': 'lots'}, 'cannot read'),
        ({'path': path, 'name': 'x' * 1024}, 'Name length exceeds maximum'),
        ({'path': path, 'name': ''}, 'Bitmap name cannot be empty'),
        ({'path': path, 'name': 'b', 'merge_from': [{'name': 'nope'}]}, "Dirty bitmap 'nope' not found"),
        ({'path': path, 'name': 'b', 'merge_from': [{'name': 's', 'path': small}]}, 'Bitmaps are of different sizes'),
        ({'path': path, 'name': 'b', 'merge_from': [{'name': 's', 'backing_chain': True}]}, 'has no backing file'),
        ({'path': path, 'name': 'b', 'state': 'absent', 'enabled': True}, 'takes no granularity, enabled'),
        ({'path': str(tmp_path / 'missing.qcow2'), 'name': 'b'}, 'No such file'),
    ]
    for args, message in cases:
        for check_mode in (True, False):
            assert message in run_failed(qcow2_bitmap, args, check_mode=check_mode)['msg'], args
    assert bitmaps(path) == {}
    # a file that is not a qcow2 image fails with the format found, for a playbook to test
    (tmp_path / 'plain.img').write_bytes(bytes(MIB))
    failed = run_failed(qcow2_bitmap, {'path': str(tmp_path / 'plain.img'), 'name': 'b'})
    assert 'not a qcow2 image' in failed['msg'] and failed['image_format'] == 'raw'
    assert 'image_format' not in run_failed(qcow2_bitmap, {'path': str(tmp_path / 'missing.qcow2'), 'name': 'b'})


def test_an_inconsistent_bitmap_can_only_be_removed(tmp_path):
    path = make_image(tmp_path / 'disk.qcow2', size=MIB)
    api.change_bitmap(path, 'add', 'b')
    from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
    chain = open_chain(path, writable=True)
    chain.top.write(0, b'x')  # flags the bitmap in use on disk
    chain.top.file.close()  # and "crashes": the image is never closed by the engine
    listed = bitmaps(path)['b']
    assert listed['in_use'] and not listed['trusted'] and 'flagged in use' in listed['reason']
    assert run_ok(qcow2_bitmap, {'path': path, 'name': 'b'})['changed'] is False  # present, left as it is
    for args in ({'enabled': False}, {'state': 'cleared'}):
        assert 'inconsistent' in run_failed(qcow2_bitmap, dict(args, path=path, name='b'))['msg']
    converge(qcow2_bitmap, {'path': path, 'name': 'b', 'state': 'absent'}, tmp_path)
    assert api.check(path)['exit_code'] == 0
