# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The store's manifest (atomic replacement), its lock (a clear error naming the holder) and retention's choices."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import manifest as manifest_mod
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.digests import Hashing, first_difference, reseal, seal, side_path
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.lock import store_lock
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.fileio import run_hash_job
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import (
    StoreError,
    find_point,
    load,
    new_manifest,
    save,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.retention import plan

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)


def _manifest(*chains, pins=()):
    data = new_manifest()
    for number, seqs in enumerate(chains, 1):
        data['chains'].append({'id': number, 'dir': 'chain-%04d' % number, 'points': [
            {'seq': seq, 'time': (NOW - datetime.timedelta(days=100 - seq)).strftime('%Y-%m-%dT%H:%M:%S%z'),
             'file': '%04d.qcow2' % seq} for seq in seqs]})
    data['pins'] = [{'point': p} for p in pins]
    return data


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path, monkeypatch):
    first = new_manifest()
    save(str(tmp_path), first)
    assert load(str(tmp_path)) == first
    second = dict(first, next_seq=5)

    def dump_then_fail(obj, handle, **kwargs):
        handle.write(json.dumps(obj)[:20])
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(manifest_mod.json, 'dump', dump_then_fail)
    with pytest.raises(OSError):
        save(str(tmp_path), second)
    assert load(str(tmp_path)) == first  # the old manifest, whole
    assert os.listdir(tmp_path) == ['manifest.json']


def test_a_killed_writer_leaves_the_old_or_the_new_manifest(tmp_path):
    save(str(tmp_path), new_manifest())
    script = ('import sys, json\nsys.path.insert(0, %r)\n'
              'from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import save, new_manifest\n'
              'm = new_manifest()\nm["chains"] = [{"id": i, "dir": "chain-%%04d" %% i, "points": [], "pad": "x" * 1000} for i in range(3000)]\n'
              'while True:\n    save(%r, m)\n' % (sys.path[0], str(tmp_path)))
    for delay in (0.05, 0.2, 0.4):
        proc = subprocess.Popen([sys.executable, '-c', script])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = load(str(tmp_path))
        assert data is not None and len(data['chains']) in (0, 3000)


def test_load_refuses_what_is_not_a_manifest(tmp_path):
    assert load(str(tmp_path)) is None
    (tmp_path / 'manifest.json').write_text('[1, 2]')
    with pytest.raises(StoreError, match='is not a backup store manifest of format 1'):
        load(str(tmp_path))


@pytest.mark.parametrize('damage,message', [
    (lambda m: m.pop('chains'), "it has no 'chains'"),
    (lambda m: m['chains'].append({'dir': '../elsewhere', 'points': []}), 'a chain is not'),
    (lambda m: m['chains'][0]['points'].append({'seq': 3, 'file': '../../etc/x'}), 'a point of chain-0001 is not'),
])
def test_load_refuses_a_damaged_manifest(tmp_path, damage, message):
    data = _manifest([0, 1])
    damage(data)
    (tmp_path / 'manifest.json').write_text(json.dumps(data))
    with pytest.raises(StoreError, match='is damaged: %s' % message):
        load(str(tmp_path))


def test_find_point():
    data = _manifest([0, 1], [2])
    assert find_point(data, None)[1]['seq'] == 2
    assert find_point(data, 1)[0]['id'] == 1
    with pytest.raises(StoreError, match='has no point 5; it has 0, 1, 2'):
        find_point(data, 5)
    with pytest.raises(StoreError, match='holds no point yet'):
        find_point(new_manifest(), None)


def test_lock_names_the_holder_and_is_released_by_death(tmp_path):
    script = ('import sys, time\nsys.path.insert(0, %r)\n'
              'from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.lock import store_lock\n'
              'with store_lock(%r, "backup of /vm.qcow2"):\n    print("held", flush=True)\n    time.sleep(60)\n'
              % (sys.path[0], str(tmp_path)))
    proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'held'
        with pytest.raises(StoreError, match=r'busy: a backup of /vm.qcow2 \(pid %d\) started at 20' % proc.pid):
            with store_lock(str(tmp_path), 'verify'):
                pass
    finally:
        proc.kill()
        proc.wait()
    with store_lock(str(tmp_path), 'verify'):  # a SIGKILLed holder leaves no stale lock
        pass


@pytest.mark.parametrize('keep,keep_days,expected', [
    (None, None, []),
    (3, None, [('merge', 1, [0, 1]), ('merge', 1, [1, 2]), ('merge', 1, [2, 3])]),
    (10, None, []),
    (None, 97.5, [('merge', 1, [0, 1]), ('merge', 1, [1, 2]), ('merge', 1, [2, 3])]),  # points 0-2: 98-100 days old
    (1, 98.5, [('merge', 1, [0, 1]), ('merge', 1, [1, 2])]),  # kept by either rule: 2 (98 days) to 5
])
def test_retention_merges_the_oldest_points(keep, keep_days, expected):
    steps = plan(_manifest([0, 1, 2, 3, 4, 5]), keep, keep_days, NOW)
    assert [(s.action, s.chain, s.points) for s in steps] == expected


def test_retention_drops_old_chains_whole_and_keeps_the_latest_and_pinned_points():
    steps = plan(_manifest([0, 1, 2], [3, 4]), 1, None, NOW)
    assert [(s.action, s.points) for s in steps] == [('drop_chain', [0, 1, 2]), ('merge', [3, 4])]
    # an instant restore reads through its chain, which a merge would write: that chain stays whole
    for pin in (0, 1, 2):
        steps = plan(_manifest([0, 1, 2], [3, 4], pins=[pin]), 1, None, NOW)
        assert [(s.action, s.points) for s in steps] == [('merge', [3, 4])]
    assert plan(_manifest([0]), 1, 0, NOW) == []  # the latest point stays whatever the rules say


def test_retention_never_merges_a_damaged_chain():
    data = _manifest([0, 1, 2, 3], [4])
    assert [(s.action, s.points) for s in plan(data, 3, None, NOW)] == [('merge', [0, 1]), ('merge', [1, 2])]
    data['chains'][0]['damaged'] = [1, 2, 3]
    assert plan(data, 3, None, NOW) == []  # 2 and 3 are kept, and the damaged chain is not merged
    assert [(s.action, s.points) for s in plan(data, 1, None, NOW)] == [('drop_chain', [0, 1, 2, 3])]


def _written_record(block, writes):
    """A WriteRecord as the engine fills it: (offset, data or a length for a change without data)."""
    record = api.WriteRecord((0, 0), block)
    for offset, data in writes:
        if isinstance(data, int):
            record.wrote(offset, data, None)
        else:
            job = record.wrote(offset, len(data), [memoryview(data)])
            if job is not None:
                run_hash_job(job)  # what the writing thread does once the write is issued
    return record


def _apply(path, writes):
    with open(path, 'r+b') as f:
        for offset, data in writes:
            f.seek(offset)
            f.write(bytes(data) if isinstance(data, int) else data)


def test_format_1_part_digests_rehash_only_what_changed(tmp_path):
    path = tmp_path / 'layer'
    path.write_bytes(bytes(range(256)) * 1000)  # 256000 bytes: 4 parts of 65536, the last shorter
    hashing = Hashing(65536, None)
    known = seal(str(path), hashing)
    assert len(known) == 4 and not os.path.exists(side_path(str(path)))
    writes = [(70000, b'changed'), (256000, b'grown' * 20000)]  # the last part grows, and new parts follow
    _apply(path, writes)
    updated = reseal(str(path), hashing, known, _written_record(None, writes))
    assert updated == seal(str(path), hashing)
    assert updated[0] == known[0] and updated[1] != known[1] and updated[2] == known[2]
    # a change the caller does not report is not seen: the reason a crashed merge rehashes everything
    _apply(path, [(0, b'unreported')])
    assert reseal(str(path), hashing, updated, _written_record(None, []))[0] == updated[0] != seal(str(path), hashing)[0]
    assert first_difference(str(path), hashing, updated) == 0
    assert first_difference(str(path), hashing, seal(str(path), hashing)) is None


def test_format_2_block_digests_come_from_the_writes_and_the_side_file(tmp_path):
    """Blocks written whole are hashed from the write's buffer, the others' digests come from the side file: a
    change the record does not report is not seen, which shows the file was not read there."""
    path = tmp_path / 'layer'
    path.write_bytes(bytes(range(256)) * 1000)  # 256000 bytes: 63 blocks of 4096 (the last shorter), 4 parts
    hashing = Hashing(4 * 16384, 4096)
    known = seal(str(path), hashing)
    assert len(known) == 4 and os.path.getsize(side_path(str(path))) == 63 * 32
    _apply(path, [(8192, b'unreported')])  # block 2: not in the record below, so its old digest stays
    writes = [(16384, b'\x11' * 8192),  # blocks 4 and 5 whole: hashed from these bytes
              (70000, b'changed'),  # block 17 in part: read again
              (256000, b'grown' * 20000)]  # the last block grows, new blocks and a new part follow
    _apply(path, writes)
    updated = reseal(str(path), hashing, known, _written_record(4096, writes))
    _apply(path, [(8192, bytes(range(10)))])  # undo the unreported change: now the file is what was sealed
    assert updated == seal(str(path), hashing)
    assert updated[0] != known[0] and updated[1] != known[1] and updated[2] == known[2] and len(updated) == 6


def test_format_2_damaged_side_file_is_not_trusted(tmp_path):
    path = tmp_path / 'layer'
    path.write_bytes(bytes(range(256)) * 1000)
    hashing = Hashing(4 * 16384, 4096)
    known = seal(str(path), hashing)
    with open(side_path(str(path)), 'r+b') as f:  # the digest of block 3 (part 0) rots
        f.seek(3 * 32)
        f.write(b'\0' * 32)
    writes = [(0, b'\x22' * 4096)]
    _apply(path, writes)
    resealed = reseal(str(path), hashing, known, _written_record(4096, writes))
    now = seal(str(path), hashing)
    assert resealed == now
    os.unlink(side_path(str(path)))  # a missing one: every block not written is read
    assert reseal(str(path), hashing, now, _written_record(4096, [])) == now


@pytest.mark.parametrize('side', ['kept', 'damaged'])
def test_format_2_verify_names_the_first_damaged_block(tmp_path, side):
    path = tmp_path / 'layer'
    path.write_bytes(bytes(range(256)) * 1000)
    hashing = Hashing(4 * 16384, 4096)
    sealed = seal(str(path), hashing)
    assert first_difference(str(path), hashing, sealed) is None
    _apply(path, [(5 * 16384 + 3 * 4096 + 17, b'!')])  # part 1, its block 3
    if side == 'damaged':
        os.unlink(side_path(str(path)))
    assert first_difference(str(path), hashing, sealed) == (5 * 16384 + 3 * 4096 if side == 'kept' else 4 * 16384)


def test_a_change_after_a_write_wins_over_its_hashing_still_to_come():
    """A write behind is hashed in its worker after later changes may have been issued: those must not be
    overwritten by the older write's digest (the block is read again instead)."""
    from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.fileio import run_hash_job
    record = api.WriteRecord((0, 0), 4096)
    hash_later = record.wrote(0, 3 * 4096, [memoryview(b'\x11' * 3 * 4096)])
    assert record.digests == {0: None, 1: None, 2: None}  # nothing is known before the hashing ran
    record.wrote(4096 + 10, 5, None)  # block 1 changes again, in part
    hash_now = record.wrote(2 * 4096, 4096, [memoryview(b'\x22' * 4096)])  # block 2 is written again
    run_hash_job(hash_now)
    run_hash_job(hash_later)
    assert record.digests[0] == hashlib.sha256(b'\x11' * 4096).digest()
    assert record.digests[1] is None
    assert record.digests[2] == hashlib.sha256(b'\x22' * 4096).digest()
