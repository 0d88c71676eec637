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
