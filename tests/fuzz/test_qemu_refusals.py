"""Where qemu refuses an image, the engine refuses it too, and where qemu trusts it, the engine agrees.

Each case is an image made by qemu-img with bytes changed at documented offsets (qcow2.rst). The engine's
verdict is compared with qemu's on the differential fuzzer's four questions (does it open, check's exit
code and counters, does a full read succeed, are the bytes equal), and its error must name the
structure and the offset.
"""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import bitmaps
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import check, grow_image
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import (
    CorruptionError, FormatError, ReadOnlyError, UnsupportedError)
from ansible_collections.backingchain.qcow2.tests.fuzz import differential
from ansible_collections.backingchain.qcow2.tests.helpers import qcow2_poke as poke
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    CHECK_CORRUPTIONS, QemuError, qemu_compare, qemu_img, qemu_img_check, qemu_img_create, qemu_img_info, qemu_io,
    raw_of)

CS = 65536
MiB = 1 << 20


@pytest.fixture
def case_dir(tmp_path):
    (tmp_path / 'inner').mkdir()
    return tmp_path


def top(case_dir):
    return case_dir / 'inner' / 'top.qcow2'


def verdicts(case_dir):
    """(engine, qemu, per-question verdict) as the differential fuzzer judges them."""
    engine = differential.engine_verdicts(str(case_dir))
    assert 'failure' not in engine, engine['failure']
    qemu = differential.qemu_verdicts(str(case_dir))
    return engine, qemu, differential.compare(engine, qemu)


def assert_agree(verdict):
    assert all(v in ('agree', 'n/a') for v in verdict.values()), verdict


def same_check_json(engine, qemu):
    ours, theirs = dict(engine['check']['result']), dict(qemu['check']['result'])
    ours.pop('filename')
    theirs.pop('filename')
    assert ours == theirs


def qemu_repair_json(path):
    out = qemu_img('check', '-r', 'all', '--output=json', path, ok_codes=(0, 2, 3))
    return json.loads(out)


# ---- 1. incomplete snapshot table entries in a v3 image ---------------------------------------------------
def v2_with_snapshots_upgraded_by_hand(path, extra):
    """A v2 image whose snapshot entries were written by a qemu older than 1.1 (``extra`` bytes of extra data
    instead of 24), then given a version 3 header of 104 bytes (0x68) without rewriting the table."""
    qemu_img_create(path, '2M', options={'compat': '0.10'})
    qemu_io(path, 'write -P 0x11 0 128k', 'write -P 0x12 1M 64k')
    qemu_img('snapshot', '-c', 'first', path)
    qemu_io(path, 'write -P 0x21 64k 64k')
    qemu_img('snapshot', '-c', 'second', path)
    qemu_io(path, 'write -P 0x31 1536k 4k')
    entries = poke.snapshot_entries(path)
    table = b''
    for e in entries:
        raw = struct.pack('>QIHHIIQII', e['l1_table_offset'], e['l1_size'], e['id_str_size'], e['name_size'],
                          e['date_sec'], e['date_nsec'], e['vm_clock_nsec'], e['vm_state_size'], extra)
        raw += e['extra'][:extra] + e['id'] + e['name']
        table += raw + bytes(-len(raw) % 8)
    first = entries[0]['offset']
    old_end = entries[-1]['offset'] + ((40 + len(entries[-1]['extra']) + len(entries[-1]['id'])
                                        + len(entries[-1]['name']) + 7) & ~7)
    poke.write_bytes(path, first, table + bytes(old_end - first - len(table)))
    poke.set_header_field(path, 'version', 3)
    for name in ('incompatible_features', 'compatible_features', 'autoclear_features'):
        poke.set_header_field(path, name, 0)
    poke.set_header_field(path, 'refcount_order', 4)
    poke.set_header_field(path, 'header_length', 0x68)
    return [e['offset'] for e in poke.snapshot_entries(path)]


def snapshot_views(path, directory):
    """{snapshot name: raw file of its guest view} as qemu reads them."""
    out = {}
    for sn in qemu_img_info(path).get('snapshots', []):
        dest = directory / ('%s-%s.raw' % (path.name, sn['name']))
        qemu_img('convert', '-U', '-l', 'snapshot.name=%s' % sn['name'], '-O', 'raw', path, dest)
        out[sn['name']] = dest
    return out


@pytest.mark.parametrize('extra', [0, 8])
def test_incomplete_snapshot_entries_are_reported_as_qemu_reports_them(case_dir, extra):
    offsets = v2_with_snapshots_upgraded_by_hand(top(case_dir), extra)
    engine, qemu, verdict = verdicts(case_dir)

    assert_agree(verdict)
    assert qemu['check']['exit'] == engine['check']['exit'] == CHECK_CORRUPTIONS
    same_check_json(engine, qemu)
    assert engine['check']['result']['corruptions'] == 2
    for index, offset in enumerate(offsets):
        assert any('snapshot table entry %d is incomplete' % index in m and 'at offset %#x' % offset in m
                   for m in engine['check']['messages'])


def test_incomplete_snapshot_entries_are_repaired_as_qemu_repairs_them(case_dir, tmp_path):
    path = top(case_dir)
    v2_with_snapshots_upgraded_by_hand(path, 0)
    theirs = tmp_path / 'qemu-repaired.qcow2'
    shutil.copyfile(path, theirs)
    qemu_result = qemu_repair_json(theirs)

    ours = check(str(path), repair='all')

    assert ours['exit_code'] == 0
    for key in ('corruptions-fixed', 'leaks-fixed', 'corruptions', 'leaks', 'check-errors'):
        assert ours['result'].get(key, 0) == qemu_result.get(key, 0), key
    assert qemu_img_check(path).clean and qemu_img_check(theirs).clean
    assert qemu_compare(path, theirs)
    assert [e['extra_data_size'] for e in poke.snapshot_entries(path)] == [24, 24]
    listed = [qemu_img_info(p)['snapshots'] for p in (path, theirs)]
    assert listed[0] == listed[1]
    ours_views, their_views = snapshot_views(path, tmp_path), snapshot_views(theirs, tmp_path)
    assert sorted(ours_views) == sorted(their_views) == ['first', 'second']
    for name, raw in ours_views.items():
        assert raw.read_bytes() == their_views[name].read_bytes()


# ---- 2. a header extension running past its limit -----------------------------------------------------------
def overlay_with_backing(case_dir):
    base = case_dir / 'inner' / 'base.qcow2'
    qemu_img_create(base, '4M')
    qemu_io(base, 'write -P 0xb1 0 1M')
    qemu_img_create(top(case_dir), backing='base.qcow2', backing_fmt='qcow2', cwd=case_dir / 'inner')
    return top(case_dir)


def past_the_backing_name(case_dir):
    path = overlay_with_backing(case_dir)
    (pos, etype, _length), = [e for e in poke.header_extensions(path) if e[1] == poke.EXT_BACKING_FORMAT]
    room = poke.header(path)['backing_file_offset'] - pos - 8
    poke.write_bytes(path, pos + 4, struct.pack('>I', room + 1))
    return pos, etype


def past_the_cluster(case_dir):
    path = top(case_dir)
    qemu_img_create(path, '4M')
    qemu_io(path, 'write -P 1 0 64k')
    (pos, etype, _length), = [e for e in poke.header_extensions(path) if e[1] == poke.EXT_FEATURE_TABLE]
    poke.write_bytes(path, pos + 4, struct.pack('>I', CS - pos - 8 + 8))
    return pos, etype


def record_cut_by_the_backing_name(case_dir):
    path = overlay_with_backing(case_dir)
    (pos, etype, _length), = [e for e in poke.header_extensions(path) if e[1] == poke.EXT_BACKING_FORMAT]
    poke.set_header_field(path, 'backing_file_offset', pos + 4)  # the record's header crosses the name's start
    return pos, None


@pytest.mark.parametrize('damage', [past_the_backing_name, past_the_cluster, record_cut_by_the_backing_name])
def test_header_extension_running_past_its_limit_is_refused(case_dir, damage):
    pos, etype = damage(case_dir)
    engine, qemu, verdict = verdicts(case_dir)

    assert_agree(verdict)
    assert not qemu['opens']['ok'] and 'Header extension too large' in qemu['opens']['error']
    assert engine['opens']['type'] == 'FormatError' and engine['check']['exit'] == qemu['check']['exit'] == 1
    with pytest.raises(FormatError) as err:
        open_chain(str(top(case_dir)))
    assert 'Header extension too large' in str(err.value)
    where = ('extension 0x%08x at offset %d' % (etype, pos)) if etype else ('record at offset %d' % pos)
    assert where in str(err.value)


# ---- 3. a preallocated zero cluster at an unaligned host offset -------------------------------------------
def unaligned_preallocated_zero(path):
    """Guest cluster 1 (64k) is a preallocated zero cluster (zero flag and a host offset), moved 512 bytes off its
    cluster boundary. Returns (entry file offset, unaligned host offset)."""
    qemu_img_create(path, '4M')
    qemu_io(path, 'write -P 0x11 0 256k', 'write -z 64k 64k')
    at = poke.l2_entry_offset(path, 64 * 1024)
    entry = poke.read_u64(path, at)
    assert entry & poke.OFLAG_ZERO and entry & poke.OFFSET_MASK, 'qemu made no preallocated zero cluster'
    poke.write_u64(path, at, entry + 0x200)
    return at, (entry & poke.OFFSET_MASK) + 0x200


def test_unaligned_preallocated_zero_cluster_fails_reads_as_in_qemu(case_dir):
    at, host = unaligned_preallocated_zero(top(case_dir))
    engine, qemu, verdict = verdicts(case_dir)

    assert_agree(verdict)
    assert engine['opens']['ok'] and not engine['read']['ok'] and not qemu['read']['ok']
    assert engine['read']['type'] == 'CorruptionError'
    message = engine['read']['error']
    assert 'Preallocated zero cluster allocation offset %#x unaligned' % host in message
    assert 'entry at file offset %#x' % at in message
    assert engine['check']['exit'] == qemu['check']['exit'] == CHECK_CORRUPTIONS
    same_check_json(engine, qemu)  # the alignment error and the cluster its range overlaps


def test_unaligned_preallocated_zero_cluster_marks_a_writable_image_corrupt(case_dir, tmp_path):
    path = top(case_dir)
    unaligned_preallocated_zero(path)
    theirs = tmp_path / 'qemu.qcow2'
    shutil.copyfile(path, theirs)
    with pytest.raises(QemuError, match='Marking image as corrupt'):
        qemu_io(theirs, 'read 64k 64k')  # read-write: qemu fails the read and marks the image corrupt
    assert qemu_img_info(theirs)['format-specific']['data']['corrupt']

    with open_chain(str(path), writable=True) as chain:
        with pytest.raises(CorruptionError, match='now marked corrupt'):
            chain.top.read(64 * 1024, 64 * 1024)
        with pytest.raises(ReadOnlyError):
            chain.top.write(0, b'x' * 512)  # nothing is written to it any more
    assert qemu_img_info(path)['format-specific']['data']['corrupt']
    with pytest.raises(QemuError, match='Image is corrupt; cannot be opened read/write'):
        qemu_io(theirs, 'read 0 512')
    with pytest.raises(ReadOnlyError, match='Image is corrupt; cannot be opened read/write'):
        open_chain(str(path), writable=True)


def test_unaligned_preallocated_zero_cluster_is_repaired_as_qemu_repairs_it(case_dir, tmp_path):
    path = top(case_dir)
    unaligned_preallocated_zero(path)
    theirs = tmp_path / 'qemu.qcow2'
    shutil.copyfile(path, theirs)
    qemu_result = qemu_repair_json(theirs)

    ours = check(str(path), repair='all')

    assert ours['exit_code'] == 0 and qemu_img_check(path).clean and qemu_img_check(theirs).clean
    for key in ('corruptions-fixed', 'leaks-fixed'):
        assert ours['result'].get(key, 0) == qemu_result.get(key, 0) == 1, key
    assert any(m.startswith('Repairing offset=') for m in ours['messages'])
    assert qemu_compare(path, theirs)
    assert raw_of(path).read_bytes()[64 * 1024:128 * 1024] == bytes(64 * 1024)


# ---- 4. persistent bitmaps qemu does not trust -------------------------------------------------------------
def with_bitmaps(path):
    qemu_img_create(path, '16M')
    qemu_img('bitmap', '--add', path, 'bm0')
    qemu_img('bitmap', '--add', '--disable', path, 'bm1')
    qemu_io(path, 'write -P 0x11 0 1M')
    return poke.bitmap_directory_entries(path)


def set_flags(path, entry, flags):
    poke.write_bytes(path, entry['offset'] + 12, struct.pack('>I', flags))


def bad_table_entry(path, entry, value=0x1FF):
    poke.write_u64(path, entry['bitmap_table_offset'], value)


# name -> (change to bitmap directory entry 0, what the engine's message says about it)
BROKEN = {
    'unknown flag': (lambda p, e: set_flags(p, e, e['flags'] | 8), "unknown flags 0x8"),
    'extra_data_compatible flag': (lambda p, e: set_flags(p, e, e['flags'] | 4), "unknown flags 0x4"),
    'granularity below 2^9': (lambda p, e: poke.write_bytes(p, e['offset'] + 17, b'\x08'), "granularity 2^8"),
    'granularity above 2^31': (lambda p, e: poke.write_bytes(p, e['offset'] + 17, b'\x20'), "granularity 2^32"),
    'type not dirty tracking': (lambda p, e: poke.write_bytes(p, e['offset'] + 16, b'\x02'), "type 2"),
    'table offset unaligned': (lambda p, e: poke.write_u64(p, e['offset'], e['bitmap_table_offset'] + 512),
                               "not a non-zero multiple of the cluster size"),
    'table too small for the size': (lambda p, e: poke.write_bytes(p, e['offset'] + 8, struct.pack('>I', 0)),
                                     "its table has no entries"),
    'table larger than the size needs': (lambda p, e: poke.write_bytes(p, e['offset'] + 8, struct.pack('>I', 2)),
                                         "its table has 2 entries, the virtual size needs 1"),
    'extra data': (lambda p, e: poke.write_bytes(p, e['offset'] + 20, struct.pack('>I', 8)), "extra data"),
    'duplicate name': (lambda p, e: poke.write_bytes(p, poke.bitmap_directory_entries(p)[1]['offset'] + 24, b'bm0'),
                       "Bitmap already exists: bm0"),
    'table entry with reserved bits': (bad_table_entry, "bitmap table entry 0"),
    'table entry all-ones with an offset': (lambda p, e: bad_table_entry(p, e, 4 * CS | 1), "bitmap table entry 0"),
}


@pytest.mark.parametrize('broken', sorted(BROKEN))
def test_bitmap_breaking_qemus_constraints_makes_both_refuse_the_image(case_dir, broken):
    path = top(case_dir)
    entries = with_bitmaps(path)
    change, reason = BROKEN[broken]
    change(path, entries[0])
    index = 1 if broken == 'duplicate name' else 0
    where = 'bitmap directory entry %d at offset %#x' % (index, entries[index]['offset'])
    engine, qemu, verdict = verdicts(case_dir)

    assert_agree(verdict)
    assert not qemu['opens']['ok'] and engine['opens']['type'] == 'FormatError'
    assert reason in engine['opens']['error'] and where in engine['opens']['error']
    assert engine['check']['exit'] == qemu['check']['exit'] == 1
    before = path.read_bytes()
    with pytest.raises(FormatError):  # a writable open is refused the same way, and writes nothing
        open_chain(str(path), writable=True)
    assert path.read_bytes() == before


def test_bitmap_in_use_is_untrusted_and_never_rewritten(case_dir):
    path = top(case_dir)
    entries = with_bitmaps(path)
    set_flags(path, entries[0], entries[0]['flags'] | 1)  # a writer died before saving bm0
    engine, qemu, verdict = verdicts(case_dir)
    assert_agree(verdict)
    assert engine['opens']['ok'] and engine['check']['exit'] == 0

    with open_chain(str(path), force_share=True) as chain:
        trust = {v.bitmap.name: v for v in chain.top.bitmap_trust.verdicts}
    assert trust['bm0'].state == bitmaps.IN_USE and 'in use' in trust['bm0'].reason and not trust['bm0'].trusted
    assert trust['bm1'].trusted
    table = entries[0]['bitmap_table_offset']
    before = (poke.bitmap_directory_entries(path)[0], open(path, 'rb').read()[table:table + 8])
    with open_chain(str(path), writable=True) as chain:
        chain.top.write(2 * MiB, b'\x22' * CS)
    after = (poke.bitmap_directory_entries(path)[0], open(path, 'rb').read()[table:table + 8])
    assert after == before
    flags = {b['name']: b['flags'] for b in qemu_img_info(path)['format-specific']['data']['bitmaps']}
    assert flags == {'bm0': ['in-use', 'auto'], 'bm1': []}
    assert qemu_img_check(path).clean


def test_bitmap_in_use_with_a_broken_table_fails_check_only(case_dir):
    """qemu skips the table of a bitmap in use when it opens the image, but check loads it and cannot finish."""
    path = top(case_dir)
    entries = with_bitmaps(path)
    set_flags(path, entries[0], entries[0]['flags'] | 1)
    bad_table_entry(path, entries[0])
    engine, qemu, verdict = verdicts(case_dir)

    assert_agree(verdict)
    assert engine['opens']['ok'] and engine['read']['ok']
    assert engine['check']['exit'] == qemu['check']['exit'] == 1
    assert any('bitmap table at offset %#x' % entries[0]['bitmap_table_offset'] in m
               for m in engine['check']['messages'])


def test_growing_an_image_with_a_bitmap_in_use_is_refused_as_by_qemu_img_resize(case_dir, tmp_path):
    path = top(case_dir)
    entries = with_bitmaps(path)
    set_flags(path, entries[0], entries[0]['flags'] | 1)
    theirs = tmp_path / 'qemu.qcow2'
    shutil.copyfile(path, theirs)
    with pytest.raises(QemuError, match="Bitmap 'bm0' is inconsistent and cannot be used"):
        qemu_img('resize', theirs, '32M')
    before = path.read_bytes()

    with pytest.raises(UnsupportedError, match="Bitmap 'bm0' of .* is inconsistent and cannot be used"):
        grow_image(str(path), 32 * MiB)
    assert path.read_bytes() == before
