"""Refcounts: lookups, allocation, table growth, and the limits qemu puts on the refcount table."""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import check, create_image, create_snapshot
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import Qcow2Error
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.image import Qcow2Image
from ansible_collections.backingchain.qcow2.tests.helpers import qcow2_poke as poke
from ansible_collections.backingchain.qcow2.tests.helpers.limits import time_limit

MiB = 1 << 20
TiB = 1 << 40


def _image(tmp_path, size=4 * MiB, **opts):
    path = str(tmp_path / 'a.qcow2')
    create_image(path, CreateOptions(size=size, **opts))
    return path


def _sparse_tail_image(tmp_path):
    """512-byte clusters and 64-bit refcounts (64 clusters per refblock), then a 1 TiB sparse tail.

    A new refcount structure goes past the end of the file, so it would need a table far beyond
    qemu's 8 MiB limit (QCOW_MAX_REFTABLE_SIZE); qemu answers EFBIG there.
    """
    path = _image(tmp_path, size=64 * MiB, cluster_size=512, refcount_bits=64)
    with open_chain(path, writable=True) as chain:
        chain.top.write(0, b'\x5a' * (64 * 1024))
    os.truncate(path, TiB)
    return path


def _assert_opens_with_bounded_reftable(path):
    with Qcow2Image(path) as img:
        assert img.header.refcount_table_clusters * img.cluster_size <= C.MAX_REFTABLE_BYTES
        assert img.read(0, 64 * 1024) == b'\x5a' * (64 * 1024)


def test_table_growth_past_qemus_reftable_limit_is_refused(tmp_path):
    path = _sparse_tail_image(tmp_path)
    header_before = poke.header(path)

    with open_chain(path, writable=True) as chain:
        with pytest.raises(Qcow2Error, match='refcount table'):
            chain.top.write(MiB, b'\x01' * (8 * MiB))

    _assert_opens_with_bounded_reftable(path)
    assert poke.header(path)['refcount_table_offset'] == header_before['refcount_table_offset']


def test_metadata_switch_past_qemus_reftable_limit_is_refused(tmp_path):
    path = _sparse_tail_image(tmp_path)
    header_before = poke.header(path)

    with time_limit(30), pytest.raises(Qcow2Error, match='refcount table'):
        create_snapshot(path, 'snap')

    _assert_opens_with_bounded_reftable(path)
    assert poke.header(path) == header_before


def test_check_of_a_huge_sparse_file_is_bounded_by_what_is_referenced(tmp_path):
    """2 TiB of file at 512-byte clusters: 2^32 clusters, 2^26 refcount ranges, almost all empty."""
    path = _sparse_tail_image(tmp_path)
    os.truncate(path, 2 * TiB)

    with time_limit(30):
        result = check(path)

    assert result['exit_code'] == 0, result['messages']
    assert result['result']['image-end-offset'] < MiB


def test_clusters_of_a_replaced_refcount_table_are_reused(tmp_path):
    """After the table moves, its old clusters are free; the next allocation may take them."""
    path = _image(tmp_path, size=64 * MiB, cluster_size=512, refcount_bits=64)
    with open_chain(path, writable=True) as chain:
        img = chain.top
        old_table = img.header.refcount_table_offset
        img.write(0, b'a' * (3 * MiB))  # 64 entries x 64 clusters cover 2 MiB: the table must grow
        img.flush()
        assert img.header.refcount_table_offset != old_table
        assert img.refcounts.get(old_table // 512) == 0

        img.write(8 * MiB, b'b' * 512)  # one new L2 table and one data cluster

        assert img.refcounts.get(old_table // 512) == 1
    assert check(path)['exit_code'] == 0


@pytest.mark.parametrize('bits', [1, 2, 4])
def test_allocation_with_sub_byte_refcounts_does_not_scan_entry_by_entry(tmp_path, bits):
    """A 64 KiB refblock holds 524288 one-bit entries; finding the next free/used one must not be a Python loop."""
    path = _image(tmp_path, size=1 << 30, refcount_bits=bits)
    with time_limit(5), open_chain(path, writable=True) as chain:
        for i in range(50):
            chain.top.write((i * 7919 % 16384) * 65536, b'x' * 4096)
    assert check(path)['exit_code'] == 0


# ---- allocation ----

def test_alloc_hands_out_fresh_contiguous_clusters_with_refcount_one(tmp_path):
    path = _image(tmp_path)
    with open_chain(path, writable=True) as chain:
        refs = chain.top.refcounts
        first = refs.alloc(5)
        second = refs.alloc(3)
        assert [refs.get(c) for c in range(first, first + 5)] == [1] * 5
        assert second >= first + 5
        assert all(not chain.top.overlaps_metadata(c) for c in range(first, second + 3))


def test_decrements_wait_for_the_flush_then_free_the_cluster_for_reuse(tmp_path):
    path = _image(tmp_path)
    with open_chain(path, writable=True) as chain:
        refs = chain.top.refcounts
        cluster = refs.alloc(1)
        chain.top.flush()
        refs.queue_decref(cluster)
        assert refs.get(cluster) == 1  # the metadata that dropped the reference is not on disk yet
        chain.top.flush()
        assert refs.get(cluster) == 0
        assert refs.alloc(1) == cluster


def test_a_long_allocation_gets_its_refcount_blocks_placed_before_its_data(tmp_path):
    """512-byte clusters, 64-bit refcounts: one refblock covers 64 clusters, so 300 clusters need new ones."""
    path = _image(tmp_path, size=64 * MiB, cluster_size=512, refcount_bits=64)
    with open_chain(path, writable=True) as chain:
        refs = chain.top.refcounts
        blocks_before = {e for e in refs.table if e}
        first = refs.alloc(300)
        new_blocks = sorted((e >> 9) for e in refs.table if e and e not in blocks_before)
        assert new_blocks and max(new_blocks) < first
        assert all(refs.get(c) == 1 for c in new_blocks + list(range(first, first + 300)))
    assert check(path)['result']['leaks'] == 300  # allocated, then referenced by nothing: leaked, never corrupt


@pytest.mark.parametrize('bits', [8, 16, 32, 64])
def test_many_writes_grow_the_table_and_stay_consistent(tmp_path, bits):
    """One 512-byte table cluster holds 64 refblock entries: 8-bit refcounts cover 32768 clusters, 64-bit 4096."""
    path = _image(tmp_path, size=64 * MiB, cluster_size=512, refcount_bits=bits)
    table_before = poke.header(path)['refcount_table_offset']
    with open_chain(path, writable=True) as chain:
        for i in range(64):
            chain.top.write(i * MiB, bytes([i + 1]) * 300000)
    assert poke.header(path)['refcount_table_offset'] != table_before
    assert check(path)['exit_code'] == 0
    with open_chain(path) as chain:
        assert all(chain.top.read(i * MiB, 300000) == bytes([i + 1]) * 300000 for i in range(64))
