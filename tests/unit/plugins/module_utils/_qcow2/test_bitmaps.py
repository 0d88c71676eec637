"""Persistent dirty bitmaps: the engine's writes show up in every enabled bitmap, and only there."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import check, create_image, image_info
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.bitmap_bits import set_bits
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.bitmaps import read_table
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.image import Qcow2Image

CS = 65536
MiB = 1 << 20


@given(st.integers(0, CS * 8 - 1), st.integers(0, 4000))
def test_set_bits_sets_exactly_the_range(lo, span):
    hi = min(CS * 8 - 1, lo + span)
    data = bytearray(CS)
    set_bits(data, lo, hi)
    as_int = int.from_bytes(data, 'little')  # bit n of the cluster = bit n % 8 of byte n // 8
    assert as_int == ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)


def add_bitmaps(path, specs):
    """Write a bitmap directory by hand, as qemu-img bitmap --add would: specs = [(name, granularity_bits, enabled)]."""
    with Qcow2Image(path, writable=True) as img:
        entries = []
        for name, gbits, enabled in specs:
            table_size = -(-img.size // (1 << gbits) // (CS * 8))
            table = img.refcounts.alloc(1) << 16
            raw_name = name.encode()
            entry = struct.pack('>QIIBBHI', table, table_size, C.BITMAP_AUTO if enabled else 0, 1, gbits,
                                len(raw_name), 0) + raw_name
            entries.append(entry + bytes(-len(entry) % 8))
        directory = b''.join(entries)
        dir_offset = img.refcounts.alloc(1) << 16
        img.flush()
        img.file.pwrite(directory, dir_offset)
        img.file.flush()
        img.header.bitmaps_ext = {'nb_bitmaps': len(specs), 'bitmap_directory_size': len(directory),
                                  'bitmap_directory_offset': dir_offset}
        img.header.autoclear_features |= C.AUTOCLEAR_BITMAPS
        img.rewrite_header()


def dirty_ranges(path):
    """{bitmap name: set of dirty chunk indexes}."""
    out = {}
    with Qcow2Image(path) as img:
        for b in img.bitmap_trust.loaded():
            bits = set()
            for index, entry in enumerate(read_table(img, b)):
                offset = entry & C.BME_TABLE_ENTRY_OFFSET_MASK
                if offset:
                    value = int.from_bytes(img.file.pread(CS, offset), 'little')
                    bits.update(index * CS * 8 + n for n in range(CS * 8) if value >> n & 1)
            out[b.name] = bits
    return out


def flags(path):
    return {b['name']: b['flags'] for b in image_info(path, force_share=True)[0]['format-specific']['data'].get('bitmaps', [])}


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / 'a.qcow2')
    create_image(path, CreateOptions(size=64 * MiB))
    add_bitmaps(path, [('b64k', 16, True), ('b4k', 12, True), ('off', 16, False)])
    assert check(path)['exit_code'] == 0
    return path


def test_writes_and_zero_writes_are_recorded_in_enabled_bitmaps(image):
    with open_chain(image, writable=True) as chain:
        chain.top.write(MiB + 100, b'x' * 5000)
        chain.top.write_zeroes(10 * MiB, 200000)
        assert flags(image)['b64k'] == ['in-use', 'auto']  # on disk while the engine has it open
    dirty = dirty_ranges(image)
    assert dirty['b64k'] == {16, 160, 161, 162, 163}
    assert dirty['b4k'] == {256, 257} | set(range(2560, 2560 + 49))
    assert dirty['off'] == set()
    assert flags(image) == {'b64k': ['auto'], 'b4k': ['auto'], 'off': []}
    assert check(image)['exit_code'] == 0


def test_no_writes_no_in_use_flag(image):
    with open_chain(image, writable=True):
        pass
    assert flags(image)['b64k'] == ['auto']


def test_a_stale_bitmaps_extension_is_dropped_on_writable_open(image):
    """Extension present but autoclear bit clear: a writer that did not know bitmaps changed the image."""
    with Qcow2Image(image, writable=True) as img:
        img.header.autoclear_features &= ~C.AUTOCLEAR_BITMAPS
        img.rewrite_header()
    with open_chain(image, writable=True) as chain:
        chain.top.write(0, b'x')
    with Qcow2Image(image) as img:
        assert img.header.bitmaps_ext is None
    assert check(image)['exit_code'] == 3  # the old bitmap clusters are leaked, as qemu warns
