"""Compressed clusters as qemu writes them: raw deflate with a 4 KiB window, zstd frames, sector padding."""

from __future__ import annotations

import os
import zlib

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.compression import compress_cluster, decompress_cluster
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import CorruptionError

CS = 65536
CLUSTER = (b'qcow2 ' * 20000)[:CS]


def qemu_deflate(data):
    """block/qcow2-threads.c: deflateInit2(Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY)."""
    z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9)
    return z.compress(data) + z.flush()


def sector_padded(data, garbage=b'\xa5'):
    """What a reader gets: the data up to the end of its last 512-byte sector (maybe the next cluster's bytes)."""
    return data + garbage * (-len(data) % 512)


def test_deflate_as_qemu_writes_it_with_sector_padding():
    assert decompress_cluster(sector_padded(qemu_deflate(CLUSTER)), CS, C.COMPRESSION_ZLIB) == CLUSTER


def test_engine_deflate_is_what_qemu_reads():
    comp = compress_cluster(CLUSTER, C.COMPRESSION_ZLIB)
    assert zlib.decompressobj(-12).decompress(comp) == CLUSTER


def test_incompressible_data_is_left_plain():
    assert compress_cluster(os.urandom(CS), C.COMPRESSION_ZLIB) is None


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'short'])
def test_broken_deflate_is_a_corruption_error(damage):
    comp = qemu_deflate(CLUSTER)
    raw = {'truncated': comp[:len(comp) // 2], 'garbage': b'\xff' * 600, 'short': qemu_deflate(CLUSTER[:1000])}[damage]
    with pytest.raises(CorruptionError, match='ompress'):
        decompress_cluster(raw, CS, C.COMPRESSION_ZLIB, '/img')


def test_zstd_single_and_multiple_frames_with_padding():
    zstandard = pytest.importorskip('zstandard')  # tests/unit/requirements.txt installs it
    one = zstandard.ZstdCompressor().compress(CLUSTER)
    assert decompress_cluster(sector_padded(one, b'\0'), CS, C.COMPRESSION_ZSTD) == CLUSTER
    half = CS // 2
    two = zstandard.ZstdCompressor().compress(CLUSTER[:half]) + zstandard.ZstdCompressor().compress(CLUSTER[half:])
    assert decompress_cluster(sector_padded(two, b'\0'), CS, C.COMPRESSION_ZSTD) == CLUSTER
    assert decompress_cluster(compress_cluster(CLUSTER, C.COMPRESSION_ZSTD), CS, C.COMPRESSION_ZSTD) == CLUSTER
    with pytest.raises(CorruptionError):
        decompress_cluster(b'\x28\xb5\x2f\xfd' + b'\xff' * 100, CS, C.COMPRESSION_ZSTD)
