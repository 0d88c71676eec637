"""The internal snapshot table: qemu's entry layout, extra data rules and bounds."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C, snapshot_table
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import FormatError
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.snapshot_table import (
    Snapshot, build_snapshot_table, parse_snapshot_table)

CS = 65536

snapshots = st.lists(st.builds(
    Snapshot,
    id_str=st.integers(1, 99999).map(str),
    # names are UTF-8 (no lone surrogates) ending at NUL
    name=st.text(st.characters(blacklist_characters='\0', blacklist_categories=('Cs',)), min_size=0, max_size=40),
    l1_table_offset=st.integers(0, 1 << 30).map(lambda n: n * CS),
    l1_size=st.integers(0, 1 << 20),
    date_sec=st.integers(0, 0xFFFFFFFF), date_nsec=st.integers(0, 999999999),
    vm_clock_nsec=st.integers(0, (1 << 64) - 1),
    vm_state_size=st.integers(0, 1 << 40),
    disk_size=st.integers(0, 1 << 50),
    icount=st.one_of(st.just(-1), st.integers(0, (1 << 63) - 1)),
    extra_unknown=st.binary(max_size=24)), max_size=5)


@given(snapshots)
def test_round_trip(snaps):
    raw = build_snapshot_table(snaps)
    back, length = parse_snapshot_table(raw, len(snaps), CS, 12345)

    assert length == len(raw) and length % 8 == 0
    for a, b in zip(snaps, back):
        for field in ('id_str', 'name', 'l1_table_offset', 'l1_size', 'date_sec', 'date_nsec', 'vm_clock_nsec',
                      'vm_state_size', 'disk_size', 'icount', 'extra_unknown'):
            assert getattr(a, field) == getattr(b, field), field
        assert b.extra_data_size == C.SNAPSHOT_EXTRA_SIZE + len(a.extra_unknown)


def test_entry_layout_as_qemu_writes_it():
    sn = Snapshot('1', 'before upgrade', l1_table_offset=5 * CS, l1_size=16, date_sec=7, date_nsec=8,
                  vm_clock_nsec=9, vm_state_size=5 << 32, disk_size=1 << 30, icount=-1)
    raw = build_snapshot_table([sn])
    fixed = struct.unpack_from('>QIHHIIQII', raw, 0)
    assert fixed == (5 * CS, 16, 1, 14, 7, 8, 9, 0, 24)  # vm_state_size over 4 GiB: the 32-bit field is 0
    assert struct.unpack_from('>QQq', raw, 40) == (5 << 32, 1 << 30, -1)
    assert raw[64:65] == b'1' and raw[65:79] == b'before upgrade' and len(raw) == 80


def test_old_entries_without_extra_data():
    """Before qemu 1.1 entries had no extra data: disk size is the image's, vm state the 32-bit field."""
    raw = struct.pack('>QIHHIIQII', 3 * CS, 2, 1, 1, 0, 0, 0, 4096, 0) + b'1a'
    raw += bytes(-len(raw) % 8)
    (sn,), _length = parse_snapshot_table(raw, 1, CS, 777 * 512)
    assert (sn.disk_size, sn.vm_state_size, sn.icount, sn.extra_data_size) == (777 * 512, 4096, -1, 0)
    # rewritten, it gets qemu's 24 bytes of extra data
    assert struct.unpack_from('>I', build_snapshot_table([sn]), 36)[0] == 24


def test_too_much_extra_data_makes_the_table_unreadable():
    raw = bytearray(build_snapshot_table([Snapshot('1', 'a', l1_table_offset=CS, l1_size=1)]))
    struct.pack_into('>I', raw, 36, 1025)
    with pytest.raises(FormatError, match='Too much extra metadata in snapshot table entry 0'):
        parse_snapshot_table(bytes(raw) + bytes(2048), 1, CS, 0)


def test_a_bad_l1_reference_is_kept_for_check_to_report():
    raw = build_snapshot_table([Snapshot('1', 'a', l1_table_offset=CS + 512, l1_size=(32 << 20) // 8 + 1)])
    (sn,), _length = parse_snapshot_table(raw, 1, CS, 0)
    assert (sn.l1_table_offset, sn.l1_size) == (CS + 512, (32 << 20) // 8 + 1)


def test_table_shorter_than_its_entry_count_reads_zeros_beyond():
    """Past the end of the file qemu reads zeros: the missing entry is an empty one (check then reports on it)."""
    raw = build_snapshot_table([Snapshot('1', 'a')])
    (_first, second), _length = parse_snapshot_table(raw, 2, CS, 4096)
    assert (second.id_str, second.name, second.l1_size, second.extra_data_size, second.disk_size) == ('', '', 0, 0, 4096)


def test_table_larger_than_qemus_limit():
    raw = build_snapshot_table([Snapshot('1', 'a' * 65535)])
    with pytest.raises(FormatError, match='Snapshot table is too big'):
        parse_snapshot_table(raw * 1100, 1100, CS, 0)


def test_struct_formats_match_the_construct_declarations():
    """Reading uses struct for speed; the layouts must stay those of the construct declarations."""
    decl = snapshot_table.declarations()
    assert snapshot_table._HEADER.size == decl.SNAPSHOT_HEADER.sizeof() == C.SNAPSHOT_HEADER_SIZE
    assert snapshot_table._EXTRA.size == decl.SNAPSHOT_EXTRA.sizeof() == C.SNAPSHOT_EXTRA_SIZE
    values = dict(l1_table_offset=0x123456789, l1_size=7, id_str_size=2, name_size=3, date_sec=11, date_nsec=12,
                  vm_clock_nsec=13, vm_state_size=14, extra_data_size=24)
    assert snapshot_table._HEADER.unpack(decl.SNAPSHOT_HEADER.build(values)) == tuple(values.values())
    extra = dict(vm_state_size_large=1 << 40, disk_size=1 << 30, icount=-1)
    assert snapshot_table._EXTRA.unpack(decl.SNAPSHOT_EXTRA.build(extra)) == tuple(extra.values())
