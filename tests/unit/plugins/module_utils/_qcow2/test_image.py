"""Reads and the extent map of an open image."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import create_image
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.image import DATA, UNALLOC, ZERO
from ansible_collections.backingchain.qcow2.tests.helpers.limits import time_limit

GiB = 1 << 30
CS = 65536


def test_extents_of_a_sparse_1tib_image_are_listed_fast(tmp_path):
    """1024 L2 tables of 8192 entries with 2 used each: unallocated runs are skipped, not walked entry by entry."""
    path = str(tmp_path / 'sparse.qcow2')
    create_image(path, CreateOptions(size=1 << 40))
    with open_chain(path, writable=True) as chain:
        for i in range(1024):
            chain.top.write(i * GiB + (i % 7) * CS, b'\x01' * 100)
            chain.top.write_zeroes(i * GiB + 300 * CS, CS)

    with time_limit(6), open_chain(path) as chain:
        extents = chain.top.extents(0, chain.top.size)

    data = [(e.offset, e.length) for e in extents if e.kind == DATA]
    assert data == [(i * GiB + (i % 7) * CS, CS) for i in range(1024)]
    assert [e.offset for e in extents if e.kind == ZERO] == [i * GiB + 300 * CS for i in range(1024)]
    assert sum(e.length for e in extents) == 1 << 40
    assert all(a.end == b.offset and a.kind != b.kind for a, b in zip(extents, extents[1:]))
    assert extents[0].kind == DATA and extents[1].kind == UNALLOC


def test_extents_of_a_range_inside_unallocated_runs(tmp_path):
    path = str(tmp_path / 'a.qcow2')
    create_image(path, CreateOptions(size=GiB, cluster_size=4096))
    with open_chain(path, writable=True) as chain:
        chain.top.write(10 * 4096, b'x' * 4096)
    with open_chain(path) as chain:
        assert [(e.offset, e.length, e.kind) for e in chain.top.extents(100, 20000)] == [(100, 20000, UNALLOC)]
        assert [(e.offset, e.kind) for e in chain.top.extents(4096 * 9 + 5, 8192)] == [
            (4096 * 9 + 5, UNALLOC), (4096 * 10, DATA), (4096 * 11, UNALLOC)]
