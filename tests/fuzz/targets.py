"""Mutations aimed at one named structure, for the differential fuzzer (engine vs qemu, per structure).

Each case changes one structure only, so a disagreement between the engine and qemu can be charged to
that structure. Every structure of the format is a target: header fields, each header extension (and
the end marker), the backing file name, active L1 entries, L2 entries of every kind, refcount table
and blocks, the snapshot table and snapshot L1 tables, the bitmap directory and bitmap tables,
compressed data, and the file's length.
"""

from __future__ import annotations

import struct

from ansible_collections.backingchain.qcow2.tests.fuzz import mutate
from ansible_collections.backingchain.qcow2.tests.fuzz.layout import (
    EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO, EXT_DATA_FILE, EXT_FEATURE_TABLE, OFFSET_MASK)

UNKNOWN_EXT = 0x12345678
EXT_OF_STRUCTURE = {'ext_backing_format': EXT_BACKING_FORMAT, 'ext_feature_table': EXT_FEATURE_TABLE,
                    'ext_bitmaps': EXT_BITMAPS, 'ext_crypto': EXT_CRYPTO, 'ext_data_file': EXT_DATA_FILE,
                    'ext_unknown': UNKNOWN_EXT}
L2_KINDS = ('normal', 'zero_plain', 'zero_alloc', 'compressed', 'unallocated', 'subclusters')
STRUCTURES = (('header', 'ext_backing_format', 'ext_feature_table', 'ext_bitmaps', 'ext_crypto', 'ext_data_file',
               'ext_unknown', 'ext_end', 'backing_name', 'l1') + tuple('l2_' + k for k in L2_KINDS)
              + ('reftable', 'refblock', 'snapshot_table', 'snapshot_l1', 'bitmap_directory', 'bitmap_table',
                 'compressed_data', 'file_length'))
GROUP_OF_STRUCTURE = {'l1': 'l1', 'reftable': 'reftable', 'refblock': 'refblock', 'snapshot_table': 'snapshot',
                      'snapshot_l1': 'snapshot_l1', 'bitmap_directory': 'bitmap', 'bitmap_table': 'bitmap_table'}
ALWAYS = ('header', 'ext_crypto', 'ext_data_file', 'ext_unknown', 'ext_end', 'backing_name', 'file_length')


def applies(structure, layout):
    """True if a seed with this layout holds the structure (or, for additions, can receive it)."""
    if structure in ALWAYS:
        return True
    if structure in GROUP_OF_STRUCTURE:
        return bool(layout.groups.get(GROUP_OF_STRUCTURE[structure]))
    if structure.startswith('l2_'):
        return bool(layout.l2_kinds.get(structure[3:]))
    if structure in EXT_OF_STRUCTURE:
        return any(t == EXT_OF_STRUCTURE[structure] for _p, t, _l in layout.extensions)
    if structure == 'compressed_data':
        return bool(layout.compressed)
    raise ValueError(structure)


def mutate_structure(case, structure, draw):
    """Change the structure in top.qcow2; returns a description (None if nothing could be changed)."""
    name = 'top.qcow2'
    if structure == 'header':
        op = mutate.weighted(draw, ((6, _header_field), (2, mutate.op_feature_bits), (1, mutate.op_geometry)))
        return op(case, name, draw)
    if structure in EXT_OF_STRUCTURE or structure == 'ext_end':
        return _extension(case, name, structure, draw)
    if structure == 'backing_name':
        return mutate.op_backing(case, name, draw)
    if structure == 'compressed_data':
        return mutate.op_compressed(case, name, draw)
    if structure == 'file_length':
        return mutate.op_resize(case, name, draw)
    if structure.startswith('l2_'):
        fields = case.layouts[name].l2_kinds[structure[3:]]
    else:
        fields = case.layouts[name].groups[GROUP_OF_STRUCTURE[structure]]
    return _field_change(case, name, draw.pick(fields), draw)


def _header_field(case, name, draw):
    return _field_change(case, name, draw.pick(case.layouts[name].groups['header']), draw)


def _field_change(case, name, field, draw):
    data = case.files[name]
    orig = field.read(data)
    how = draw.int(0, 9)
    if how < 5:
        value = mutate.interesting(case, name, field, draw)
    elif how < 7:
        value = orig ^ (1 << draw.int(0, 8 * field.width - 1))
    elif how < 8:
        value = orig + draw.pick((1, -1, 8, -8, 512, -512, 4096, 65536, -65536))
    else:
        value = _unaligned(case, name, field, orig, draw)
    mutate._put(data, field.offset, field.width, value)
    return '%s: %#x -> %#x' % (field.name, orig, value & ((1 << (8 * field.width)) - 1))


def _unaligned(case, name, field, orig, draw):
    """The same entry pointing at an unaligned host offset (or a sub-cluster offset of other metadata)."""
    if field.kind not in ('l1entry', 'l2entry', 'refentry', 'bmentry', 'offset'):
        return orig ^ 1
    meta = draw.pick(mutate._offsets_pool(case, name))
    step = draw.pick((512, 0x200, 4096, 8))
    if field.kind == 'offset':
        return orig + step
    return (orig & ~OFFSET_MASK) | ((((orig & OFFSET_MASK) or meta) + step) & OFFSET_MASK)


# ---- header extensions ------------------------------------------------------------------------------
def _extension(case, name, structure, draw):
    data = case.files[name]
    lay = case.layouts[name]
    records = [(p, t, n) for p, t, n in lay.extensions if p + 8 <= len(data)]
    if structure == 'ext_end':
        ends = [(p, t, n) for p, t, n in records if t == 0]
        if ends and draw.bool(0.6):
            pos = ends[0][0]
            value = draw.pick((1, UNKNOWN_EXT, EXT_BACKING_FORMAT)) << 32 | draw.pick((0, 8, 24, 4096, 0xFFFFFFFF))
            data[pos:pos + 8] = value.to_bytes(8, 'big')
            return 'end marker @%#x -> %#018x' % (pos, value)
        return mutate.op_extension(case, name, draw)
    etype = EXT_OF_STRUCTURE[structure]
    mine = [(p, t, n) for p, t, n in records if t == etype]
    if not mine or draw.bool(0.15):
        return _add_extension(case, name, etype, draw)
    pos, _t, length = draw.pick(mine)
    how = draw.int(0, 5)
    if how <= 1:
        return _extension_length(case, name, pos, length, draw)
    if how == 2:
        new = draw.pick(mutate.KNOWN_EXT_TYPES + (UNKNOWN_EXT,))
        data[pos:pos + 4] = struct.pack('>I', new)
        return 'extension %#x @%#x: type -> %#x' % (etype, pos, new)
    if how == 3 and length:
        for _i in range(draw.int(1, 4)):
            at = pos + 8 + draw.int(0, length - 1)
            if at < len(data):
                data[at] = draw.pick((0, 0xFF, data[at] ^ (1 << draw.int(0, 7)), draw.int(0, 255)))
        return 'extension %#x @%#x: payload bytes changed' % (etype, pos)
    if how == 4 and etype == EXT_BITMAPS and length == 24:
        field = draw.pick([f for f in lay.groups.get('ext', []) if pos + 8 <= f.offset < pos + 32] or [None])
        if field is not None:
            return _field_change(case, name, field, draw)
    fixed, exts, backing, cs, old_end = mutate._cluster0(data)
    i = next((k for k, (t, _p) in enumerate(exts) if t == etype), None)
    if i is None:
        return _add_extension(case, name, etype, draw)
    what = draw.int(0, 2)
    if what == 0:
        exts.append(exts[i])
        desc = 'extension %#x duplicated' % etype
    elif what == 1:
        del exts[i]
        desc = 'extension %#x removed' % etype
    else:
        exts[i] = (etype, mutate._ext_payload(case, name, etype, draw))
        desc = 'extension %#x payload replaced (%d bytes)' % (etype, len(exts[i][1]))
    mutate._write_cluster0(data, fixed, exts, backing, cs, old_end)
    return desc


def _extension_length(case, name, pos, length, draw):
    """A length on the edges that matter: exactly up to the end of the extension area, just past it, huge."""
    data = case.files[name]
    cs = case.layouts[name].cluster_size
    bfo = int.from_bytes(bytes(data[8:16]), 'big')
    area_end = bfo if 0 < bfo <= cs else cs
    room = area_end - pos - 8
    new = draw.pick((room, room + 1, room + 8, room - 1, length + 1, length + 8, length - 1, 0, cs, cs + 1,
                     0x7FFFFFFF, 0xFFFFFFFF, 15, 16, 24, 25))
    new &= 0xFFFFFFFF
    data[pos + 4:pos + 8] = struct.pack('>I', new)
    return 'extension @%#x: length %d -> %d (room %d)' % (pos, length, new, room)


def _add_extension(case, name, etype, draw):
    data = case.files[name]
    fixed, exts, backing, cs, old_end = mutate._cluster0(data)
    payload = mutate._ext_payload(case, name, etype, draw)
    exts.insert(draw.int(0, len(exts)), (etype, payload))
    if etype == EXT_DATA_FILE and len(data) >= 104 and draw.bool(0.7):
        data[72:80] = (int.from_bytes(bytes(data[72:80]), 'big') | 4).to_bytes(8, 'big')
    mutate._write_cluster0(data, fixed, exts, backing, cs, old_end)
    return 'added extension %#x (%d bytes)' % (etype, len(payload))
