"""Read and patch qcow2 structures in place, to build damaged or hostile images for tests.

Written from the qcow2 specification with struct only, independent of the
engine, so a test that corrupts an image does not depend on the code it tests.
Offsets and masks: docs/interop/qcow2.rst (see also the project's reference).
"""

from __future__ import annotations

import os
import struct

# Fixed header fields: name -> (offset, struct format)
HEADER_FIELDS = {
    'magic': (0, '>4s'),
    'version': (4, '>I'),
    'backing_file_offset': (8, '>Q'),
    'backing_file_size': (16, '>I'),
    'cluster_bits': (20, '>I'),
    'size': (24, '>Q'),
    'crypt_method': (32, '>I'),
    'l1_size': (36, '>I'),
    'l1_table_offset': (40, '>Q'),
    'refcount_table_offset': (48, '>Q'),
    'refcount_table_clusters': (56, '>I'),
    'nb_snapshots': (60, '>I'),
    'snapshots_offset': (64, '>Q'),
    # version 3
    'incompatible_features': (72, '>Q'),
    'compatible_features': (80, '>Q'),
    'autoclear_features': (88, '>Q'),
    'refcount_order': (96, '>I'),
    'header_length': (100, '>I'),
    'compression_type': (104, '>B'),
}

OFFSET_MASK = 0x00FFFFFFFFFFFE00
REFT_OFFSET_MASK = 0xFFFFFFFFFFFFFE00
OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1


def _read(path, offset, length):
    with open(path, 'rb') as f:
        f.seek(offset)
        data = f.read(length)
    return data + bytes(length - len(data))


def _write(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


def header(path):
    """Every fixed header field as a dict (v2 images get qemu's implied v3 values)."""
    raw = _read(path, 0, 112)
    out = {name: struct.unpack_from(fmt, raw, off)[0] for name, (off, fmt) in HEADER_FIELDS.items()}
    if out['version'] == 2:
        out.update(incompatible_features=0, compatible_features=0, autoclear_features=0, refcount_order=4,
                   header_length=72, compression_type=0)
    out['cluster_size'] = 1 << out['cluster_bits']
    out['refcount_bits'] = 1 << out['refcount_order']
    out['extended_l2'] = bool(out['incompatible_features'] & (1 << 4))
    return out


def set_header_field(path, name, value):
    offset, fmt = HEADER_FIELDS[name]
    _write(path, offset, struct.pack(fmt, value))


def read_u64(path, offset):
    return struct.unpack('>Q', _read(path, offset, 8))[0]


def write_u64(path, offset, value):
    _write(path, offset, struct.pack('>Q', value))


def l1_entry_offset(path, index):
    return header(path)['l1_table_offset'] + 8 * index


def l1_entry(path, index):
    return read_u64(path, l1_entry_offset(path, index))


def set_l1_entry(path, index, value):
    write_u64(path, l1_entry_offset(path, index), value)


def l2_entry_offset(path, guest_offset):
    """File offset of the (first word of the) L2 entry mapping guest_offset; None without an L2 table."""
    h = header(path)
    cb = h['cluster_bits']
    words = 2 if h['extended_l2'] else 1
    l2_bits = cb - 3 - (words - 1)
    cluster = guest_offset >> cb
    l2 = l1_entry(path, cluster >> l2_bits) & OFFSET_MASK
    if not l2:
        return None
    return l2 + 8 * words * (cluster & ((1 << l2_bits) - 1))


def l2_entry(path, guest_offset):
    offset = l2_entry_offset(path, guest_offset)
    return 0 if offset is None else read_u64(path, offset)


def set_l2_entry(path, guest_offset, value):
    offset = l2_entry_offset(path, guest_offset)
    if offset is None:
        raise ValueError('guest offset %d has no L2 table' % guest_offset)
    write_u64(path, offset, value)


def host_cluster(path, guest_offset):
    """Host cluster index of a normally allocated guest cluster."""
    h = header(path)
    return (l2_entry(path, guest_offset) & OFFSET_MASK) >> h['cluster_bits']


def reftable_entry_offset(path, index):
    return header(path)['refcount_table_offset'] + 8 * index


def reftable_entry(path, index):
    return read_u64(path, reftable_entry_offset(path, index))


def set_reftable_entry(path, index, value):
    write_u64(path, reftable_entry_offset(path, index), value)


def _refcount_location(path, cluster):
    h = header(path)
    bits = h['refcount_bits']
    entries = h['cluster_size'] * 8 // bits
    block = reftable_entry(path, cluster // entries) & REFT_OFFSET_MASK
    if not block:
        raise ValueError('cluster %d has no refcount block' % cluster)
    return block, (cluster % entries) * bits, bits


def refcount(path, cluster):
    block, bit, bits = _refcount_location(path, cluster)
    if bits >= 8:
        return int.from_bytes(_read(path, block + bit // 8, bits // 8), 'big')
    byte = _read(path, block + bit // 8, 1)[0]
    return (byte >> (bit % 8)) & ((1 << bits) - 1)


def set_refcount(path, cluster, value):
    block, bit, bits = _refcount_location(path, cluster)
    if bits >= 8:
        _write(path, block + bit // 8, value.to_bytes(bits // 8, 'big'))
        return
    byte = _read(path, block + bit // 8, 1)[0]
    mask = ((1 << bits) - 1) << (bit % 8)
    _write(path, block + bit // 8, bytes([(byte & ~mask) | ((value << (bit % 8)) & mask)]))


def file_clusters(path):
    """Number of clusters the file spans (the last one possibly partial)."""
    return -(-os.path.getsize(path) // header(path)['cluster_size'])


# ---- header extensions, snapshot table, bitmap directory ----
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875


def header_extensions(path):
    """(record offset, type, length) of every header extension record, end marker excluded."""
    h = header(path)
    start = 72 if h['version'] == 2 else h['header_length']
    end = h['backing_file_offset'] or h['cluster_size']
    raw = _read(path, 0, h['cluster_size'])
    out = []
    pos = start
    while pos + 8 <= end:
        etype, length = struct.unpack_from('>II', raw, pos)
        if etype == 0:
            break
        out.append((pos, etype, length))
        pos += 8 + ((length + 7) & ~7)
    return out


def snapshot_entries(path):
    """Every snapshot table entry: dict of its fields plus 'offset', 'extra' (bytes), 'id' and 'name' (bytes)."""
    h = header(path)
    pos = h['snapshots_offset']
    out = []
    for _i in range(h['nb_snapshots']):
        fixed = _read(path, pos, 40)
        names = ('l1_table_offset', 'l1_size', 'id_str_size', 'name_size', 'date_sec', 'date_nsec', 'vm_clock_nsec',
                 'vm_state_size', 'extra_data_size')
        entry = dict(zip(names, struct.unpack('>QIHHIIQII', fixed)), offset=pos)
        rest = _read(path, pos + 40, entry['extra_data_size'] + entry['id_str_size'] + entry['name_size'])
        entry['extra'] = rest[:entry['extra_data_size']]
        entry['id'] = rest[entry['extra_data_size']:entry['extra_data_size'] + entry['id_str_size']]
        entry['name'] = rest[entry['extra_data_size'] + entry['id_str_size']:]
        out.append(entry)
        pos += (40 + len(rest) + 7) & ~7
    return out


def bitmap_directory_entries(path):
    """Every bitmap directory entry: dict of its fields plus 'offset' (in the file) and 'name' (bytes)."""
    ext = [(p, l) for p, t, l in header_extensions(path) if t == EXT_BITMAPS]
    if not ext:
        return []
    nb, _reserved, size, offset = struct.unpack('>IIQQ', _read(path, ext[0][0] + 8, 24))
    raw = _read(path, offset, size)
    out = []
    pos = 0
    for _i in range(nb):
        names = ('bitmap_table_offset', 'bitmap_table_size', 'flags', 'type', 'granularity_bits', 'name_size',
                 'extra_data_size')
        entry = dict(zip(names, struct.unpack_from('>QIIBBHI', raw, pos)), offset=offset + pos)
        start = pos + 24 + entry['extra_data_size']
        entry['name'] = raw[start:start + entry['name_size']]
        out.append(entry)
        pos = (start + entry['name_size'] + 7) & ~7
    return out


def write_bytes(path, offset, data):
    _write(path, offset, data)
