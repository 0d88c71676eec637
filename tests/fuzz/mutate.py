"""Structure-aware mutations of qcow2 images, driven by a Draw (random.Random or hypothesis).

A mutation knows where fields live (layout.Layout) and sets them to values that sit on qemu's limits
or point at other metadata; others flip bytes inside metadata regions or anywhere, rewrite header
extensions and backing names (json:, protocols, NUL bytes, overlong, non-UTF-8, escaping paths,
loops), truncate or extend the file, or copy one metadata cluster over another.
"""

from __future__ import annotations

import struct

from ansible_collections.backingchain.qcow2.tests.fuzz.layout import (
    EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO, EXT_DATA_FILE, EXT_FEATURE_TABLE, Layout)

COPIED = 1 << 63
COMPRESSED = 1 << 62


class RandomDraw:
    """Choices from a seeded random.Random: case N of a run is reproducible from its seed."""

    def __init__(self, rng):
        self.rng = rng

    def int(self, lo, hi):
        return self.rng.randint(lo, hi)

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def bytes(self, n):
        return self.rng.getrandbits(8 * n).to_bytes(n, 'big') if n else b''

    def bool(self, p=0.5):
        return self.rng.random() < p


class HypothesisDraw:
    """The same choices from hypothesis' st.data(), so hypothesis can shrink a failing case."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self.data = data
        self.st = st

    def int(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def bytes(self, n):
        return self.data.draw(self.st.binary(min_size=n, max_size=n))

    def bool(self, p=0.5):
        return self.data.draw(self.st.booleans())


def weighted(draw, table):
    """table: ((weight, value), ...)."""
    total = sum(w for w, _v in table)
    n = draw.int(0, total - 1)
    for w, v in table:
        if n < w:
            return v
        n -= w
    return table[-1][1]


# ---- names a hostile image may carry -----------------------------------------------------------
BACKING_NAMES = (
    b'base.qcow2', b'base.raw', b'./base.qcow2', b'mid.qcow2', b'../inner/base.qcow2', b'top.qcow2', b'./top.qcow2',
    b'../inner/top.qcow2', b'json:{"file.driver":"file","file.filename":"base.qcow2"}', b'json:{}', b'file:base.qcow2',
    b'nbd://127.0.0.1:1/x', b'host_device:/dev/sda', b'a:b/c', b'c:\\base', b'base.qcow2\0junk', b'\0',
    b'\xff\xfebase', b'b\xc3(ase', b'A' * 1023, b'A' * 1024, b'B' * 4000, b'../outside.raw', b'../../outside.raw',
    b'sub/../../outside.raw', b'/nonexistent/base.qcow2', b'', b' ', b'.', b'..', b'/', b'missing.qcow2',
    b'base.qcow2/', b'b\xc3\xa4se.qcow2', b'data.raw', b'/dev/null', b'outside.raw',
)
FORMAT_NAMES = (b'qcow2', b'raw', b'vmdk', b'qcow', b'', b'qcow2\0', b'x' * 15, b'x' * 16, b'x' * 200, b'\xffraw',
                b'file', b'json', b'QCOW2', b'raw ')
DATA_FILE_NAMES = (b'data.raw', b'../outside.raw', b'json:{}', b'missing.raw', b'top.qcow2', b'', b'file:data.raw',
                   b'data.raw\0x', b'\xff', b'.', b'C' * 2000)
KNOWN_EXT_TYPES = (0, EXT_BACKING_FORMAT, EXT_FEATURE_TABLE, EXT_BITMAPS, EXT_CRYPTO, EXT_DATA_FILE, 0x12345678,
                   0xFFFFFFFF, 1)


class Case:
    """The files of one case being mutated, plus what was done to them."""

    def __init__(self, files, layouts):
        self.files = {name: bytearray(data) for name, data in files.items()}
        self.layouts = layouts  # name -> Layout of the seed (field positions barely move)
        self.log = []

    def qcow2_files(self):
        return [n for n in sorted(self.files) if n.endswith('.qcow2')]


def seed_layouts(files):
    return {name: Layout(bytes(data)) for name, data in files.items() if name.endswith('.qcow2')}


def mutate(case, draw, max_mutations=4):
    n = weighted(draw, ((6, 1), (4, 2), (2, 3), (1, max_mutations)))
    for _i in range(n):
        names = case.qcow2_files()
        name = 'top.qcow2' if len(names) == 1 or draw.bool(0.8) else draw.pick(names)
        op = weighted(draw, OPERATORS)
        desc = op(case, name, draw)
        if desc:
            case.log.append('%s: %s' % (name, desc))
    return case


# ---- values ------------------------------------------------------------------------------------
def _offsets_pool(case, name):
    lay = case.layouts[name]
    pool = sorted(lay.metadata_offsets | {o for o, _l in lay.compressed})
    return pool or [lay.cluster_size]


def interesting(case, name, field, draw):
    lay = case.layouts[name]
    data = case.files[name]
    cs = lay.cluster_size
    size = len(data)
    orig = field.read(data)
    kind = field.kind
    pool = _offsets_pool(case, name)
    meta = draw.pick(pool)
    if kind == 'offset':
        menu = (0, 1, 8, 511, 512, cs - 8, cs, cs + 512, 2 * cs, 3 * cs, size - cs, size, size + cs, 1 << 31,
                1 << 32, (1 << 56) - cs, 1 << 56, 1 << 62, 1 << 63, (1 << 64) - 1, (1 << 64) - cs, meta, meta,
                orig + cs, orig - cs, orig + 512)
    elif kind == 'count':
        menu = (0, 1, 2, 3, 7, 8, 15, 16, 63, 64, 255, 256, 1023, 1024, 1025, 4095, 4096, 65535, 65536, 65537,
                1 << 20, 1 << 22, (1 << 22) + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, orig + 1, orig - 1, orig * 2,
                orig * 8 + 1)
    elif kind == 'size':
        menu = (0, 1, 511, 512, cs, orig + 1, orig * 2, orig - cs, 1 << 31, 1 << 40, 1 << 50, 1 << 55, 1 << 62,
                (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -1)
    elif kind == 'bits':
        menu = (0, 1, 3, 4, 5, 6, 7, 8, 9, 12, 14, 16, 20, 21, 22, 30, 31, 32, 63, 64, 255, 1 << 31, 0xFFFFFFFF)
    elif kind == 'flags':
        bit = 1 << draw.int(0, 63)
        menu = (orig | bit, orig & ~bit, orig ^ bit, 0, (1 << 64) - 1, orig | 1, orig | 2, orig | 4, orig | 8,
                orig | 16, orig | 32)
    elif kind == 'exttype':
        menu = KNOWN_EXT_TYPES
    elif kind in ('l1entry', 'refentry', 'bmentry'):
        menu = (0, meta | COPIED, meta, orig ^ COPIED, orig | 0x1FF, orig | (1 << 56), orig + 512, size + cs | COPIED,
                (1 << 40) | COPIED, (1 << 56) - cs, field.offset - field.offset % cs | COPIED, cs | COPIED, 1, orig ^ 1,
                (1 << 64) - 1)
    elif kind == 'l2entry':
        shift = 62 - (lay.cluster_bits - 8)
        sectors = draw.int(0, (1 << (lay.cluster_bits - 8)) - 1)
        host = draw.pick(pool + [size - 100, size + cs, 1 << 40, (1 << shift) - 1, meta + draw.int(0, 1000)])
        menu = (0, 1, meta | COPIED, meta, meta | 1, orig ^ COPIED, orig ^ COMPRESSED, orig | 1, orig ^ 1, orig + 512,
                size + cs | COPIED, (1 << 56) | COPIED, orig | 0x3F00000000000000, COMPRESSED | (sectors << shift) | host,
                COMPRESSED | ((1 << shift) - 1) | (sectors << shift), COMPRESSED | COPIED | host, (1 << 64) - 1,
                cs | COPIED)
    elif kind == 'subclusters':
        bit = draw.int(0, 63)
        menu = (0, 0xFFFFFFFF, 0xFFFFFFFF << 32, (1 << 64) - 1, orig ^ (1 << bit), 1 | (1 << 32), 0x80000000,
                orig | (orig << 32))
    else:  # refcount
        menu = (0, 1, 2, orig + 1, orig - 1, (1 << (8 * field.width)) - 1, (1 << (8 * field.width)) - 2)
    return draw.pick(menu)


def _put(data, offset, width, value):
    value &= (1 << (8 * width)) - 1
    data[offset:offset + width] = value.to_bytes(width, 'big')


GROUP_WEIGHTS = {'header': 25, 'ext': 8, 'l1': 10, 'l2': 20, 'reftable': 8, 'refblock': 10, 'snapshot': 12,
                 'snapshot_l1': 4, 'bitmap': 12, 'bitmap_table': 6}


def _field(case, name, draw):
    groups = case.layouts[name].groups
    table = tuple((GROUP_WEIGHTS.get(g, 4), g) for g in sorted(groups))
    if not table:
        return None
    return draw.pick(groups[weighted(draw, table)])


# ---- operators -----------------------------------------------------------------------------------
def op_field_value(case, name, draw):
    field = _field(case, name, draw)
    if field is None:
        return op_random_flips(case, name, draw)
    value = interesting(case, name, field, draw)
    _put(case.files[name], field.offset, field.width, value)
    return '%s = %#x' % (field.name, value & ((1 << (8 * field.width)) - 1))


def op_field_bitflip(case, name, draw):
    field = _field(case, name, draw)
    if field is None:
        return op_random_flips(case, name, draw)
    bit = draw.int(0, 8 * field.width - 1)
    data = case.files[name]
    _put(data, field.offset, field.width, field.read(data) ^ (1 << bit))
    return '%s ^= bit %d' % (field.name, bit)


def op_field_arith(case, name, draw):
    field = _field(case, name, draw)
    if field is None:
        return op_random_flips(case, name, draw)
    delta = draw.pick((1, -1, 2, -2, 8, -8, 512, -512, 4096, -4096, 65536, -65536, 1 << 20))
    data = case.files[name]
    _put(data, field.offset, field.width, field.read(data) + delta)
    return '%s += %d' % (field.name, delta)


def op_feature_bits(case, name, draw):
    data = case.files[name]
    if len(data) < 104 or data[4:8] != b'\0\0\0\3':
        return op_field_value(case, name, draw)
    offset = draw.pick((72, 72, 72, 80, 88))
    bit = draw.pick((0, 1, 2, 3, 4, 5, 8, 31, 63)) if offset == 72 else draw.pick((0, 1, 2, 7, 63))
    value = int.from_bytes(data[offset:offset + 8], 'big') ^ (1 << bit)
    data[offset:offset + 8] = value.to_bytes(8, 'big')
    return 'feature word @%d ^= bit %d' % (offset, bit)


def op_region_flips(case, name, draw):
    regions = case.layouts[name].regions
    if not regions:
        return op_random_flips(case, name, draw)
    group, start, length = draw.pick(regions)
    data = case.files[name]
    count = draw.int(1, 8)
    for _i in range(count):
        at = start + draw.int(0, length - 1)
        if at < len(data):
            data[at] = draw.pick((0, 0xFF, data[at] ^ (1 << draw.int(0, 7)), draw.int(0, 255)))
    return '%d byte(s) changed in %s@%#x' % (count, group, start)


def op_random_flips(case, name, draw):
    data = case.files[name]
    if not data:
        return None
    count = draw.int(1, 16)
    limit = len(data) - 1 if draw.bool(0.5) else min(len(data), 4096) - 1
    for _i in range(count):
        at = draw.int(0, limit)
        data[at] ^= draw.int(1, 255)
    return '%d random byte(s) flipped' % count


def op_resize(case, name, draw):
    data = case.files[name]
    cs = case.layouts[name].cluster_size
    if draw.bool(0.6):
        cuts = [len(data) - cs, len(data) - 1, cs, 512, 72, 104, 0, draw.int(0, max(0, len(data) - 1))]
        cut = draw.pick(_offsets_pool(case, name) + cuts)
        cut = max(0, min(len(data), cut))
        del data[cut:]
        return 'truncated to %d bytes' % cut
    n = draw.pick((1, 511, cs, 2 * cs, draw.int(1, 3 * cs)))
    if draw.bool():
        noise = draw.bytes(64)
        data += (noise * (n // 64 + 1))[:n]
    else:
        data += bytes(n)
    return 'extended by %d bytes' % n


def op_copy_cluster(case, name, draw):
    lay = case.layouts[name]
    data = case.files[name]
    cs = lay.cluster_size
    pool = [o - o % cs for o in _offsets_pool(case, name) + [0]]
    src, dst = draw.pick(pool), draw.pick(pool)
    if src == dst or dst >= len(data):
        return None
    chunk = bytes(data[src:src + cs])
    data[dst:dst + len(chunk)] = chunk
    return 'cluster %#x copied over %#x' % (src, dst)


def op_compressed(case, name, draw):
    lay = case.layouts[name]
    if not lay.compressed:
        return op_field_value(case, name, draw)
    host, length = draw.pick(lay.compressed)
    data = case.files[name]
    how = draw.int(0, 3)
    end = min(len(data), host + length)
    if host >= end:
        return None
    if how == 0:
        data[host:end] = bytes(end - host)
    elif how == 1:
        noise = draw.bytes(32)
        data[host:end] = (noise * ((end - host) // 32 + 1))[:end - host]
    else:
        for _i in range(draw.int(1, 4)):
            at = draw.int(host, end - 1)
            data[at] ^= draw.int(1, 255)
    return 'compressed data @%#x damaged (%d)' % (host, how)


# ---- cluster 0 rebuilding: extensions and backing name ----------------------------------------
def _cluster0(data):
    """(fixed length, [(type, payload)], backing name, cluster size) of a (possibly damaged) header."""
    cb = int.from_bytes(data[20:24], 'big')
    cs = 1 << cb if 9 <= cb <= 21 else 65536
    version = int.from_bytes(data[4:8], 'big')
    fixed = 72
    if version >= 3 and len(data) >= 104:
        fixed = int.from_bytes(data[100:104], 'big')
        if not 104 <= fixed <= 4096:
            fixed = 112
    bfo, bfs = int.from_bytes(data[8:16], 'big'), int.from_bytes(data[16:20], 'big')
    end = bfo if 0 < bfo < cs else cs
    exts = []
    pos = fixed
    while pos + 8 <= min(end, len(data)) and len(exts) < 64:
        etype, elen = struct.unpack('>II', bytes(data[pos:pos + 8]))
        if etype == 0 or pos + 8 + elen > end:
            break
        exts.append((etype, bytes(data[pos + 8:pos + 8 + elen])))
        pos += 8 + ((elen + 7) & ~7)
    name = bytes(data[bfo:bfo + min(bfs, 65536)]) if 0 < bfo < len(data) else None
    old_end = min(cs, max(pos + 8, bfo + bfs if 0 < bfo < cs else 0))  # a garbage size must not grow the file
    return fixed, exts, name, cs, old_end


def _write_cluster0(data, fixed, exts, name, cs, old_end, end_marker=True):
    out = bytearray()
    for etype, payload in exts:
        out += struct.pack('>II', etype, len(payload)) + payload + bytes(((len(payload) + 7) & ~7) - len(payload))
    if end_marker:
        out += bytes(8)
    start = fixed
    if name is not None:
        bfo = start + len(out)
        out += name
        data[8:16] = bfo.to_bytes(8, 'big')
        data[16:20] = len(name).to_bytes(4, 'big')
    else:
        data[8:20] = bytes(12)
    blob = out[:max(0, cs - start)] if start + len(out) > cs and len(data) > cs else out
    clear_to = max(old_end, start + len(blob))
    if len(data) < clear_to:
        data += bytes(clear_to - len(data))
    data[start:clear_to] = bytes(blob) + bytes(clear_to - start - len(blob))


def op_backing(case, name, draw):
    data = case.files[name]
    if len(data) < 72:
        return None
    fixed, exts, _old, cs, old_end = _cluster0(data)
    new = draw.pick(BACKING_NAMES) if draw.bool(0.9) else None
    what = 'backing name %r' % (new[:40] if new else new)
    action = draw.int(0, 3)
    exts = [(t, p) for t, p in exts if t != EXT_BACKING_FORMAT or action == 0]
    if action in (1, 2):
        fmt = draw.pick(FORMAT_NAMES) if action == 1 else (b'raw' if new and new.endswith(b'.raw') else b'qcow2')
        exts.insert(0, (EXT_BACKING_FORMAT, fmt))
        what += ', format %r' % fmt
    elif action == 3:
        what += ', no format'
    _write_cluster0(data, fixed, exts, new, cs, old_end)
    return what


def _ext_payload(case, name, etype, draw):
    cs = case.layouts[name].cluster_size
    if etype == EXT_BITMAPS:
        meta = draw.pick(_offsets_pool(case, name))
        return struct.pack('>IIQQ', draw.pick((0, 1, 2, 3, 65535, 65536)), draw.pick((0, 0, 0, 1)),
                           draw.pick((0, 24, 32, 48, 4096, 1024 * 65535, 1024 * 65536, 1 << 40)),
                           draw.pick((meta, meta - meta % cs, cs, 0, 1 << 56, cs + 8)))
    if etype == EXT_BACKING_FORMAT:
        return draw.pick(FORMAT_NAMES)
    if etype == EXT_DATA_FILE:
        return draw.pick(DATA_FILE_NAMES)
    if etype == EXT_CRYPTO:
        return struct.pack('>QQ', draw.pick((cs, 0, 1 << 40, 7)), draw.pick((592, 0, cs, 1 << 40)))[:draw.pick((16, 16, 8))]
    if etype == EXT_FEATURE_TABLE:
        return draw.bytes(48) * draw.int(0, 3) + draw.bytes(draw.pick((0, 0, 5)))
    return draw.bytes(draw.pick((0, 1, 8, 24, 100)))


def op_extension(case, name, draw):
    data = case.files[name]
    if len(data) < 72:
        return None
    fixed, exts, backing, cs, old_end = _cluster0(data)
    how = draw.int(0, 5)
    if how <= 1 or not exts:
        etype = draw.pick(KNOWN_EXT_TYPES[1:])
        payload = _ext_payload(case, name, etype, draw)
        exts.insert(draw.int(0, len(exts)), (etype, payload))
        what = 'added extension %#x (%d bytes)' % (etype, len(payload))
    elif how == 2:
        i = draw.int(0, len(exts) - 1)
        exts.append(exts[i])
        what = 'duplicated extension %#x' % exts[i][0]
    elif how == 3:
        i = draw.int(0, len(exts) - 1)
        what = 'removed extension %#x' % exts[i][0]
        del exts[i]
    elif how == 4:
        i = draw.int(0, len(exts) - 1)
        etype = exts[i][0]
        exts[i] = (etype, _ext_payload(case, name, etype, draw))
        what = 'replaced payload of extension %#x' % etype
    else:
        _write_cluster0(data, fixed, exts, backing, cs, old_end, end_marker=False)
        end = fixed + sum(8 + ((len(p) + 7) & ~7) for _t, p in exts)
        if end + 8 <= len(data):
            data[end:end + 8] = draw.bytes(8)
        return 'end marker replaced'
    _write_cluster0(data, fixed, exts, backing, cs, old_end)
    return what


def op_data_file(case, name, draw):
    data = case.files[name]
    if len(data) < 104 or data[4:8] != b'\0\0\0\3':
        return op_backing(case, name, draw)
    fixed, exts, backing, cs, old_end = _cluster0(data)
    exts = [(t, p) for t, p in exts if t != EXT_DATA_FILE]
    fname = draw.pick(DATA_FILE_NAMES)
    if draw.bool(0.8):
        exts.append((EXT_DATA_FILE, fname))
    incompat = int.from_bytes(data[72:80], 'big')
    incompat = incompat | 4 if draw.bool(0.8) else incompat & ~4
    data[72:80] = incompat.to_bytes(8, 'big')
    if draw.bool(0.3):
        data[88:96] = (int.from_bytes(data[88:96], 'big') ^ 2).to_bytes(8, 'big')
    _write_cluster0(data, fixed, exts, backing, cs, old_end)
    return 'data file %r, incompatible %#x' % (fname[:40], incompat)


def op_geometry(case, name, draw):
    """A huge virtual size with an L1 large enough for it: the L1 then runs over whatever follows it."""
    data = case.files[name]
    if len(data) < 72:
        return None
    lay = case.layouts[name]
    cb = lay.cluster_bits
    l2_bits = cb - 3
    size = draw.pick((1 << 30, 1 << 40, 1 << 47, (1 << 22) << (cb + l2_bits), ((1 << 22) << (cb + l2_bits)) + 1,
                      draw.int(1, 1 << 50)))
    l1 = -(-size // (1 << (cb + l2_bits)))
    data[24:32] = (size & ((1 << 64) - 1)).to_bytes(8, 'big')
    data[36:40] = (l1 & 0xFFFFFFFF).to_bytes(4, 'big')
    return 'size %#x with l1_size %d' % (size, l1)


OPERATORS = (
    (30, op_field_value), (10, op_field_bitflip), (8, op_field_arith), (6, op_feature_bits), (12, op_region_flips),
    (5, op_random_flips), (8, op_extension), (8, op_backing), (4, op_resize), (4, op_copy_cluster),
    (3, op_compressed), (2, op_data_file), (2, op_geometry),
)
