"""check and repair on images with injected faults (the engine alone; qemu agreement is in tests/interop)."""

from __future__ import annotations

import os
from array import array

import pytest
from hypothesis import given, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import (
    check, create_image, create_snapshot, list_snapshots, revert_snapshot)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import FormatError, ReadOnlyError
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.refcount.references import used_l2_indexes
from ansible_collections.backingchain.qcow2.tests.helpers import qcow2_poke as poke
from ansible_collections.backingchain.qcow2.tests.helpers.limits import time_limit

CS = 65536
MiB = 1 << 20


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / 'a.qcow2')
    create_image(path, CreateOptions(size=8 * MiB))
    with open_chain(path, writable=True) as chain:
        chain.top.write(0, b'\x01' * (4 * CS))
        chain.top.write(MiB, b'\x02' * CS)
    return path


def content(path):
    with open_chain(path) as chain:
        return bytes(chain.top.read(0, chain.top.size))


def add_leaked_clusters(path, count):
    first = poke.file_clusters(path)
    with open(path, 'ab') as f:
        f.write(bytes(count * CS))
    for cluster in range(first, first + count):
        poke.set_refcount(path, cluster, 1)
    return first


def test_clean_image_report(image):
    result = check(image)
    assert result['exit_code'] == 0
    assert result['result'] == {'image-end-offset': os.path.getsize(image), 'total-clusters': 128, 'check-errors': 0,
                                'allocated-clusters': 5, 'filename': image, 'format': 'qcow2'}


def test_leaks_then_repair_leaks(image):
    before = content(image)
    first = add_leaked_clusters(image, 3)

    result = check(image)
    assert result['exit_code'] == 3 and result['result']['leaks'] == 3
    assert 'Leaked cluster %d refcount=1 reference=0' % first in result['messages']

    repaired = check(image, repair='leaks')
    assert repaired['exit_code'] == 0 and repaired['result']['leaks-fixed'] == 3
    assert check(image)['exit_code'] == 0
    assert content(image) == before


def test_refcount_below_references_is_a_corruption_and_repair_all_fixes_it(image):
    before = content(image)
    data = poke.host_cluster(image, 0)
    poke.set_refcount(image, data, 0)

    result = check(image)
    assert result['exit_code'] == 2 and result['result']['corruptions'] == 2
    assert 'ERROR cluster %d refcount=0 reference=1' % data in result['messages']
    assert any(m.startswith('ERROR OFLAG_COPIED data cluster') for m in result['messages'])

    assert check(image, repair='leaks')['exit_code'] == 2  # leaks mode leaves errors alone
    assert check(image, repair='all')['exit_code'] == 0
    assert check(image)['exit_code'] == 0
    assert content(image) == before


def test_wrong_copied_flag(image):
    poke.set_l2_entry(image, MiB, poke.l2_entry(image, MiB) & ~poke.OFLAG_COPIED)
    result = check(image)
    assert result['exit_code'] == 2 and result['result']['corruptions'] == 1
    assert check(image, repair='all')['exit_code'] == 0
    assert poke.l2_entry(image, MiB) & poke.OFLAG_COPIED


def test_broken_refcount_table_entry(image):
    before = content(image)
    poke.set_reftable_entry(image, 0, poke.reftable_entry(image, 0) | 1)  # reserved bit
    result = check(image)
    assert result['exit_code'] == 2
    assert 'ERROR refcount table entry 0 has reserved bits set' in result['messages']
    assert check(image, repair='all')['exit_code'] == 0
    assert content(image) == before


def test_snapshot_shared_clusters_have_refcount_two(image):
    create_snapshot(image, 'snap')
    assert poke.refcount(image, poke.host_cluster(image, 0)) == 2
    assert not poke.l2_entry(image, 0) & poke.OFLAG_COPIED
    assert check(image)['exit_code'] == 0


def test_dirty_image_is_repaired_before_the_first_write(tmp_path):
    path = str(tmp_path / 'lazy.qcow2')
    create_image(path, CreateOptions(size=8 * MiB, lazy_refcounts=True))
    with open_chain(path, writable=True) as chain:
        chain.top.write(0, b'\x03' * CS)
    poke.set_refcount(path, poke.host_cluster(path, 0), 0)  # what a crash with lazy refcounts can leave
    poke.set_header_field(path, 'incompatible_features', C.INCOMPAT_DIRTY)
    assert check(path)['exit_code'] == 2

    with open_chain(path, writable=True) as chain:
        chain.top.write(CS, b'\x04' * CS)

    assert poke.header(path)['incompatible_features'] & C.INCOMPAT_DIRTY == 0
    assert check(path)['exit_code'] == 0
    assert content(path)[:2 * CS] == b'\x03' * CS + b'\x04' * CS


def test_corrupt_bit_refuses_writes_until_repaired(image):
    poke.set_header_field(image, 'incompatible_features', C.INCOMPAT_CORRUPT)
    with pytest.raises(ReadOnlyError, match='Image is corrupt; cannot be opened read/write'):
        open_chain(image, writable=True)
    assert check(image, repair='all')['exit_code'] == 0
    assert poke.header(image)['incompatible_features'] == 0
    with open_chain(image, writable=True):
        pass


@pytest.mark.parametrize('repair', ['leaks', 'all'])
def test_repair_of_a_consistent_image_clears_the_corrupt_bit(image, repair):
    """qemu-img check -r marks a consistent image clean and consistent even when there is nothing to fix."""
    poke.set_header_field(image, 'incompatible_features', C.INCOMPAT_CORRUPT | C.INCOMPAT_DIRTY)
    assert check(image, repair=repair)['exit_code'] == 0
    assert poke.header(image)['incompatible_features'] == 0


def test_writable_open_of_a_dirty_but_consistent_image_clears_the_dirty_bit(image):
    poke.set_header_field(image, 'incompatible_features', C.INCOMPAT_DIRTY)
    with open_chain(image, writable=True) as chain:
        chain.top.write(0, b'x')
    assert poke.header(image)['incompatible_features'] == 0


def test_refcount_block_shared_with_other_metadata(image):
    """qemu's check_refblocks: a refcount block must be referenced exactly once."""
    poke.set_reftable_entry(image, 0, poke.header(image)['l1_table_offset'])
    result = check(image)
    assert 'ERROR refcount block 0 refcount=2' in result['messages']
    assert result['exit_code'] == 2


@pytest.mark.parametrize('field, value, message', [
    ('l1_table_offset', 'unaligned', "ERROR snapshot 1 (snap) l1_offset=%#x: L1 table is not cluster aligned; "
                                     "snapshot table entry corrupted"),
    ('l1_size', (32 << 20) // 8 + 1, 'ERROR snapshot 1 (snap) l1_size=0x400001: L1 table is too large; snapshot '
                                     'table entry corrupted'),
])
def test_a_broken_snapshot_entry_is_a_corruption_not_an_unreadable_image(image, field, value, message):
    """qemu reads the table, reports the entry, and still counts everything else (exit 2, not 1)."""
    create_snapshot(image, 'snap')
    entry = poke.header(image)['snapshots_offset']
    if field == 'l1_table_offset':
        value = poke.read_u64(image, entry) + 512
        poke.write_u64(image, entry, value)
        message = message % value
    else:
        with open(image, 'r+b') as f:
            f.seek(entry + 8)
            f.write(value.to_bytes(4, 'big'))

    result = check(image)
    assert result['exit_code'] == 2 and result['result']['check-errors'] == 0
    assert message in result['messages']
    # the image stays usable where qemu's is: listing, reading and writing the active state
    assert [s['name'] for s in list_snapshots(image)] == ['snap']
    with open_chain(image, writable=True) as chain:
        chain.top.write(0, b'still writable')
    # but the broken snapshot cannot be used
    with pytest.raises(FormatError, match='Snapshot L1 table'):
        revert_snapshot(image, 'snap')


def test_unaligned_data_cluster_is_still_counted_like_qemu(image):
    """qemu 7.2 reports the entry and still counts the cluster-sized range it names (two clusters here)."""
    entry = poke.l2_entry(image, MiB)
    poke.set_l2_entry(image, MiB, entry | 0x200)
    result = check(image)
    assert result['messages'][0] == 'ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.' % (
        (entry & poke.OFFSET_MASK) | 0x200)
    next_cluster = ((entry & poke.OFFSET_MASK) >> 16) + 1
    refcount = poke.refcount(image, next_cluster)
    assert 'ERROR cluster %d refcount=%d reference=%d' % (next_cluster, refcount, refcount + 1) in result['messages']
    assert (result['result']['corruptions'], result['result'].get('leaks', 0)) == (2, 0)
    assert result['result']['allocated-clusters'] == 5


def test_unaligned_l2_table_is_still_read_like_qemu(image):
    poke.set_l1_entry(image, 0, poke.l1_entry(image, 0) | 0x200)
    result = check(image)
    assert 'ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted' % (
        (poke.l1_entry(image, 0) & poke.OFFSET_MASK)) in result['messages']
    assert result['result']['corruptions'] > 1  # the entries read at the shifted offset are garbage to qemu too


@pytest.mark.parametrize('where, value, message', [
    ('l2', lambda p: poke.l2_entry(p, 0) | 2, 'ERROR found l2 entry with reserved bits set: %x'),
    ('l2', lambda p: poke.l2_entry(p, 0) | (1 << 56), 'ERROR found l2 entry with reserved bits set: %x'),
    ('l2-unallocated', lambda p: 2, 'ERROR found l2 entry with reserved bits set: %x'),
    ('l1', lambda p: poke.l1_entry(p, 0) | 2, 'ERROR found L1 entry with reserved bits set: %x'),
])
def test_reserved_bits_in_l1_and_l2_entries(image, where, value, message):
    """qemu 7.2 counts each table entry with reserved bits set as a corruption."""
    new = value(image)
    if where == 'l1':
        poke.set_l1_entry(image, 0, new)
    else:
        poke.set_l2_entry(image, 0 if where == 'l2' else 2 * MiB, new)
    result = check(image)
    assert result['messages'] == [message % new]
    assert result['exit_code'] == 2 and result['result']['corruptions'] == 1


@pytest.fixture
def extl2_image(tmp_path):
    path = str(tmp_path / 'x.qcow2')
    create_image(path, CreateOptions(size=8 * MiB, extended_l2=True))
    with open_chain(path, writable=True) as chain:
        chain.top.write(0, b'\x05' * CS)
    return path


def set_bitmap(path, guest_offset, value):
    poke.write_u64(path, poke.l2_entry_offset(path, guest_offset) + 8, value)


@pytest.mark.parametrize('guest_offset, bitmap, messages', [
    (0, 0x1_00000001, ['ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap']),
    (CS, 0x1, ['ERROR: Unallocated cluster has non-zero subcluster allocation map']),
    (CS, 0x1_00000001, ['ERROR: Unallocated cluster has non-zero subcluster allocation map']),
    (CS, 0xFFFFFFFF_00000000, []),  # all zero: fine
])
def test_subcluster_bitmap_errors_are_counted_like_qemu(extl2_image, guest_offset, bitmap, messages):
    data = poke.l2_entry(extl2_image, 0) & poke.OFFSET_MASK
    set_bitmap(extl2_image, guest_offset, bitmap)
    result = check(extl2_image)
    assert result['messages'] == [m % data if '%' in m else m for m in messages]
    assert result['result'].get('corruptions', 0) == len(messages)


def test_compressed_cluster_with_a_subcluster_bitmap_is_not_counted(extl2_image):
    """qemu reports the entry and skips it, so the compressed data's clusters show up as leaked."""
    data = poke.l2_entry(extl2_image, 0) & poke.OFFSET_MASK
    poke.set_l2_entry(extl2_image, 0, poke.OFLAG_COMPRESSED | data)  # a one-sector compressed descriptor
    set_bitmap(extl2_image, 0, 1)
    result = check(extl2_image)
    assert result['messages'][0].startswith('ERROR compressed cluster 0 with non-zero subcluster allocation bitmap')
    assert (result['result']['corruptions'], result['result']['leaks']) == (1, 1)


def test_a_repair_that_cannot_fix_the_image_reports_its_corruptions(image):
    """Like qemu-img check -r all: the check completed, the image is still corrupt: exit 2, not 1."""
    poke.set_l2_entry(image, 0, poke.l2_entry(image, 0) | (1 << 57))
    result = check(image, repair='all')
    assert result['exit_code'] == 2
    assert result['result']['corruptions'] == 1 and result['result']['check-errors'] == 0
    assert any(m.startswith('Repair failed: ') for m in result['messages'])


def test_a_repair_of_an_unreadable_snapshot_table_is_reported_not_raised(image):
    create_snapshot(image, 'snap')
    with open(image, 'r+b') as f:
        f.seek(poke.header(image)['snapshots_offset'] + 36)
        f.write((2000).to_bytes(4, 'big'))  # more extra data than qemu accepts
    result = check(image, repair='all')
    assert result['exit_code'] == 1
    assert 'Too much extra metadata in snapshot table entry 0' in result['messages'][0]


def test_check_and_a_snapshot_of_a_sparse_1tib_image_do_not_walk_every_l2_entry(tmp_path):
    path = str(tmp_path / 'sparse.qcow2')
    create_image(path, CreateOptions(size=1 << 40))
    with open_chain(path, writable=True) as chain:
        for i in range(1024):  # 1024 L2 tables of 8192 entries, one used in each
            chain.top.write(i << 30, b'\x01' * 100)
    with time_limit(8):
        assert check(path)['exit_code'] == 0
        create_snapshot(path, 'quick')
        assert check(path)['exit_code'] == 0


@given(st.lists(st.integers(0, 8191), max_size=30), st.sampled_from([1, 2]))
def test_used_l2_indexes_never_skips_a_used_entry(used, words):
    table = array('Q', bytes(8 * 8192 * words))
    for i in used:
        table[i * words + (i % words)] = 1 << 9  # the offset word, or only the bitmap word
    listed = set(used_l2_indexes(table, words, 8192))
    assert set(used) <= listed
    assert len(listed) <= 64 * len(set(i // 64 for i in used))
