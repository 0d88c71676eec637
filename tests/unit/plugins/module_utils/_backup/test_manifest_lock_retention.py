# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The store's manifest (atomic replacement), its lock (a clear error naming the holder) and retention's choices."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import manifest as manifest_mod
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.layer import part_digests
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.lock import store_lock
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


def test_part_digests_rehash_only_what_changed(tmp_path):
    path = tmp_path / 'layer'
    path.write_bytes(bytes(range(256)) * 1000)  # 256000 bytes: 4 parts of 65536, the last shorter
    known = part_digests(str(path), 65536)
    assert len(known) == 4
    with open(path, 'r+b') as f:
        f.seek(70000)
        f.write(b'changed')
        f.seek(0, 2)
        f.write(b'grown' * 20000)  # the last part grows, and new parts follow
    updated = part_digests(str(path), 65536, known, [(70000, 7), (256000, 100000)])
    assert updated == part_digests(str(path), 65536)
    assert updated[0] == known[0] and updated[1] != known[1] and updated[2] == known[2]
    # a change the caller does not report is not seen: the reason a crashed merge rehashes everything
    with open(path, 'r+b') as f:
        f.write(b'unreported')
    assert part_digests(str(path), 65536, updated, [])[0] == updated[0] != part_digests(str(path), 65536)[0]
