"""A randomized model of a backup store's life: a disk written, zeroed, discarded and grown between points;
points taken at every level, some with compressed layers; retention merging at random; backups and merges
SIGKILLed at random steps.

The model is the list of copies of the source, one per point taken. After every step each point the manifest
lists as sealed must read as its copy (qemu-img, and the engine directly), every layer must be clean under
qemu-img check; at the end, and every few points, each sealed point is also restored by the engine and
compared. Seeded and reproducible: BACKUP_MODEL_SEED and BACKUP_MODEL_POINTS give a longer or other run
(scripts: BACKUP_MODEL_POINTS=500 pytest tests/interop/test_backup_model.py).
"""

from __future__ import annotations

import json
import os
import random

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import backup, verify
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import all_points, load, new_manifest, save
from ansible_collections.backingchain.qcow2.tests.helpers.backup_store import (
    assert_store_sound,
    keep_view,
    run_store_op,
)
from ansible_collections.backingchain.qcow2.tests.helpers.chains import MiB
from ansible_collections.backingchain.qcow2.tests.helpers.crash import KILLED
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    qemu_img,
    qemu_img_check,
    qemu_img_create,
    qemu_img_json,
    qemu_io_script,
)

SEED = int(os.environ.get('BACKUP_MODEL_SEED') or 20261206)
POINTS = int(os.environ.get('BACKUP_MODEL_POINTS') or 55)
FULL_CHECK_EVERY = 15


def _workload(rng, size):
    cmds = []
    for _op in range(rng.randint(0, 5)):
        length = rng.choice([rng.randint(1, 4096), rng.randint(1, 192 * 1024), 64 * 1024])
        offset = rng.randrange(0, size - length + 1)
        if rng.random() < 0.4:
            offset -= offset % 65536
        roll = rng.random()
        if roll < 0.6:
            cmds.append('write -P 0x%02x %d %d' % (rng.randint(1, 255), offset, length))
        elif roll < 0.8:
            cmds.append('write -z %d %d' % (offset, length))
        else:
            offset -= offset % 512
            cmds.append('discard %d %d' % (offset, max(512, length - length % 512)))
    return cmds


def _own_bitmaps(source, manifest):
    info = qemu_img_json('info', '-U', source)
    names = [b['name'] for b in info['format-specific']['data'].get('bitmaps', [])]
    return [n for n in names if n.startswith('bcq-backup-%s-' % manifest['store_id'])]


def test_random_life_of_a_store(tmp_path, record_property):
    rng = random.Random(SEED)
    compressing = random.Random(SEED + 1)  # which points are compressed, apart: the rest of the life stays as it was
    source = qemu_img_create(tmp_path / 'disk.qcow2', 4 * MiB)
    store = tmp_path / 'store'
    store.mkdir()
    # layers hashed in 64 KiB parts: a merge rehashes only the parts it wrote, and every verify below recomputes
    # them all, so a write the recording missed would show
    save(str(store), new_manifest(hash_part=65536))
    views = {}
    counts = {'points': 0, 'killed_backups': 0, 'killed_merges': 0, 'merges': 0, 'fulls': 0, 'grows': 0, 'steps': 0,
              'compressed': 0}
    size = 4 * MiB
    while True:
        manifest = load(str(store))
        if manifest and manifest['next_seq'] >= POINTS:
            break
        counts['steps'] += 1
        if rng.random() < 0.04 and size < 12 * MiB:
            size += rng.choice([512 * 1024, MiB, 3 * MiB])
            qemu_img('resize', source, str(size))
            counts['grows'] += 1
        cmds = _workload(rng, size)
        if cmds:
            qemu_io_script(source, cmds)
        view = keep_view(source, tmp_path, 'view-%d.qcow2' % counts['steps'])
        keep = rng.choice([None, None, 2, 3, 5, 8])
        compress = compressing.random() < 0.3
        roll = rng.random()
        if roll < 0.15:
            args = {'store': str(store), 'source': str(source), 'keep': keep, 'max_chain_length': 10,
                    'compress': compress}
            proc = run_store_op('backup', args, crash_at=rng.randint(1, 80))
            assert proc.returncode in (0, KILLED), proc.stderr
            counts['killed_backups'] += proc.returncode == KILLED
        elif roll < 0.25 and manifest:
            proc = run_store_op('retain', {'store': str(store), 'keep': rng.randint(1, 2)}, crash_at=rng.randint(1, 40))
            assert proc.returncode in (0, KILLED), proc.stderr
            counts['killed_merges'] += proc.returncode == KILLED
        else:
            level = 'full' if rng.random() < 0.05 else 'auto'
            result = backup.run_backup(backup.Request(str(store), str(source), level=level, keep=keep,
                                                      max_chain_length=10, compress=compress))
            counts['compressed'] += result['point']['compressed']
            counts['fulls'] += result['level'] == 'full'
            counts['merges'] += sum(step['action'] == 'merge' for step in result['retention'])
            manifest = load(str(store))
            assert _own_bitmaps(source, manifest) == [result['point']['bitmap']]
        manifest = load(str(store))
        for _chain, point in all_points(manifest) if manifest else ():
            views.setdefault(point['seq'], view)
        full_check = counts['steps'] % FULL_CHECK_EVERY == 0
        assert_store_sound(store, views, tmp_path, engine_restore=full_check, only_sealed=False, leaks_ok=True)
        if full_check:
            assert verify.verify(str(store))['problems'] == []
        assert qemu_img_check(source).report.get('corruptions', 0) == 0
    result = backup.run_backup(backup.Request(str(store), str(source), keep=6))
    views[result['point']['seq']] = keep_view(source, tmp_path, 'view-last.qcow2')
    counts['points'] = load(str(store))['next_seq']
    assert assert_store_sound(store, views, tmp_path) >= 1
    assert verify.verify(str(store), 'full')['ok']
    assert _own_bitmaps(source, load(str(store))) == [result['point']['bitmap']]
    record_property('interop_figures', ('backup model (seed %d)' % SEED, counts))
    print(json.dumps(counts))
