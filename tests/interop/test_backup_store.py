"""The backup store on real images: points, every fallback to a full, bitmap rotation, restore, verify, retention.

The source is written with qemu-io (which keeps the store's enabled bitmaps true, as a VM would); every
restored point is compared with qemu-img against a copy of the source taken when the point was.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import backup, digests, restore, verify
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.lock import store_lock
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import StoreError, load, new_manifest, save
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.backup_store import (
    assert_store_sound,
    keep_view,
    sealed_layers,
)
from ansible_collections.backingchain.qcow2.tests.helpers.chains import MiB
from ansible_collections.backingchain.qcow2.tests.helpers.qcow2_poke import header_extensions, write_bytes
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    backing_chain,
    qemu_compare,
    qemu_img,
    qemu_img_check,
    qemu_img_create,
    qemu_img_json,
    qemu_io,
    qemu_io_holding,
)


@pytest.fixture
def disk(tmp_path):
    source = qemu_img_create(tmp_path / 'disk.qcow2', 16 * MiB)
    qemu_io(source, 'write -P 0x11 0 2M', 'write -P 0x12 8M 1M')
    return source


class Store:
    """A store of the disk, with a copy of the source kept for every point taken."""

    def __init__(self, tmp_path, source):
        self.path = tmp_path / 'store'
        self.source = source
        self.views = {}
        self.scratch = tmp_path / 'views'
        self.scratch.mkdir()

    def request(self, **kwargs):
        return backup.Request(str(self.path), str(self.source), **kwargs)

    def point(self, **kwargs):
        view = keep_view(self.source, self.scratch, 'view-%d.qcow2' % len(self.views))
        result = backup.run_backup(self.request(**kwargs))
        self.views[result['point']['seq']] = view
        return result

    def manifest(self):
        return load(str(self.path))

    def sound(self):
        return assert_store_sound(self.path, self.views, self.scratch)


@pytest.fixture
def store(tmp_path, disk):
    return Store(tmp_path, disk)


def bitmap_names(path):
    info = qemu_img_json('info', '-U', path)
    return [b['name'] for b in info.get('format-specific', {}).get('data', {}).get('bitmaps', [])]


def test_full_then_increments_restore_every_point(store):
    first = store.point()
    assert (first['level'], first['reason']) == ('full', 'the store holds no chain yet')
    qemu_io(store.source, 'write -P 0x21 1M 64k', 'write -z 8M 128k', 'discard 0 64k')
    second = store.point()
    assert second['level'] == 'incremental'
    assert second['point']['bytes_copied'] < 512 * 1024  # the changes, not the disk
    qemu_io(store.source, 'write -P 0x22 15M 1M')
    store.point()
    layers = sealed_layers(store.path)
    top = layers[2]
    # the chain as qemu sees it: relative names, qcow2 below each increment
    chain = [(os.path.basename(name), fmt) for name, fmt in backing_chain(top)]
    assert chain == [('0002.qcow2', 'qcow2'), ('0001.qcow2', 'qcow2'), ('0000.qcow2', 'qcow2')]
    assert qemu_img_json('info', top)['backing-filename'] == '0001.qcow2'
    assert store.sound() == 3


def test_a_second_run_with_no_change_makes_a_tiny_point(store):
    store.point()
    second = store.point()
    assert second['level'] == 'incremental'
    assert second['point']['bytes_copied'] == 0
    assert second['point']['file_bytes'] < MiB
    store.sound()


def test_plan_predicts_the_run(store):
    plan = backup.plan_backup(store.request())
    assert (plan.level, plan.seq) == ('full', 0)
    assert not os.path.exists(store.path)  # a plan writes nothing, not even the store directory
    store.point()
    qemu_io(store.source, 'write -P 0x31 3M 256k', 'write -z 8M 128k', 'write -P 0 12M 64k')
    plan = backup.plan_backup(store.request())
    result = store.point()
    assert (plan.level, plan.reason, plan.seq) == (result['level'], result['reason'], result['point']['seq'])
    assert plan.bytes_to_copy == result['point']['bytes_copied'] == (256 + 128 + 64) * 1024


def test_bitmaps_rotate_and_foreign_ones_stay(store):
    qemu_img('bitmap', '--add', store.source, 'someone-elses')
    store.point()
    manifest = store.manifest()
    for _point in range(3):
        qemu_io(store.source, 'write -P 0x41 4M 64k')
        store.point()
    latest = store.manifest()['chains'][-1]['points'][-1]['bitmap']
    assert sorted(bitmap_names(store.source)) == sorted(['someone-elses', latest])
    assert latest.startswith('bcq-backup-%s-' % manifest['store_id'])
    # another store of the same disk keeps its own bitmaps
    other = backup.run_backup(backup.Request(str(store.path) + '-other', str(store.source)))
    store.point()
    assert other['point']['bitmap'] in bitmap_names(store.source)
    assert qemu_img_check(store.source).clean


def test_stale_bitmap_of_a_killed_run_is_removed(store):
    store.point()
    manifest = store.manifest()
    stale = 'bcq-backup-%s-%d' % (manifest['store_id'], manifest['next_seq'])
    qemu_img('bitmap', '--add', store.source, stale)  # what a run killed before sealing its point leaves
    result = store.point()
    assert result['level'] == 'incremental'
    assert stale in result['bitmaps_removed'] or stale == result['point']['bitmap']
    assert bitmap_names(store.source) == [result['point']['bitmap']]


def _fallback(store, change, reason, **kwargs):
    store.point()
    qemu_io(store.source, 'write -P 0x51 6M 64k')
    change()
    plan = backup.plan_backup(store.request(**kwargs))
    assert plan.level == 'full' and reason in plan.reason, plan
    with pytest.raises(StoreError, match='cannot be taken: .*' + reason):
        backup.run_backup(store.request(level='incremental', **kwargs))
    result = store.point(**kwargs)
    assert result['level'] == 'full' and reason in result['reason']
    assert result['point']['reason'] == result['reason']
    assert len(store.manifest()['chains']) == 2  # a new chain; the old one stays restorable
    store.sound()
    return result


def test_fallback_bitmap_missing(store):
    _fallback(store, lambda: qemu_img('bitmap', '--remove', store.source, _tracking(store)), 'is missing')


def test_fallback_bitmap_disabled(store):
    _fallback(store, lambda: qemu_img('bitmap', '--disable', store.source, _tracking(store)), 'not auto')


def test_fallback_bitmap_in_use(store):
    def crash_with_bitmap_open():
        # qemu-io killed while it holds the image writable leaves the bitmap flagged in use
        proc = subprocess.Popen(['qemu-io', '-c', 'write -P 0x52 7M 64k', '-c', 'sigraise 9', str(store.source)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.wait()
    _fallback(store, crash_with_bitmap_open, 'left in use')
    assert [b for b in bitmap_names(store.source) if b == _tracking(store)]  # only the new point's bitmap
    assert len(bitmap_names(store.source)) == 1


def test_fallback_source_shrank(store):
    _fallback(store, lambda: qemu_img('resize', '--shrink', store.source, str(12 * MiB)), 'shrank')


def test_fallback_source_replaced(store):
    def replace():
        copy = str(store.source) + '.new'
        subprocess.run(['cp', str(store.source), copy], check=True)
        os.replace(copy, store.source)
    _fallback(store, replace, 'replaced by another file')


def test_fallback_source_path_changed(store, tmp_path):
    store.point()
    moved = tmp_path / 'moved.qcow2'
    os.rename(store.source, moved)
    store.source = moved
    result = store.point()
    assert result['level'] == 'full' and 'the source is now' in result['reason']


def test_fallback_chain_length(store):
    store.point(max_chain_length=2)
    assert store.point(max_chain_length=2)['level'] == 'incremental'
    result = store.point(max_chain_length=2)
    assert result['level'] == 'full' and 'max_chain_length (2 points)' in result['reason']


def test_fallback_after_a_failed_verify_of_a_bit_flipped_layer(store):
    store.point()
    qemu_io(store.source, 'write -P 0x61 2M 1M')
    store.point()
    qemu_io(store.source, 'write -P 0x62 3M 64k')
    store.point()
    layers = sealed_layers(store.path)
    with open(layers[1], 'r+b') as f:  # one bit of point 1's data
        f.seek(os.path.getsize(layers[1]) - 4096)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))
    report = verify.verify(str(store.path))
    assert not report['ok']
    assert report['bad_points'] == [1, 2]  # point 2 reads through the flipped layer
    assert 'sha256 differs' in report['problems'][0]
    result = store.point()
    assert result['level'] == 'full' and 'the last verify' in result['reason']
    assert verify.verify(str(store.path))['bad_points'] == [1, 2]  # the old chain stays flagged
    assert store.manifest()['chains'][0]['damaged'] == [1, 2]
    assert backup.retain(str(store.path), keep=2) == []  # point 2 is kept, and its damaged chain is never merged
    assert [s.action for s in backup.retain(str(store.path), keep=1)] == ['drop_chain']


def test_verify_quick_full_and_audit_on_a_sound_store(store):
    store.point()
    qemu_io(store.source, 'write -P 0x71 5M 1M')
    store.point()
    for level in ('quick', 'full'):
        report = verify.verify(str(store.path), level)
        assert report['ok'] and not report['problems'], report
    assert verify.verify(str(store.path), 'full', point=0)['ok']
    with pytest.raises(StoreError, match='has no point 5'):
        verify.verify(str(store.path), 'full', point=5)
    audit = verify.verify(str(store.path), 'audit', str(store.source))
    assert audit['ok'] and audit['audited'] == 1
    assert store.manifest()['last_verify']['level'] == 'audit'


def test_audit_flags_a_write_the_tracking_missed(store):
    store.point()
    qemu_io(store.source, 'write -P 0x72 9M 64k')
    qemu_img('bitmap', '--clear', store.source, _tracking(store))  # the write is not recorded
    report = verify.verify(str(store.path), 'audit', str(store.source))
    assert not report['ok'] and 'writes were missed' in report['problems'][0]
    assert backup.plan_backup(store.request()).level == 'full'


def test_audit_compares_nothing_while_the_source_has_changes(store):
    store.point()
    qemu_io(store.source, 'write -P 0x73 9M 64k')
    report = verify.verify(str(store.path), 'audit', str(store.source))
    assert report['ok'] and report['audited'] is None


def test_grown_source_gets_a_larger_layer(store):
    store.point()
    qemu_img('resize', store.source, str(24 * MiB))
    qemu_io(store.source, 'write -P 0x81 20M 1M', 'write -P 0x82 1M 4k')
    result = store.point()
    assert result['level'] == 'incremental' and result['point']['virtual_size'] == 24 * MiB
    assert qemu_img_json('info', sealed_layers(store.path)[1])['virtual-size'] == 24 * MiB
    store.sound()


def test_restore_full_raw_and_instant(store, tmp_path):
    store.point()
    qemu_io(store.source, 'write -P 0x91 1M 1M')
    store.point()
    qemu_io(store.source, 'write -P 0x92 2M 1M')
    store.point()
    raw = tmp_path / 'middle.raw'
    restore.restore(str(store.path), str(raw), 1, fmt='raw')
    assert qemu_compare(raw, store.views[1], fmt_a='raw')
    overlay = tmp_path / 'instant.qcow2'
    restore.restore(str(store.path), str(overlay), 1, mode='instant')
    assert qemu_compare(overlay, store.views[1])
    assert store.manifest()['pins'][0]['point'] == 1
    # retention may not merge the pinned point away
    steps = backup.retain(str(store.path), keep=1)
    assert [s.points for s in steps] == []
    qemu_io(overlay, 'write -P 0x93 0 64k')  # the restored VM writes into its overlay only
    assert store.sound() == 3
    os.unlink(overlay)
    steps = backup.retain(str(store.path), keep=1)  # the pin is released with its overlay
    assert [s.points for s in steps] == [[0, 1], [1, 2]]
    assert store.manifest()['pins'] == []
    assert store.sound() == 1


def test_restore_refuses_unknown_points_and_stores(store, tmp_path):
    with pytest.raises(StoreError, match='not a backup store'):
        restore.restore(str(tmp_path / 'store'), str(tmp_path / 'x.qcow2'))
    store.point()
    with pytest.raises(api.InvalidArgumentError, match='outside the backup store'):
        restore.restore(str(store.path), str(store.path / 'chain-0001' / 'x.qcow2'))
    with pytest.raises(StoreError, match='has no point 7; it has 0'):
        restore.restore(str(store.path), str(tmp_path / 'x.qcow2'), 7)


def test_retention_by_count_merges_into_the_full(store):
    for i in range(5):
        qemu_io(store.source, 'write -P 0x%x %dM 512k' % (0xa0 + i, i * 2))
        result = store.point(keep=3)
    assert [s['points'] for s in result['retention']] == [[1, 2]]
    points = store.manifest()['chains'][0]['points']
    assert [p['seq'] for p in points] == [2, 3, 4]
    assert points[0]['file'] == '0000.qcow2' and points[0]['merged'] == [0, 1] and points[0]['level'] == 'full'
    assert backing_chain(sealed_layers(store.path)[3])[1][0].endswith('0000.qcow2')
    assert store.sound() == 3
    assert verify.verify(str(store.path))['ok']  # the re-pointed layer's new sha256 is sealed too


def _compressed_clusters(layer):
    return qemu_img_check(layer).report.get('compressed-clusters', 0)


def test_a_compressed_store_restores_every_point_and_merges_plain(store):
    """compress=True: the full's and the increments' data clusters are compressed (qemu-img counts them), bytes_copied
    still counts guest bytes (as the plan predicts them); a merge folds an increment into the full in plain clusters,
    as qemu-img commit does; plain and compressed layers mix in one chain, and every point restores as it was."""
    qemu_io(store.source, 'write -P 0x13 4M 2M')
    first = store.point(compress=True)
    assert first['point']['compressed'] and first['level'] == 'full'
    full = sealed_layers(store.path)[0]
    assert _compressed_clusters(full) == (2 + 1 + 2) * 16  # every data cluster of the disk: 0-2M, 8-9M, 4-6M
    assert first['point']['bytes_copied'] == 5 * MiB  # guest bytes, as for a plain full
    assert first['point']['file_bytes'] < MiB
    qemu_io(store.source, 'write -P 0xc1 1M 256k', 'write -z 8M 128k', 'write -P 0xc2 12M 64k')
    plan = backup.plan_backup(store.request(compress=True))
    second = store.point(compress=True)
    assert second['level'] == 'incremental' and second['point']['compressed']
    assert plan.bytes_to_copy == second['point']['bytes_copied'] == (256 + 128 + 64) * 1024
    assert _compressed_clusters(sealed_layers(store.path)[1]) == 4 + 1  # the zeroed 128k is two zero clusters
    qemu_io(store.source, 'write -P 0xc3 3M 512k')
    third = store.point()  # plain, over compressed layers
    assert not third['point']['compressed'] and _compressed_clusters(sealed_layers(store.path)[2]) == 0
    assert store.sound() == 3
    qemu_io(store.source, 'write -P 0xc4 14M 64k')
    result = store.point(compress=True, keep=2)
    assert [s['points'] for s in result['retention']] == [[0, 1], [1, 2]]
    merged = sealed_layers(store.path)[2]
    assert merged.endswith('0000.qcow2')
    # point 1's 4 data clusters at 1M and 2 zeroed ones at 8M replaced compressed ones of the full; the rest was unallocated
    assert _compressed_clusters(merged) == 80 - 4 - 2
    assert store.sound() == 2
    assert verify.verify(str(store.path), 'full')['ok']


def test_retention_by_age_drops_an_old_chain_whole(store):
    old = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    backup.run_backup(store.request(), now=old)
    backup.run_backup(store.request(), now=old)
    result = backup.run_backup(store.request(level='full', keep_days=30))
    assert [s['action'] for s in result['retention']] == ['drop_chain']
    assert [c['id'] for c in store.manifest()['chains']] == [2]
    assert not os.path.exists(store.path / 'chain-0001')


def test_two_runs_at_once_get_a_clear_error(store):
    store.point()
    before = sorted(p.name for p in (store.path / 'chain-0001').iterdir())
    with store_lock(str(store.path), 'backup of somewhere'):
        with pytest.raises(StoreError, match=r'is busy: a backup of somewhere \(pid %d\) started at ' % os.getpid()):
            backup.run_backup(store.request())
        with pytest.raises(StoreError, match='is busy'):
            verify.verify(str(store.path))
    assert sorted(p.name for p in (store.path / 'chain-0001').iterdir()) == before
    assert store.point()['level'] == 'incremental'


def test_a_store_with_a_damaged_manifest_is_refused(store):
    store.point()
    (store.path / 'manifest.json').write_text('{"format": 1, "chains": [')
    with pytest.raises(StoreError, match='cannot be read as JSON'):
        backup.run_backup(store.request())


def test_unsealed_leftovers_are_removed(store):
    store.point()
    chain_dir = store.path / 'chain-0001'
    (chain_dir / '0001.qcow2').write_bytes(b'half a layer')
    (chain_dir / '.0001.qcow2.abc.tmp').write_bytes(b'x')
    (store.path / 'chain-0009').mkdir()
    result = store.point()
    assert len(result['recovered']) == 3
    store.sound()


def test_raw_and_v2_sources(tmp_path):
    raw = tmp_path / 'disk.raw'
    qemu_img_create(raw, 4 * MiB, fmt='raw')
    with pytest.raises(api.NotQcow2Error):
        backup.plan_backup(backup.Request(str(tmp_path / 's'), str(raw)))
    v2 = qemu_img_create(tmp_path / 'v2.qcow2', 4 * MiB, options={'compat': '0.10'})
    request = backup.Request(str(tmp_path / 's2'), str(v2))
    backup.run_backup(request)
    second = backup.run_backup(request)
    assert second['level'] == 'full' and 'cannot hold dirty bitmaps' in second['reason']
    assert json.loads(json.dumps(load(str(tmp_path / 's2'))))['chains'][1]['points'][0]['bitmap'] is None


def _tracking(store):
    return store.manifest()['chains'][-1]['points'][-1]['bitmap']


def test_a_running_vm_holding_the_source_is_refused_in_check_mode_and_run(store):
    store.point()
    with qemu_io_holding(store.source):
        with pytest.raises(api.ImageLockedError, match='lock'):
            backup.plan_backup(store.request())
        with pytest.raises(api.ImageLockedError, match='lock'):
            backup.run_backup(store.request())
    assert store.manifest()['next_seq'] == 1
    assert store.point()['level'] == 'incremental'


def test_a_hostile_bitmap_directory_is_refused_and_never_written(store):
    store.point()
    position = next(p for p, t, _l in header_extensions(store.source) if t == 0x23852875)
    write_bytes(store.source, position + 8, (3).to_bytes(4, 'big'))  # more bitmaps than the directory holds
    before = store.source.read_bytes()
    for attempt in (lambda: backup.plan_backup(store.request()), lambda: backup.run_backup(store.request())):
        with pytest.raises(api.Qcow2Error, match='Less bitmaps found than specified'):
            attempt()
    assert store.source.read_bytes() == before
    assert store.manifest()['next_seq'] == 1
    assert store.sound() == 1


def _flip_a_bit(path, offset):
    with open(path, 'r+b') as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def test_verify_names_the_damaged_block(store):
    store.point()
    layer = sealed_layers(store.path)[0]
    offset = os.path.getsize(layer) - 4096 - 7
    _flip_a_bit(layer, offset)
    report = verify.verify(str(store.path))
    assert 'from byte %d of the file' % (offset // 65536 * 65536) in report['problems'][0]


def test_a_format_1_store_still_verifies_backs_up_and_merges(store):
    """A store written before block digests (format 1: the sha256 of each part's bytes, no side files) keeps
    working as it is: verify, new points and merges use its own digests."""
    os.makedirs(store.path)
    old = new_manifest(hash_part=65536)
    old['format'] = 1
    del old['hash_block']
    save(str(store.path), old)
    for i in range(4):
        qemu_io(store.source, 'write -P 0x%x %dM 512k' % (0xb0 + i, i * 3))
        result = store.point(keep=3)
    assert [s['points'] for s in result['retention']] == [[0, 1]]
    manifest = store.manifest()
    assert manifest['format'] == 1 and 'hash_block' not in manifest
    assert not [name for name in os.listdir(store.path / 'chain-0001') if name.endswith('.sha256')]
    assert store.sound() == 3
    assert verify.verify(str(store.path))['ok']
    layer = sealed_layers(store.path)[2]
    _flip_a_bit(layer, os.path.getsize(layer) - 100)
    report = verify.verify(str(store.path))
    assert report['bad_points'] == [2, 3]
    assert 'from byte %d of the file' % ((os.path.getsize(layer) - 100) // 65536 * 65536) in report['problems'][0]


def _data_offsets(layer):
    """File offsets of the layer's own data clusters (qemu-img map)."""
    return [e['offset'] for e in qemu_img_json('map', '--output=json', '-U', layer)
            if e.get('data') and e.get('depth') == 0 and 'offset' in e]


def _merge_counting_hashed_blocks(store, monkeypatch):
    """Retention that merges point 1 into the full; how many blocks the merge read back and hashed."""
    hashed = []
    real = digests._hash_blocks

    def counting(path, block, indexes):
        out = real(path, block, indexes)
        hashed.extend(out)
        return out

    monkeypatch.setattr(digests, '_hash_blocks', counting)
    result = store.point(keep=2)
    monkeypatch.undo()
    assert [s['points'] for s in result['retention']] == [[0, 1]]
    return len(hashed)


def test_a_merge_takes_the_digests_of_copied_blocks_from_the_increment(store, monkeypatch):
    """The blocks the merge's commit copies whole from the increment get the increment's sealed digests: only the
    full's metadata blocks the commit changed in part are read back; the result verifies, block by block."""
    store.point()
    qemu_io(store.source, *('write -P 0x%x %dM 64k' % (0x40 + i, i) for i in range(12)))
    store.point()
    increment = sealed_layers(store.path)[1]
    copied = len(_data_offsets(increment))
    assert copied >= 12
    qemu_io(store.source, 'write -P 0x77 14M 64k')
    hashed = _merge_counting_hashed_blocks(store, monkeypatch)
    assert hashed < 12  # header, L2 and refcount blocks, never the 12 data clusters
    full = sealed_layers(store.path)[1]
    assert qemu_img_check(full)[0] == 0
    report = verify.verify(str(store.path), 'full')
    assert report['ok'], report
    assert store.sound() == 2


def test_a_bit_flip_in_the_increment_before_its_merge_is_caught_in_the_full(store, monkeypatch):
    """The merged full's digests of the copied blocks are what the increment's seal vouched for, not a hash of what
    was read: rot in the increment since its seal is not sealed as good into the full."""
    store.point()
    qemu_io(store.source, 'write -P 0x51 3M 64k', 'write -P 0x52 9M 64k')
    store.point()
    increment = sealed_layers(store.path)[1]
    offset = _data_offsets(increment)[0] + 1000
    _flip_a_bit(increment, offset)
    qemu_io(store.source, 'write -P 0x77 14M 64k')
    _merge_counting_hashed_blocks(store, monkeypatch)
    report = verify.verify(str(store.path))
    assert not report['ok'] and 1 in report['bad_points'], report


def test_a_merge_hashes_what_the_increment_side_file_does_not_vouch_for(store, monkeypatch):
    """An increment whose side file no longer matches its seal gives no digests: the merge reads back and hashes
    the blocks it copied, and the full still verifies."""
    store.point()
    qemu_io(store.source, *('write -P 0x%x %dM 64k' % (0x60 + i, i) for i in range(12)))
    store.point()
    side = digests.side_path(sealed_layers(store.path)[1])
    _flip_a_bit(side, 40)
    qemu_io(store.source, 'write -P 0x77 14M 64k')
    hashed = _merge_counting_hashed_blocks(store, monkeypatch)
    assert hashed >= 12
    report = verify.verify(str(store.path), 'full')
    assert report['ok'], report
    assert store.sound() == 2
