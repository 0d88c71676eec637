# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""qcow2_backup, qcow2_backup_restore and qcow2_backup_verify as tasks: check mode, idempotence, failures."""

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.lock import store_lock
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import load
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_backup, qcow2_backup_restore, qcow2_backup_verify
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, fingerprint, guest_view, make_image, write
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import converge, run_failed, run_ok


def _disk(tmp_path):
    path = make_image(tmp_path / 'disk.qcow2', size=4 * MIB)
    write(path, 0, b'a' * 100000)
    return path


def test_every_run_is_one_point_and_check_mode_predicts_it(tmp_path):
    disk = _disk(tmp_path)
    args = {'path': disk, 'store': str(tmp_path / 'store'), 'keep': 2}
    before = fingerprint(tmp_path)
    check = run_ok(qcow2_backup, args, check_mode=True)
    assert fingerprint(tmp_path) == before  # check mode writes nothing, not even the store directory
    assert check['changed'] and (check['level'], check['reason'], check['seq']) == ('full', 'the store holds no chain yet', 0)
    first = run_ok(qcow2_backup, args)
    assert first['changed'] and (first['level'], first['seq']) == ('full', 0)
    assert first['bytes_to_copy'] <= check['bytes_to_copy']
    write(disk, 2 * MIB, b'b' * 5000)
    check = run_ok(qcow2_backup, args, check_mode=True)
    second = run_ok(qcow2_backup, args)
    for key in ('level', 'reason', 'seq', 'bytes_to_copy'):
        assert check[key] == second[key], key
    assert second['level'] == 'incremental' and second['bytes_to_copy'] == 65536
    assert first['layer'] == str(tmp_path / 'store' / 'chain-0001' / '0000.qcow2')
    assert second['layer'] == str(tmp_path / 'store' / 'chain-0001' / '0001.qcow2') and os.path.isfile(second['layer'])
    # no change in the source: still a point (a tiny one), and retention predicted then done
    check = run_ok(qcow2_backup, args, check_mode=True)
    third = run_ok(qcow2_backup, args)
    assert third['changed'] and third['bytes_to_copy'] == 0
    assert check['retention'] == third['retention'] == [{'action': 'merge', 'chain': 1, 'points': [0, 1]}]
    assert [p['seq'] for p in third['points']] == [1, 2]


def _compressed_clusters(layer):
    return api.check(layer)['result'].get('compressed-clusters', 0)


def test_compress_writes_compressed_layers_that_restore_and_check_mode_still_predicts(tmp_path):
    disk = _disk(tmp_path)
    args = {'path': disk, 'store': str(tmp_path / 'store'), 'compress': True}
    first = run_ok(qcow2_backup, args)
    assert first['point']['compressed'] and first['point']['file_bytes'] < os.path.getsize(disk)
    write(disk, 2 * MIB, b'b' * 5000)
    check = run_ok(qcow2_backup, args, check_mode=True)
    second = run_ok(qcow2_backup, args)
    assert check['bytes_to_copy'] == second['bytes_to_copy'] == 65536  # guest bytes, compressed or not
    assert second['point']['compressed'] and _compressed_clusters(second['layer']) == 1
    write(disk, 3 * MIB, b'c' * 5000)
    plain = run_ok(qcow2_backup, dict(args, compress=False))
    assert not plain['point']['compressed']
    assert (_compressed_clusters(first['layer']), _compressed_clusters(plain['layer'])) == (2, 0)
    dest = str(tmp_path / 'restored.qcow2')
    run_ok(qcow2_backup_restore, {'store': args['store'], 'dest': dest, 'point': 2})
    assert guest_view(dest) == guest_view(disk)


def test_incremental_that_cannot_be_taken_fails_with_the_reason(tmp_path):
    disk = _disk(tmp_path)
    failed = run_failed(qcow2_backup, {'path': disk, 'store': str(tmp_path / 'store'), 'level': 'incremental'})
    assert 'cannot be taken: the store holds no chain yet' in failed['msg']


def test_a_busy_store_fails_naming_the_running_operation(tmp_path):
    disk = _disk(tmp_path)
    args = {'path': disk, 'store': str(tmp_path / 'store')}
    run_ok(qcow2_backup, args)
    with store_lock(str(tmp_path / 'store'), 'merge'):
        failed = run_failed(qcow2_backup, args)
    assert 'is busy: a merge (pid %d)' % os.getpid() in failed['msg']


def test_bad_options_fail_cleanly(tmp_path):
    disk = _disk(tmp_path)
    assert 'max_chain_length must be at least 1' in run_failed(
        qcow2_backup, {'path': disk, 'store': str(tmp_path / 's'), 'max_chain_length': 0})['msg']
    assert 'does not exist' in run_failed(qcow2_backup, {'path': disk, 'store': str(tmp_path / 'no' / 's')})['msg']
    raw = tmp_path / 'disk.raw'
    raw.write_bytes(b'\0' * 65536)
    assert run_failed(qcow2_backup, {'path': str(raw), 'store': str(tmp_path / 's')})['image_format'] == 'raw'
    assert 'one of the following is required: path, domain' in run_failed(
        qcow2_backup, {'store': str(tmp_path / 's')})['msg']
    assert 'missing parameter(s) required by \'disk\': domain' in run_failed(
        qcow2_backup, {'path': disk, 'disk': 'vda', 'store': str(tmp_path / 's')})['msg']


def test_restore_is_idempotent_and_restores_the_point(tmp_path):
    disk = _disk(tmp_path)
    store = str(tmp_path / 'store')
    run_ok(qcow2_backup, {'path': disk, 'store': store})
    view0 = guest_view(disk)
    write(disk, 0, b'c' * 10)
    run_ok(qcow2_backup, {'path': disk, 'store': store})
    out = tmp_path / 'out'
    out.mkdir()
    dest = str(out / 'restored.qcow2')
    _c1, real, _c2, again = converge(qcow2_backup_restore, {'store': store, 'point': 0, 'dest': dest}, out)
    assert real['point']['seq'] == 0 and 'exists' in again['msg']
    assert guest_view(dest) == view0
    forced = run_ok(qcow2_backup_restore, {'store': store, 'dest': dest, 'force': True})
    assert forced['changed'] and forced['point']['seq'] == 1 and guest_view(dest) == guest_view(disk)
    raw = str(out / 'restored.raw')
    run_ok(qcow2_backup_restore, {'store': store, 'point': 0, 'dest': raw, 'format': 'raw'})
    with open(raw, 'rb') as f:
        assert f.read() == view0
    instant = str(out / 'instant.qcow2')
    run_ok(qcow2_backup_restore, {'store': store, 'dest': instant, 'mode': 'instant'})
    assert load(store)['pins'][0]['overlay'] == instant
    assert 'force cannot replace' in run_failed(qcow2_backup_restore, {'store': store, 'dest': instant, 'mode': 'instant',
                                                                       'force': True})['msg']
    assert 'has no point 9' in run_failed(qcow2_backup_restore, {'store': store, 'point': 9,
                                                                 'dest': str(out / 'x.qcow2')})['msg']


def test_verify_reports_fails_and_records(tmp_path):
    disk = _disk(tmp_path)
    store = str(tmp_path / 'store')
    run_ok(qcow2_backup, {'path': disk, 'store': store})
    result = run_ok(qcow2_backup_verify, {'store': store, 'level': 'full'})
    assert result['changed'] is False and result['ok'] and result['problems'] == []
    layer = tmp_path / 'store' / 'chain-0001' / '0000.qcow2'
    with open(layer, 'r+b') as f:
        f.seek(65536 * 5 + 17)  # inside the data the full holds
        f.write(b'Z')
    failed = run_failed(qcow2_backup_verify, {'store': store}, check_mode=True)
    assert 'failed its quick verify' in failed['msg'] and failed['bad_points'] == [0]
    assert load(store)['last_verify']['ok'] is True  # check mode does not record
    reported = run_ok(qcow2_backup_verify, {'store': store, 'fail_on_problems': False})
    assert reported['ok'] is False and reported['changed'] is False
    assert run_ok(qcow2_backup, {'path': disk, 'store': store})['level'] == 'full'
    assert 'level is audit' in run_failed(qcow2_backup_verify, {'store': store, 'level': 'audit'})['msg']
