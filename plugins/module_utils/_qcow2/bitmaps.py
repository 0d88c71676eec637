# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Persistent dirty bitmaps (qcow2 bitmaps extension): whether each bitmap can be trusted, and keeping enabled
bitmaps true when the engine writes guest data.

assess() is the one place that decides whether a bitmap is trusted, with qemu's rules (qcow2-bitmap.c,
bitmap_list_load, check_dir_entry, load_bitmap): a directory or bitmap that breaks qemu's constraints makes
qemu refuse to open the whole image, and the engine refuses it too (``BitmapAssessment.refusal``); a
bitmap flagged in_use was not saved by its last writer, so qemu loads it as inconsistent: the engine
reports it untrusted and never uses or rewrites it; a bitmaps extension without its autoclear bit was
left stale by a program without bitmap support, and qemu ignores it. Every path that reads, updates,
grows or counts bitmaps goes through assess().

Chosen behaviour (as qemu does for a read-write open): before the first guest write, every trusted enabled
('auto') bitmap is flagged in_use on disk; the written ranges are recorded; when the image is closed
the bits are set in the bitmap data and in_use is cleared. A crash in between leaves the bitmaps
flagged in_use, which qemu treats as inconsistent: an incremental backup then starts over instead of
silently missing changes. Disabled bitmaps are left untouched, as qemu leaves them.
"""

from __future__ import annotations

import contextlib
import functools
import typing

from . import constants as C
from .deps import load_construct
from .errors import FormatError
from .layout import array_to_be, be_array

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from array import array

    from .chain import Image
    from .image import Qcow2Image


@functools.lru_cache(maxsize=None)
def dir_entry() -> typing.Any:
    """The directory entry's construct declaration, made (and construct imported) when a directory is first read:
    most images have none."""
    load_construct()
    from construct import Int8ub, Int16ub, Int32ub, Int64ub, Struct

    return Struct(
        "bitmap_table_offset" / Int64ub,
        "bitmap_table_size" / Int32ub,
        "flags" / Int32ub,
        "type" / Int8ub,
        "granularity_bits" / Int8ub,
        "name_size" / Int16ub,
        "extra_data_size" / Int32ub,
    )


DIR_ENTRY_FIXED = 24
MAX_TABLE_ENTRIES = 0x8000000  # qemu's BME_MAX_TABLE_SIZE
MAX_PHYS_SIZE = 0x20000000  # qemu's BME_MAX_PHYS_SIZE: at most 512 MiB of bitmap data (table_size * cluster_size)
MIN_GRANULARITY_BITS = 9
MAX_GRANULARITY_BITS = 31
TABLE_ENTRY_RESERVED_MASK = 0xFF000000000001FE
BITMAP_FLAG_NAMES = ((C.BITMAP_IN_USE, "in-use"), (C.BITMAP_AUTO, "auto"))

TRUSTED = "trusted"
IN_USE = "in-use"
INVALID = "invalid"


class Bitmap:
    def __init__(self, entry_offset: int, table_offset: int, table_size: int, flags: int, btype: int, granularity_bits: int,
                 name: str, extra: bytes) -> None:
        self.entry_offset = entry_offset  # byte offset of the entry inside the directory
        self.table_offset = table_offset
        self.table_size = table_size
        self.flags = flags
        self.type = btype
        self.granularity_bits = granularity_bits
        self.name = name
        self.extra = extra

    @property
    def granularity(self) -> int:
        return 1 << self.granularity_bits

    @property
    def enabled(self) -> bool:
        return bool(self.flags & C.BITMAP_AUTO)

    def flag_names(self) -> list[str]:
        return [name for bit, name in BITMAP_FLAG_NAMES if self.flags & bit]


class BitmapTrust:
    """The verdict on one bitmap: ``state`` TRUSTED, IN_USE (inconsistent: its bits may miss writes) or INVALID
    (it breaks qemu's constraints), and ``reason``, a sentence saying why it is not trusted."""

    __slots__ = ("bitmap", "state", "reason")

    def __init__(self, bitmap: Bitmap, state: str, reason: str | None = None) -> None:
        self.bitmap = bitmap
        self.state = state
        self.reason = reason

    @property
    def trusted(self) -> bool:
        return self.state == TRUSTED

    def __repr__(self) -> str:
        return "BitmapTrust(%r, %s%s)" % (self.bitmap.name, self.state, ", %s" % self.reason if self.reason else "")


class BitmapAssessment:
    """The verdicts on every bitmap of an image, in directory order.

    ``refusal`` is the FormatError qemu refuses the whole image with (a broken directory, a bitmap breaking
    the constraints), or None; ``stale`` says the extension lost its autoclear bit, so that qemu ignores it
    and every bitmap in it is inconsistent (none is listed then)."""

    def __init__(self, verdicts: typing.Iterable[BitmapTrust] = (), refusal: FormatError | None = None, stale: bool = False) -> None:
        self.verdicts = list(verdicts)
        self.refusal = refusal
        self.stale = stale

    def loaded(self) -> list[Bitmap]:
        """The bitmaps qemu loads when it opens the image: trusted and in-use ones."""
        return [v.bitmap for v in self.verdicts if v.state != INVALID]

    def trusted(self) -> list[Bitmap]:
        return [v.bitmap for v in self.verdicts if v.trusted]


def assess(img: Qcow2Image) -> BitmapAssessment:
    """Read the bitmap directory and tables and judge every bitmap as qemu does when it opens the image."""
    hdr = img.header
    ext = hdr.bitmaps_ext
    if not ext:
        return BitmapAssessment()
    if not hdr.autoclear_features & C.AUTOCLEAR_BITMAPS:
        return BitmapAssessment(stale=True)
    return _Assessor(img, ext).run()


class _Assessor:
    def __init__(self, img: Qcow2Image, ext: dict[str, int]) -> None:
        self.img = img
        self.dir_offset = ext["bitmap_directory_offset"]
        self.dir_size = ext["bitmap_directory_size"]
        self.nb = ext["nb_bitmaps"]
        self.verdicts = []

    def refuse(self, message: str, where: str | None = None, bitmap: Bitmap | None = None) -> BitmapAssessment:
        if bitmap is not None:
            self.verdicts.append(BitmapTrust(bitmap, INVALID, message))
        if where is not None:
            message = "%s (%s)" % (message, where)
        err = FormatError(message, self.img.path, "bitmap directory")
        return BitmapAssessment(self.verdicts, err)

    def entry_at(self, index: int, pos: int) -> str:
        return "bitmap directory entry %d at offset %#x" % (index, self.dir_offset + pos)

    def run(self) -> BitmapAssessment:
        if self.dir_size == 0:
            return self.refuse("Requested bitmap directory size is zero", "bitmaps extension")
        raw = self.img.file.pread(self.dir_size, self.dir_offset)
        raw += bytes(self.dir_size - len(raw))  # past the end of the file qemu reads zeros
        bitmaps = []
        pos = 0
        while pos < self.dir_size:  # qemu walks the directory by its size, then compares the count
            where = self.entry_at(len(bitmaps), pos)
            if pos + DIR_ENTRY_FIXED > self.dir_size:
                return self.refuse("Broken bitmap directory: the entry is cut off by the end of the directory", where)
            if len(bitmaps) + 1 > self.nb:
                return self.refuse("More bitmaps found than specified in header extension (%d)" % self.nb, where)
            e = dir_entry().parse(raw[pos:pos + DIR_ENTRY_FIXED])
            end = pos + DIR_ENTRY_FIXED + e.extra_data_size + e.name_size
            if (end + 7) & ~7 > self.dir_size:
                return self.refuse("Broken bitmap directory: the entry overruns the directory", where)
            name = bytes(raw[end - e.name_size:end]).split(b"\0", 1)[0].decode("utf-8", "replace")
            bitmap = Bitmap(pos, e.bitmap_table_offset, e.bitmap_table_size, e.flags, e.type, e.granularity_bits,
                            name, bytes(raw[pos + DIR_ENTRY_FIXED:end - e.name_size]))
            if e.extra_data_size:
                return self.refuse("Bitmap extra data is not supported", where, bitmap)
            reason = self.constraint_violation(bitmap, e.name_size)
            if reason:
                return self.refuse("Bitmap '%s' doesn't satisfy the constraints: %s" % (name, reason), where, bitmap)
            bitmaps.append(bitmap)
            pos = (end + 7) & ~7
        if len(bitmaps) != self.nb:
            return self.refuse("Less bitmaps found than specified in header extension (%d found, %d specified)"
                               % (len(bitmaps), self.nb), "bitmap directory at offset %#x" % self.dir_offset)
        names = set()
        for index, bitmap in enumerate(bitmaps):
            where = self.entry_at(index, bitmap.entry_offset)
            if bitmap.name in names:
                return self.refuse("Bitmap already exists: %s" % bitmap.name, where, bitmap)
            names.add(bitmap.name)
            if bitmap.flags & C.BITMAP_IN_USE:
                self.verdicts.append(BitmapTrust(bitmap, IN_USE, "flagged in use: the program that last wrote the "
                                                 "image did not save it, so it may miss writes (qemu: inconsistent)"))
                continue
            problem = self.table_problem(bitmap)
            if problem:
                return self.refuse("Could not read bitmap '%s' from image: %s" % (bitmap.name, problem), where, bitmap)
            self.verdicts.append(BitmapTrust(bitmap, TRUSTED))
        return BitmapAssessment(self.verdicts)

    def constraint_violation(self, b: Bitmap, name_size: int) -> str | None:
        """check_dir_entry(): why qemu refuses the entry, or None."""
        cs = self.img.geo.cluster_size
        if b.table_size == 0:
            return "its table has no entries"
        if b.table_offset == 0 or b.table_offset % cs:
            return "table offset %#x is not a non-zero multiple of the cluster size" % b.table_offset
        if b.table_size > MAX_TABLE_ENTRIES:
            return "table of %d entries (at most %d)" % (b.table_size, MAX_TABLE_ENTRIES)
        if not MIN_GRANULARITY_BITS <= b.granularity_bits <= MAX_GRANULARITY_BITS:
            return "granularity 2^%d (2^%d to 2^%d)" % (b.granularity_bits, MIN_GRANULARITY_BITS, MAX_GRANULARITY_BITS)
        if b.flags & C.BITMAP_RESERVED_FLAGS:
            return "unknown flags %#x" % (b.flags & C.BITMAP_RESERVED_FLAGS)
        if name_size > C.MAX_BITMAP_NAME:
            return "name of %d bytes (at most %d)" % (name_size, C.MAX_BITMAP_NAME)
        if b.type != C.BITMAP_TYPE_DIRTY_TRACKING:
            return "type %d (only dirty tracking, 1, is known)" % b.type
        phys = b.table_size * cs
        if phys > MAX_PHYS_SIZE:
            return "its table describes %d bytes of bitmap data (at most %d)" % (phys, MAX_PHYS_SIZE)
        if not b.flags & C.BITMAP_IN_USE and self.img.size > (phys * 8) << b.granularity_bits:
            return "its table covers %d bytes, less than the virtual size %d" % ((phys * 8) << b.granularity_bits,
                                                                                 self.img.size)
        return None

    def table_problem(self, b: Bitmap) -> str | None:
        """load_bitmap(): the table must have exactly the entries the virtual size needs, each one valid."""
        cs = self.img.geo.cluster_size
        needed = -(-(-(-self.img.size // b.granularity)) // (8 * cs))
        if needed != b.table_size:
            return "its table has %d entries, the virtual size needs %d" % (b.table_size, needed)
        bad = invalid_table_entry(read_table(self.img, b), cs)
        if bad is not None:
            index, entry = bad
            return "bitmap table entry %d (%#018x, at offset %#x) is invalid" % (index, entry, b.table_offset + 8 * index)
        return None


def invalid_table_entry(table: typing.Iterable[int], cluster_size: int) -> tuple[int, int] | None:
    """(index, entry) of the first entry qemu's check_table_entry() rejects, or None."""
    for index, entry in enumerate(table):
        if not entry:
            continue
        offset = entry & C.BME_TABLE_ENTRY_OFFSET_MASK
        if entry & TABLE_ENTRY_RESERVED_MASK or (offset and (entry & C.BME_TABLE_ENTRY_FLAG_ALL_ONES
                                                             or offset % cluster_size)):
            return index, entry
    return None


def read_table(img: Qcow2Image, bitmap: Bitmap) -> array:
    raw = img.file.pread(bitmap.table_size * 8, bitmap.table_offset)
    raw += bytes(bitmap.table_size * 8 - len(raw))
    return be_array(raw)


class BitmapTracker:
    """Records guest writes and sets them in the enabled bitmaps when the image closes."""

    def __init__(self, img: Qcow2Image, assessment: BitmapAssessment) -> None:
        self.img = img
        self.bitmaps = [b for b in assessment.trusted() if b.enabled]
        self.ranges = []
        self.marked_in_use = False

    def mark_dirty(self, offset: int, length: int) -> None:
        if not self.bitmaps or not length:
            return
        if not self.marked_in_use:
            self._set_in_use(True)
            self.marked_in_use = True
        if self.ranges and self.ranges[-1][1] >= offset and self.ranges[-1][0] <= offset:
            self.ranges[-1] = (self.ranges[-1][0], max(self.ranges[-1][1], offset + length))
        else:
            self.ranges.append((offset, offset + length))

    def _set_in_use(self, in_use: bool) -> None:
        img = self.img
        dir_offset = img.header.bitmaps_ext["bitmap_directory_offset"]
        for b in self.bitmaps:
            b.flags = (b.flags | C.BITMAP_IN_USE) if in_use else (b.flags & ~C.BITMAP_IN_USE)
            img.file.pwrite(b.flags.to_bytes(4, "big"), dir_offset + b.entry_offset + 12)
        img.file.flush()

    def finish(self) -> None:
        """Write the recorded ranges into the bitmaps, then clear in_use."""
        if not self.marked_in_use:
            return
        from .bitmap_bits import BitmapBits
        img = self.img
        for b in self.bitmaps:
            table = read_table(img, b)
            bits = BitmapBits(img, b, table)
            for start, end in self.ranges:
                bits.set_range(start, end)
            new_clusters = [i for i in bits.changed if not table[i] & C.BME_TABLE_ENTRY_OFFSET_MASK]
            for index in new_clusters:
                table[index] = img.refcounts.alloc(1) << img.geo.cluster_bits
            for index, data in bits.changed.items():
                img.file.pwrite(bytes(data), table[index] & C.BME_TABLE_ENTRY_OFFSET_MASK)
            if new_clusters:
                img.flush()  # data and refcounts on disk before the table points at the new clusters
                img.file.pwrite(array_to_be(table), b.table_offset)
            img.file.flush()
        self._set_in_use(False)
        self.marked_in_use = False
        self.ranges = []


@contextlib.contextmanager
def recorded_writes(img: Image, ranges: typing.Iterable[tuple[int, int]] = ()) -> typing.Iterator[typing.Optional[typing.Callable[[int, int], None]]]:
    """Record ranges [(start, end)] as written in img's enabled bitmaps, then let the writes inside the block go
    unrecorded; yields record(start, end) for more ranges found on the way, or None when img has no enabled bitmap
    (so the caller can skip working out what to record). For copies that write whole clusters
    around what they change, where qemu's writes (and so its dirty bits) cover only what changes (commit: what the
    layers above hold, per copy-job granule; rebase: the sectors that differ)."""
    tracker = img.bitmaps if img.format_name == "qcow2" else None
    if tracker is None:
        yield None
        return

    def record(start: int, end: int) -> None:
        tracker.mark_dirty(start, end - start)

    for start, end in ranges:
        record(start, end)
    img.bitmaps = None
    try:
        yield record
    finally:
        img.bitmaps = tracker
