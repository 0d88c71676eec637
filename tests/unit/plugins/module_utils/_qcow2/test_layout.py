"""Geometry, cluster classification and the compressed cluster descriptor (qcow2.rst, qcow2_get_cluster_type)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.header import Header
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.layout import (
    COMPRESSED, NORMAL, UNALLOCATED, ZERO_ALLOC, ZERO_PLAIN, Geometry, array_to_be, be_array, classify)


def geometry(cluster_bits=16, extended_l2=False, refcount_order=4):
    hdr = Header()
    hdr.cluster_bits = cluster_bits
    hdr.refcount_order = refcount_order
    hdr.incompatible_features = C.INCOMPAT_EXTL2 if extended_l2 else 0
    return Geometry(hdr)


@pytest.mark.parametrize('cluster_bits, ext, l2_entries, l1_shift, subcluster', [
    (9, False, 64, 15, 512),
    (16, False, 8192, 29, 65536),
    (16, True, 4096, 28, 2048),
    (21, False, 262144, 39, 2 << 20),
    (21, True, 131072, 38, 65536),
])
def test_l2_geometry(cluster_bits, ext, l2_entries, l1_shift, subcluster):
    geo = geometry(cluster_bits, ext)
    assert (geo.l2_entries, geo.l1_shift, geo.subcluster_size) == (l2_entries, l1_shift, subcluster)
    assert geo.l2_entry_words == (2 if ext else 1)
    assert geo.slices_per_table * geo.slice_entries == geo.l2_entries


@pytest.mark.parametrize('refcount_order', range(7))
def test_refcount_geometry(refcount_order):
    geo = geometry(16, refcount_order=refcount_order)
    bits = 1 << refcount_order
    assert geo.refblock_entries == 65536 * 8 // bits
    assert geo.refcount_max == (1 << bits) - 1


def test_size_to_l1_rounds_up():
    geo = geometry(16)
    assert [geo.size_to_l1(s) for s in (0, 1, 512 << 20, (512 << 20) + 1)] == [0, 1, 1, 2]


def _spec_descriptor(cluster_bits, entry):
    """Decode per qcow2.rst: x = 62 - (cluster_bits - 8); bits 0..x-1 offset, x..61 additional sectors."""
    x = 62 - (cluster_bits - 8)
    offset = entry & ((1 << x) - 1)
    sectors = ((entry >> x) & ((1 << (cluster_bits - 8)) - 1)) + 1
    return offset, sectors


@given(cluster_bits=st.integers(9, 21), data=st.data())
def test_compressed_descriptor_round_trip(cluster_bits, data):
    geo = geometry(cluster_bits)
    cs = 1 << cluster_bits
    x = 62 - (cluster_bits - 8)
    host = data.draw(st.integers(0, min((1 << x) - 1, C.MAX_CLUSTER_OFFSET) - 2 * cs), label='host')
    length = data.draw(st.integers(1, cs - 1), label='length')  # qemu compresses into at most cs - 1 bytes

    entry = geo.compressed_entry(host, length)
    offset, readable = geo.compressed_location(entry)

    assert classify(entry) == COMPRESSED
    assert offset == host
    spec_offset, sectors = _spec_descriptor(cluster_bits, entry & ~C.OFLAG_COMPRESSED)
    assert spec_offset == host
    # the sectors cover the data, no more than one sector too many, and the read stops at their end
    assert host + length <= (host & ~511) + sectors * 512 < host + length + 512
    assert offset + readable == (host & ~511) + sectors * 512
    clusters = list(geo.compressed_host_clusters(entry))
    assert clusters == list(range(host // cs, (host + readable - 1) // cs + 1))


def test_compressed_descriptor_for_64k_clusters_uses_bits_54_to_61():
    geo = geometry(16)
    entry = geo.compressed_entry(0x123456789, 3 * 512)
    assert (entry >> 54) & 0xFF == 3  # 0x123456789 is 393 bytes into its sector: 1536 bytes span 4 sectors
    assert entry & ((1 << 54) - 1) == 0x123456789


@pytest.mark.parametrize('entry, ext, data_file, kind', [
    (0, False, False, UNALLOCATED),
    (C.OFLAG_COPIED, False, False, UNALLOCATED),
    (C.OFLAG_COPIED, False, True, NORMAL),  # external data file: offset 0 with COPIED is a real cluster
    (0x50000 | C.OFLAG_COPIED, False, False, NORMAL),
    (C.OFLAG_ZERO, False, False, ZERO_PLAIN),
    (0x50000 | C.OFLAG_ZERO, False, False, ZERO_ALLOC),
    (C.OFLAG_ZERO, True, False, UNALLOCATED),  # extended L2: bit 0 is not the zero flag
    (0x50000 | C.OFLAG_ZERO, True, False, NORMAL),
    (C.OFLAG_COMPRESSED | 1, False, False, COMPRESSED),  # bit 0 of a compressed descriptor is offset, not ZERO
    (C.OFLAG_COMPRESSED, True, False, COMPRESSED),
])
def test_classify(entry, ext, data_file, kind):
    assert classify(entry, ext, data_file) == kind


@given(st.lists(st.integers(0, (1 << 64) - 1), max_size=64))
def test_table_byte_order(values):
    from array import array
    table = array('Q', values)
    raw = array_to_be(table)
    assert raw == b''.join(v.to_bytes(8, 'big') for v in values)
    assert list(be_array(raw)) == values
