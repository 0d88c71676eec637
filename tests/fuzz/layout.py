"""Where the fields of a qcow2 image live, found with plain struct reads (independent of the engine).

The mutator uses this map to hit header fields, extension records, L1/L2 and refcount entries, the
snapshot table and the bitmap directory precisely. Parsing is best effort: a seed is a valid image,
but the same code also maps images that earlier mutations already damaged.
"""

from __future__ import annotations

import struct

HEADER_FIELDS = (
    # name, offset, width, kind
    ('version', 4, 4, 'count'),
    ('backing_file_offset', 8, 8, 'offset'),
    ('backing_file_size', 16, 4, 'count'),
    ('cluster_bits', 20, 4, 'bits'),
    ('size', 24, 8, 'size'),
    ('crypt_method', 32, 4, 'count'),
    ('l1_size', 36, 4, 'count'),
    ('l1_table_offset', 40, 8, 'offset'),
    ('refcount_table_offset', 48, 8, 'offset'),
    ('refcount_table_clusters', 56, 4, 'count'),
    ('nb_snapshots', 60, 4, 'count'),
    ('snapshots_offset', 64, 8, 'offset'),
)
HEADER_V3_FIELDS = (
    ('incompatible_features', 72, 8, 'flags'),
    ('compatible_features', 80, 8, 'flags'),
    ('autoclear_features', 88, 8, 'flags'),
    ('refcount_order', 96, 4, 'bits'),
    ('header_length', 100, 4, 'count'),
    ('compression_type', 104, 1, 'count'),
)
SNAPSHOT_FIELDS = (
    ('l1_table_offset', 0, 8, 'offset'), ('l1_size', 8, 4, 'count'), ('id_str_size', 12, 2, 'count'),
    ('name_size', 14, 2, 'count'), ('date_sec', 16, 4, 'count'), ('vm_state_size', 32, 4, 'count'),
    ('extra_data_size', 36, 4, 'count'), ('vm_state_size_large', 40, 8, 'size'), ('disk_size', 48, 8, 'size'),
    ('icount', 56, 8, 'size'),
)
BITMAP_DIR_FIELDS = (
    ('bitmap_table_offset', 0, 8, 'offset'), ('bitmap_table_size', 8, 4, 'count'), ('flags', 12, 4, 'flags'),
    ('type', 16, 1, 'count'), ('granularity_bits', 17, 1, 'bits'), ('name_size', 18, 2, 'count'),
    ('extra_data_size', 20, 4, 'count'),
)
EXT_BITMAPS = 0x23852875
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441
OFFSET_MASK = 0x00FFFFFFFFFFFE00
MAX_ENTRIES_PER_TABLE = 4096  # fields recorded per table: enough targets, bounded mapping time


class Field:
    __slots__ = ('name', 'offset', 'width', 'kind')

    def __init__(self, name, offset, width, kind):
        self.name, self.offset, self.width, self.kind = name, offset, width, kind

    def read(self, data):
        return int.from_bytes(bytes(data[self.offset:self.offset + self.width]).ljust(self.width, b'\0'), 'big')

    def __repr__(self):
        return 'Field(%s@%d/%d)' % (self.name, self.offset, self.width)


class Layout:
    """Fields by group ('header', 'ext', 'l1', 'l2', 'reftable', 'refblock', 'snapshot', 'bitmap', ...)."""

    def __init__(self, data):
        self.data = data
        self.groups = {}
        self.regions = []  # (group, offset, length) of metadata areas, for byte flips
        self.extensions = []  # (record offset, type, length)
        self.ext_area = (0, 0)  # (start, end) of the extension area
        self.metadata_offsets = set()  # host offsets of metadata clusters, used as cross-link targets
        self.compressed = []  # (offset, length) of compressed data
        self.cluster_bits = 16
        self.version = 0
        self.header_length = 72
        self.backing = (0, 0)
        self.l2_kinds = {}  # 'normal', 'zero_plain', 'zero_alloc', 'compressed', 'unallocated', 'subclusters' -> [Field]
        try:
            self._parse()
        except (struct.error, ValueError, IndexError, OverflowError, MemoryError):
            pass  # a damaged image maps partly
        self.data = None  # the map keeps positions, not the bytes

    @property
    def cluster_size(self):
        return 1 << self.cluster_bits

    def add(self, group, name, offset, width, kind):
        if 0 <= offset and offset + width <= len(self.data):
            self.groups.setdefault(group, []).append(Field(name, offset, width, kind))

    def region(self, group, offset, length):
        if 0 <= offset < len(self.data) and length > 0:
            self.regions.append((group, offset, min(length, len(self.data) - offset)))
            self.metadata_offsets.add(offset)

    def _u(self, offset, width):
        raw = bytes(self.data[offset:offset + width])
        if len(raw) < width:
            raise ValueError('short read')
        return int.from_bytes(raw, 'big')

    def _parse(self):
        data = self.data
        if len(data) < 72 or bytes(data[:4]) != b'QFI\xfb':
            self.region('header', 0, min(len(data), 512))
            return
        for name, off, width, kind in HEADER_FIELDS:
            self.add('header', name, off, width, kind)
        self.version = self._u(4, 4)
        cb = self._u(20, 4)
        if not 9 <= cb <= 21:
            self.region('header', 0, 512)
            return
        self.cluster_bits = cb
        cs = 1 << cb
        refcount_order = 4
        hlen = 72
        if self.version >= 3 and len(data) >= 104:
            for name, off, width, kind in HEADER_V3_FIELDS:
                self.add('header', name, off, width, kind)
            refcount_order = self._u(96, 4)
            hlen = self._u(100, 4)
        self.header_length = hlen
        self.region('header', 0, min(cs, 4096))
        bfo, bfs = self._u(8, 8), self._u(16, 4)
        self.backing = (bfo, bfs)
        end = bfo if bfo and bfo < cs else cs
        pos = hlen if hlen < cs else 72
        self.ext_area = (pos, end)
        bitmaps_ext = None
        while pos + 8 <= min(end, len(data)):
            etype, elen = self._u(pos, 4), self._u(pos + 4, 4)
            self.extensions.append((pos, etype, elen))
            self.add('ext', 'ext_type', pos, 4, 'exttype')
            self.add('ext', 'ext_length', pos + 4, 4, 'count')
            if etype == 0:
                break
            if etype == EXT_BITMAPS and elen == 24:
                bitmaps_ext = (self._u(pos + 8, 4), self._u(pos + 16, 8), self._u(pos + 24, 8))
                for name, o, w, k in (('nb_bitmaps', 8, 4, 'count'), ('reserved', 12, 4, 'count'),
                                      ('bitmap_directory_size', 16, 8, 'count'), ('bitmap_directory_offset', 24, 8, 'offset')):
                    self.add('ext', name, pos + o, w, k)
            elif etype == EXT_FEATURE_TABLE:
                for i in range(min(elen // 48, 64)):
                    self.add('ext', 'feature_type', pos + 8 + i * 48, 1, 'count')
                    self.add('ext', 'feature_bit', pos + 9 + i * 48, 1, 'bits')
            pos += 8 + ((elen + 7) & ~7)
        # L1 and L2
        l1_size, l1_off = self._u(36, 4), self._u(40, 8)
        l2_tables = self._table('l1', l1_off, min(l1_size, 1 << 16), 'l1entry')
        ext_l2 = self.version >= 3 and self._u(72, 8) & 16
        for l2 in sorted(l2_tables)[:64]:
            self._l2(l2, cs, ext_l2)
        # refcounts
        rt_off, rt_clusters = self._u(48, 8), self._u(56, 4)
        blocks = self._table('reftable', rt_off, min(rt_clusters * cs // 8, 1 << 16), 'refentry', mask=~0x1FF)
        width = max(1, (1 << refcount_order) // 8) if refcount_order <= 6 else 2
        for blk in sorted(blocks)[:32]:
            self.region('refblock', blk, cs)
            self._entries('refblock', blk, cs // width, width, 'refcount')
        # snapshots
        nb, sn_off = self._u(60, 4), self._u(64, 8)
        pos = sn_off
        for _i in range(min(nb, 64)):
            if pos + 40 > len(data) or not sn_off:
                break
            for name, o, w, k in SNAPSHOT_FIELDS:
                self.add('snapshot', 'sn_' + name, pos + o, w, k)
            l1o, l1s = self._u(pos, 8), self._u(pos + 8, 4)
            extra = self._u(pos + 36, 4)
            length = 40 + extra + self._u(pos + 12, 2) + self._u(pos + 14, 2)
            self.region('snapshot', pos, length)
            for l2 in sorted(self._table('snapshot_l1', l1o, min(l1s, 1 << 16), 'l1entry'))[:16]:
                self._l2(l2, cs, ext_l2)
            pos += (length + 7) & ~7
        # bitmaps
        if bitmaps_ext:
            nbm, dsize, doff = bitmaps_ext
            self.region('bitmap', doff, dsize)
            pos = doff
            for _i in range(min(nbm, 64)):
                if pos + 24 > len(data) or pos + 24 > doff + dsize:
                    break
                for name, o, w, k in BITMAP_DIR_FIELDS:
                    self.add('bitmap', 'bm_' + name, pos + o, w, k)
                toff, tsize = self._u(pos, 8), self._u(pos + 8, 4)
                for cl in sorted(self._table('bitmap_table', toff, min(tsize, 1 << 16), 'bmentry'))[:16]:
                    self.region('bitmap_data', cl, cs)
                pos += (24 + self._u(pos + 20, 4) + self._u(pos + 18, 2) + 7) & ~7

    def _note_l2(self, kind, name, offset, field_kind):
        fields = self.l2_kinds.setdefault(kind, [])
        if len(fields) < 64:
            fields.append(Field(name, offset, 8, field_kind))

    def _entries(self, group, offset, count, width, kind):
        zeros = 0
        for i in range(min(count, MAX_ENTRIES_PER_TABLE)):
            at = offset + i * width
            if at + width > len(self.data):
                break
            value = self._u(at, width)
            if value or zeros < 8:
                self.add(group, '%s[%d]' % (group, i), at, width, kind)
                zeros += not value

    def _table(self, group, offset, entries, kind, mask=OFFSET_MASK):
        """Record a table of 64-bit entries; returns the set of host offsets its entries point at."""
        if not offset or offset >= len(self.data) or not entries:
            return set()
        self.region(group, offset, entries * 8)
        targets = set()
        n = min(entries, (len(self.data) - offset) // 8)
        zeros = 0
        for i in range(n):
            value = self._u(offset + i * 8, 8)
            if value or zeros < 8:
                self.add(group, '%s[%d]' % (group, i), offset + i * 8, 8, kind)
                zeros += not value
            if value & mask & OFFSET_MASK:
                targets.add(value & mask & OFFSET_MASK)
        return targets

    def _l2(self, offset, cs, ext_l2):
        if offset >= len(self.data):
            return
        self.region('l2', offset, cs)
        words = 2 if ext_l2 else 1
        entries = cs // (8 * words)
        shift = 62 - (self.cluster_bits - 8)
        zeros = 0
        for i in range(min(entries, MAX_ENTRIES_PER_TABLE)):
            at = offset + i * 8 * words
            if at + 8 * words > len(self.data):
                break
            value = self._u(at, 8)
            if value or zeros < 8:
                self.add('l2', 'l2[%d]' % i, at, 8, 'l2entry')
                if ext_l2:
                    self.add('l2', 'l2bitmap[%d]' % i, at + 8, 8, 'subclusters')
                zeros += not value
            self._note_l2(l2_kind(value, ext_l2), 'l2[%d]' % i, at, 'l2entry')
            if ext_l2 and self._u(at + 8, 8):
                self._note_l2('subclusters', 'l2bitmap[%d]' % i, at + 8, 'subclusters')
            if value & (1 << 62):
                host = value & ((1 << shift) - 1)
                sectors = ((value >> shift) & ((1 << (self.cluster_bits - 8)) - 1)) + 1
                self.compressed.append((host, sectors * 512 - (host & 511)))
            elif value & OFFSET_MASK:
                self.metadata_offsets.add(value & OFFSET_MASK)


def l2_kind(entry, ext_l2):
    """qcow2_get_cluster_type() of an L2 entry, by name (extended L2: the first word only)."""
    if entry & (1 << 62):
        return 'compressed'
    if entry & 1 and not ext_l2:
        return 'zero_alloc' if entry & OFFSET_MASK else 'zero_plain'
    return 'normal' if entry & OFFSET_MASK else 'unallocated'
