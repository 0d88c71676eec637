"""Refcount block codecs for every width qcow2 allows, against a bit-by-bit reading of the spec."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.refcount.block import RefBlockCodec

WIDTHS = [1, 2, 4, 8, 16, 32, 64]


def spec_encode(values, bits, nbytes):
    """qcow2.rst: entries are big-endian; below 8 bits, 'bit 0 means the least significant bit' of each byte."""
    out = bytearray(nbytes)
    if bits >= 8:
        for i, v in enumerate(values):
            out[i * bits // 8:(i + 1) * bits // 8] = v.to_bytes(bits // 8, 'big')
        return bytes(out)
    for i, v in enumerate(values):
        bit = i * bits
        out[bit // 8] |= v << (bit % 8)
    return bytes(out)


@st.composite
def blocks(draw):
    bits = draw(st.sampled_from(WIDTHS))
    cluster_size = draw(st.sampled_from([512, 4096]))
    entries = cluster_size * 8 // bits
    fill = draw(st.sampled_from([0, 1, (1 << bits) - 1]))
    values = [fill] * entries
    changes = draw(st.dictionaries(st.integers(0, entries - 1), st.integers(0, (1 << bits) - 1), max_size=40))
    for index, value in changes.items():
        values[index] = value
    return bits, cluster_size, entries, values


@given(blocks())
def test_decode_and_encode_match_the_spec_layout(case):
    bits, cs, entries, values = case
    codec = RefBlockCodec(bits, entries)
    raw = spec_encode(values, bits, cs)

    block = codec.decode(raw)

    assert [codec.get(block, i) for i in range(entries)] == values
    assert codec.encode(block) == raw
    assert codec.used_count(block) == sum(1 for v in values if v)


@given(blocks(), st.data())
def test_set_changes_exactly_one_entry(case, data):
    bits, cs, entries, values = case
    codec = RefBlockCodec(bits, entries)
    block = codec.decode(spec_encode(values, bits, cs))
    index = data.draw(st.integers(0, entries - 1))
    value = data.draw(st.integers(0, (1 << bits) - 1))

    codec.set(block, index, value)

    expected = list(values)
    expected[index] = value
    assert codec.encode(block) == spec_encode(expected, bits, cs)


@given(blocks(), st.data())
def test_first_free_and_first_used(case, data):
    bits, cs, entries, values = case
    codec = RefBlockCodec(bits, entries)
    block = codec.decode(spec_encode(values, bits, cs))
    start = data.draw(st.integers(0, entries - 1))

    free = [i for i in range(start, entries) if values[i] == 0]
    used = [i for i in range(start, entries) if values[i] != 0]
    assert codec.first_free(block, start) == (free[0] if free else None)
    assert codec.first_used(block, start) == (used[0] if used else None)


@pytest.mark.parametrize('bits', WIDTHS)
def test_empty_block_and_short_raw_data(bits):
    entries = 512 * 8 // bits
    codec = RefBlockCodec(bits, entries)
    assert codec.encode(codec.empty()) == bytes(512)
    block = codec.decode(b'\xff')  # a refblock cut short by the end of the file reads as zeros after it
    assert codec.get(block, entries - 1) == 0
    assert codec.get(block, 0) == (1 << bits) - 1 if bits <= 8 else codec.get(block, 0) > 0
    assert codec.first_free(codec.empty(), 0) == 0 and codec.first_used(codec.empty(), 0) is None


def test_sub_byte_entries_start_at_the_least_significant_bit():
    codec = RefBlockCodec(2, 2048)
    block = codec.empty()
    codec.set(block, 0, 1)
    codec.set(block, 3, 2)
    assert codec.encode(block)[0] == 0b10000001


@given(blocks(), st.data())
def test_first_used_within_a_bound(case, data):
    """Allocation asks only whether [start, end) is free: the scan stops at end."""
    bits, cs, entries, values = case
    codec = RefBlockCodec(bits, entries)
    block = codec.decode(spec_encode(values, bits, cs))
    start = data.draw(st.integers(0, entries - 1))
    end = data.draw(st.integers(start, entries))
    used = [i for i in range(start, end) if values[i] != 0]
    assert codec.first_used(block, start, end) == (used[0] if used else None)
