"""The bits of a persistent bitmap: runs found in a cluster, ranges set and read back, clusters without data."""

from __future__ import annotations

from array import array

from hypothesis import given, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.bitmap_bits import (
    BitmapBits, bit_runs, join_ranges, table_entries_needed)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.bitmaps import Bitmap


def runs_one_by_one(data):
    """The set bits of data as runs, the slow way."""
    out = []
    for bit in range(len(data) * 8):
        if data[bit // 8] >> (bit % 8) & 1:
            if out and out[-1][1] == bit:
                out[-1] = (out[-1][0], bit + 1)
            else:
                out.append((bit, bit + 1))
    return out


@given(st.binary(max_size=300) | st.lists(st.sampled_from([0, 0xFF, 0x0F, 0xF0, 1, 0x80]), max_size=300).map(bytes))
def test_bit_runs_finds_every_set_bit(data):
    assert bit_runs(data) == runs_one_by_one(data)


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 100))))
def test_join_ranges_covers_the_same_bytes_without_touching(pairs):
    ranges = [(start, start + length) for start, length in pairs]
    joined = join_ranges(ranges)
    covered = {b for start, end in ranges for b in range(start, end)}
    assert {b for start, end in joined for b in range(start, end)} == covered
    assert all(a[1] < b[0] for a, b in zip(joined, joined[1:]))


class FakeFile:
    """Clusters that hold all-zero bitmap data (reads of a real image's data clusters, in the real tests)."""

    def __init__(self, cluster_size):
        self.cluster_size = cluster_size

    def pread(self, length, offset):
        return bytes(length)


class FakeImage:
    def __init__(self, size, cluster_size):
        self.size = size
        self.file = FakeFile(cluster_size)

        class Geo:
            pass
        self.geo = Geo()
        self.geo.cluster_size = cluster_size


def bits_of(size, granularity_bits, cluster_size=512, table=None):
    img = FakeImage(size, cluster_size)
    bitmap = Bitmap(0, 0, 0, C.BITMAP_AUTO, 1, granularity_bits, 'b', b'')
    entries = table_entries_needed(size, 1 << granularity_bits, cluster_size)
    return BitmapBits(img, bitmap, array('Q', table or [0] * entries))


@given(size=st.integers(1, 40000).map(lambda n: n * 512), gbits=st.integers(9, 13),
       writes=st.lists(st.tuples(st.integers(0, 1 << 24), st.integers(1, 100000)), max_size=8))
def test_set_ranges_read_back_as_whole_granules(size, gbits, writes):
    bits = bits_of(size, gbits)
    expected = set()
    for offset, length in writes:
        offset %= size
        end = min(size, offset + length)
        bits.set_range(offset, end)
        expected.update(range(offset >> gbits, ((end - 1) >> gbits) + 1))
    got = bits.ranges()
    granules = {g for start, end in got for g in range(start >> gbits, -(-end >> gbits))}
    assert granules == expected
    assert all(end <= size for _start, end in got)
    assert bits.is_empty() == (not expected)


def test_setting_bits_already_set_changes_nothing():
    bits = bits_of(1 << 20, 9)
    assert bits.set_range(4096, 8192)
    assert not bits.set_range(4096, 5000)
    assert bits.set_range(4000, 5000)


def test_an_all_ones_table_entry_reads_as_every_granule_dirty():
    # 512-byte clusters hold 4096 bits: with 512-byte granules, entry 1 covers bytes 2 MiB..4 MiB
    bits = bits_of(3 << 20, 9, table=[0, C.BME_TABLE_ENTRY_FLAG_ALL_ONES])
    assert bits.ranges() == [(2 << 20, 3 << 20)]  # clipped to the virtual size
    assert not bits.set_range(2 << 20, (2 << 20) + 512)  # already dirty: nothing to write
    assert not bits.is_empty()


def test_table_entries_follow_size_and_granularity():
    assert table_entries_needed(16 << 20, 65536, 65536) == 1
    assert table_entries_needed((1 << 40), 512, 65536) == (1 << 31) // (65536 * 8)
    assert table_entries_needed(512, 1 << 31, 512) == 1
