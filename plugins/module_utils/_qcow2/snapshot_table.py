# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The internal snapshot table: entries declared with construct, read with qemu's bounds, written back
with extra data of at least 24 bytes and any unknown extra data preserved (qcow2_write_snapshots)."""

from __future__ import annotations

import functools
import struct
import types
import typing

from . import constants as C
from .deps import load_construct
from .errors import FormatError

if typing.TYPE_CHECKING:  # names used in annotations only (the image imports this module)
    from .image import Qcow2Image


@functools.lru_cache(maxsize=None)
def declarations() -> types.SimpleNamespace:
    """The entries' construct declarations, made (and construct imported) when a table is first built."""
    load_construct()
    from construct import Int16ub, Int32ub, Int64sb, Int64ub, Struct

    snapshot_header = Struct(
        "l1_table_offset" / Int64ub,
        "l1_size" / Int32ub,
        "id_str_size" / Int16ub,
        "name_size" / Int16ub,
        "date_sec" / Int32ub,
        "date_nsec" / Int32ub,
        "vm_clock_nsec" / Int64ub,
        "vm_state_size" / Int32ub,
        "extra_data_size" / Int32ub,
    )
    snapshot_extra = Struct(
        "vm_state_size_large" / Int64ub,
        "disk_size" / Int64ub,
        "icount" / Int64sb,
    )
    return types.SimpleNamespace(SNAPSHOT_HEADER=snapshot_header, SNAPSHOT_EXTRA=snapshot_extra)


# Reading a table of up to 65536 entries is a hot path: the same layouts as struct formats (a unit test keeps
# them equal to the construct declarations, which build the table).
_HEADER = struct.Struct(">QIHHIIQII")
_EXTRA = struct.Struct(">QQq")


class Snapshot:
    """One internal snapshot."""

    def __init__(self, id_str: str, name: str, l1_table_offset: int = 0, l1_size: int = 0, date_sec: int = 0,
                 date_nsec: int = 0, vm_clock_nsec: int = 0, vm_state_size: int = 0, disk_size: int = 0, icount: int = -1,
                 extra_unknown: bytes = b"", extra_data_size: int = C.SNAPSHOT_EXTRA_SIZE) -> None:
        self.id_str = id_str
        self.name = name
        self.l1_table_offset = l1_table_offset
        self.l1_size = l1_size
        self.date_sec = date_sec
        self.date_nsec = date_nsec
        self.vm_clock_nsec = vm_clock_nsec
        self.vm_state_size = vm_state_size
        self.disk_size = disk_size
        self.icount = icount
        self.extra_unknown = extra_unknown
        self.extra_data_size = extra_data_size
        self.entry_offset = None

    def copy(self) -> Snapshot:
        new = Snapshot(self.id_str, self.name)
        new.__dict__.update(self.__dict__)
        return new

    def __repr__(self) -> str:
        return "Snapshot(id=%r, name=%r)" % (self.id_str, self.name)


def _pad8(n: int) -> int:
    return (n + 7) & ~7


class _GrowingBuffer:
    """Reads the table from the file on demand, never more than qemu's 64 MiB bound; past the end of the file the
    table reads as zeros, as it does for qemu."""

    def __init__(self, read: typing.Callable[[int, int], bytes], limit: int) -> None:
        self._read = read
        self._limit = limit
        self.data = b""

    def __len__(self) -> int:
        return len(self.data)

    def ensure(self, end: int) -> bool:
        if end > len(self.data) and len(self.data) < self._limit:
            want = min(self._limit, max(end, 2 * len(self.data), 65536))
            more = self._read(want - len(self.data), len(self.data))
            self.data += more + bytes(want - len(self.data) - len(more))  # past the end of the file: zeros, as qemu
        return len(self.data) >= end

    def __getitem__(self, item: int | slice) -> int | bytes:
        return self.data[item]


def _as_buffer(raw: bytes | bytearray | _GrowingBuffer) -> _GrowingBuffer:
    if isinstance(raw, (bytes, bytearray)):
        table = bytes(raw)
        return _GrowingBuffer(lambda n, off: table[off:off + n], C.MAX_SNAPSHOTS_TABLE_BYTES)
    return raw


def _walk(raw: _GrowingBuffer, count: int, path: str | None, table_offset: int) -> typing.Iterator[tuple[int, int, tuple[int, ...], int]]:
    """qemu's walk over the entries (qcow2_do_read_snapshots): yields (index, entry offset in the table, fixed fields,
    end of the entry) and refuses what qemu refuses there: too much extra data, a table over 64 MiB. Every open
    walks the table (qemu reads it on open): the loop stays lean for tables of 65535 entries."""
    offset = 0
    data = raw.data
    unpack = _HEADER.unpack_from
    for i in range(count):
        if offset + C.SNAPSHOT_HEADER_SIZE > len(data):
            if not raw.ensure(offset + C.SNAPSHOT_HEADER_SIZE):
                raise _too_big(i, table_offset + offset, path)
            data = raw.data
        fields = unpack(data, offset)
        extra_data_size = fields[8]
        if extra_data_size > C.MAX_SNAPSHOT_EXTRA_DATA:
            raise FormatError("Too much extra metadata in snapshot table entry %d (%d bytes, at most %d; snapshot table "
                              "entry %d at offset %#x)" % (i, extra_data_size, C.MAX_SNAPSHOT_EXTRA_DATA, i,
                                                           table_offset + offset), path, "snapshot extra_data_size")
        end = offset + C.SNAPSHOT_HEADER_SIZE + extra_data_size + fields[2] + fields[3]
        if end > len(data):
            if not raw.ensure(end):
                raise _too_big(i, table_offset + offset, path)
            data = raw.data
        yield i, offset, fields, end
        offset = (end + 7) & ~7


def _too_big(index: int, entry_offset: int, path: str | None) -> FormatError:
    return FormatError("Snapshot table is too big (snapshot table entry %d at offset %#x ends past %d bytes)"
                       % (index, entry_offset, C.MAX_SNAPSHOTS_TABLE_BYTES), path, "snapshot table")


def snapshot_table_length(raw: bytes | bytearray | _GrowingBuffer, count: int, path: str | None = None, table_offset: int = 0) -> int:
    """The table's length in bytes, checked as qemu checks it when it opens an image (no entry is built)."""
    end = 0
    for _i, _offset, _fields, end in _walk(_as_buffer(raw), count, path, table_offset):
        pass
    return _pad8(end)


def parse_snapshot_table(raw: bytes | bytearray | _GrowingBuffer, count: int, cluster_size: int, virtual_size: int,
                         path: str | None = None, table_offset: int = 0) -> tuple[list[Snapshot], int]:
    """Parse count entries from raw (bytes or a _GrowingBuffer); returns (snapshots, table byte length)."""
    raw = _as_buffer(raw)
    out = []
    offset = 0
    for _i, start, fields, _end in _walk(raw, count, path, table_offset):
        (l1_table_offset, l1_size, id_str_size, name_size, date_sec, date_nsec, vm_clock_nsec, vm_state_size_small,
         extra_data_size) = fields
        offset = start + C.SNAPSHOT_HEADER_SIZE
        data = raw.data
        extra = data[offset:offset + extra_data_size]
        offset += extra_data_size
        id_str = data[offset:offset + id_str_size].split(b"\0", 1)[0].decode("utf-8", "replace")  # C strings, as qemu
        offset += id_str_size
        name = data[offset:offset + name_size].split(b"\0", 1)[0].decode("utf-8", "replace")
        offset = _pad8(offset + name_size)
        # a bad L1 offset or size is reported by check and refused where the snapshot is used (qemu does the same)
        if len(extra) >= C.SNAPSHOT_EXTRA_SIZE:
            vm_state_size, disk_size, icount = _EXTRA.unpack_from(extra)
        else:
            padded = extra + bytes(C.SNAPSHOT_EXTRA_SIZE - len(extra))
            vm_state_size, disk_size, icount = _EXTRA.unpack(padded)
            vm_state_size = vm_state_size if len(extra) >= 8 else vm_state_size_small
            disk_size = disk_size if len(extra) >= 16 else virtual_size
            icount = icount if len(extra) >= 24 else -1
        sn = Snapshot(id_str, name, l1_table_offset, l1_size, date_sec, date_nsec, vm_clock_nsec, vm_state_size,
                      disk_size, icount, extra[C.SNAPSHOT_EXTRA_SIZE:], extra_data_size)
        sn.entry_offset = table_offset + start  # where it was read, for messages
        out.append(sn)
    return out, offset


def build_snapshot_table(snapshots: typing.Iterable[Snapshot]) -> bytes:
    decl = declarations()
    parts = []
    for sn in snapshots:
        id_raw = sn.id_str.encode("utf-8")
        name_raw = sn.name.encode("utf-8")
        extra = decl.SNAPSHOT_EXTRA.build({"vm_state_size_large": sn.vm_state_size, "disk_size": sn.disk_size,
                                           "icount": sn.icount}) + sn.extra_unknown
        entry = decl.SNAPSHOT_HEADER.build({
            "l1_table_offset": sn.l1_table_offset, "l1_size": sn.l1_size,
            "id_str_size": len(id_raw), "name_size": len(name_raw),
            "date_sec": sn.date_sec, "date_nsec": sn.date_nsec, "vm_clock_nsec": sn.vm_clock_nsec,
            "vm_state_size": sn.vm_state_size if sn.vm_state_size <= 0xFFFFFFFF else 0,
            "extra_data_size": len(extra),
        }) + extra + id_raw + name_raw
        parts.append(entry + bytes(_pad8(len(entry)) - len(entry)))
    return b"".join(parts)


def _table_buffer(img: Qcow2Image) -> _GrowingBuffer:
    offset = img.header.snapshots_offset
    return _GrowingBuffer(lambda n, off: img.file.pread(n, offset + off), C.MAX_SNAPSHOTS_TABLE_BYTES)


def read_snapshot_table(img: Qcow2Image) -> list[Snapshot]:
    hdr = img.header
    if not hdr.nb_snapshots:
        img.snapshot_table_bytes = 0
        return []
    snaps, length = parse_snapshot_table(_table_buffer(img), hdr.nb_snapshots, img.geo.cluster_size, img.size, img.path,
                                         hdr.snapshots_offset)
    img.snapshot_table_bytes = length
    return snaps


def check_snapshot_table(img: Qcow2Image) -> None:
    """What qemu refuses an image for when it reads the snapshot table on open (the entries are built on demand)."""
    hdr = img.header
    if hdr.nb_snapshots and img.snapshots_cache is None:
        snapshot_table_length(_table_buffer(img), hdr.nb_snapshots, img.path, hdr.snapshots_offset)


def snapshot_table_size(img: Qcow2Image) -> int:
    img.snapshot_list()
    return img.snapshot_table_bytes
