"""A bitmap is trusted as the record of every change only if it passes every check; one that fails is never
trusted, never rewritten, and the reason is reported.

The cases: left in use by a process killed with SIGKILL (qemu-io, and the engine), not 'auto' (disabled),
the extension's autoclear bit cleared by a program without bitmap support, a virtual size the bitmap's
table does not cover, a granularity and flags qemu does not know, a broken directory. For each, what qemu
does with the same image is checked too: qemu-nbd refuses to export an inconsistent bitmap, qemu-img
info refuses an image whose bitmaps break qemu's constraints. Every refusal leaves the file unchanged.
"""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.tests.helpers.engine_worker import run_worker
from ansible_collections.backingchain.qcow2.tests.helpers.qcow2_poke import (
    bitmap_directory_entries, header, header_extensions, set_header_field, write_bytes)
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    QemuError, dirty_ranges, qemu_img, qemu_img_check, qemu_img_create, qemu_img_info, qemu_io)

MiB = 1 << 20
SIZE = 16 * MiB


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path):
    img = qemu_img_create(tmp_path / 'disk.qcow2', SIZE)
    qemu_img('bitmap', '--add', img, 'chk')
    qemu_img('bitmap', '--add', '--disable', img, 'frozen')
    qemu_io(img, 'write -P 1 1M 64k')
    return img


def refused_for(path, name, reason):
    """Reading the bitmap's changes is refused with the reason, listing says why it is not trusted."""
    with pytest.raises(api.BitmapUnusableError, match=reason) as refusal:
        api.dirty_ranges(str(path), name)
    assert refusal.value.bitmap == name and refusal.value.reason
    listed = {b['name']: b for b in api.list_bitmaps(str(path))[0]['bitmaps']}
    if name in listed:
        assert not listed[name]['trusted'] and listed[name]['reason'], listed[name]
    return refusal.value


def kill_qemu_io_holding(path):
    """qemu-io opens the image for writing (qemu flags every bitmap in use on disk then) and dies by SIGKILL."""
    proc = subprocess.Popen(['qemu-io', '-f', 'qcow2', str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    proc.stdin.write('write -P 7 2M 4k\n')
    proc.stdin.flush()
    assert 'wrote' in proc.stdout.readline()
    proc.kill()
    proc.wait()


@pytest.mark.parametrize('killed', ['qemu-io', 'engine'])
def test_a_bitmap_left_in_use_by_a_killed_writer(image, killed):
    if killed == 'qemu-io':
        kill_qemu_io_holding(image)
    else:
        assert run_worker({'task': 'write-and-die', 'path': str(image), 'writes': [[2 * MiB, 4096]]}).returncode == -9
    assert 'in-use' in {b['name']: b['flags'] for b in qemu_img_info(image)['format-specific']['data']['bitmaps']}[
        'chk']
    with pytest.raises(QemuError, match="Bitmap 'chk' is inconsistent and cannot be used"):
        dirty_ranges(image, 'chk')
    before = digest(image)
    error = refused_for(image, 'chk', 'flagged in use')
    assert 'may miss writes' in error.reason
    listed = {b['name']: b for b in api.list_bitmaps(str(image))[0]['bitmaps']}
    assert listed['chk']['in_use']
    for action in ('clear', 'enable', 'disable'):
        with pytest.raises(api.BitmapUnusableError, match="Bitmap 'chk' of .* is inconsistent and cannot be used"):
            api.change_bitmap(str(image), action, 'chk')
    with pytest.raises(api.BitmapUnusableError, match='inconsistent'):
        api.change_bitmap(str(image), 'merge', 'chk', source='frozen')
    with pytest.raises(api.Qcow2Error, match='inconsistent'):
        api.bitmap(str(image), 'chk', state='cleared')
    with pytest.raises(api.BitmapUnusableError, match='flagged in use'):
        api.copy_ranges(str(image), str(image.with_name('layer.qcow2')),
                        api.dirty_ranges(str(image), 'chk').ranges)
    assert digest(image) == before  # never rewritten
    # a guest write leaves it as it is; removing it is the way out, as in qemu
    with open_chain(str(image), writable=True) as chain:
        chain.top.write(0, b'x')
    assert 'in-use' in {b['name']: b['flags'] for b in qemu_img_info(image)['format-specific']['data']['bitmaps']}[
        'chk']
    assert api.change_bitmap(str(image), 'remove', 'chk')
    assert qemu_img_check(image).clean


def test_a_disabled_bitmap_records_nothing_and_is_not_trusted_as_a_record_of_changes(image):
    before = digest(image)
    refused_for(image, 'frozen', "disabled \\(no 'auto' flag\\)")
    assert api.dirty_ranges(str(image), 'frozen', allow_disabled=True).ranges == []
    assert api.dirty_ranges(str(image), 'chk').ranges == [(MiB, 65536)]
    assert digest(image) == before


def test_bitmaps_a_program_without_bitmap_support_wrote_past_are_not_trusted(image):
    set_header_field(image, 'autoclear_features', header(image)['autoclear_features'] & ~1)
    before = digest(image)
    assert 'bitmaps' not in qemu_img_info(image)['format-specific']['data']  # qemu ignores them
    refused_for(image, 'chk', 'autoclear bit 0 clear')
    assert api.list_bitmaps(str(image))[0]['bitmaps'] == []
    assert digest(image) == before


def _first_entry(image, name='chk'):
    return next(e for e in bitmap_directory_entries(image) if e['name'] == name.encode())


def _grow_without_the_bitmaps(image):
    """A virtual size the bitmap's table does not cover (a resize by a tool that does not update bitmaps): one table
    entry of 512-byte granules covers 256 MiB, the size says 512 MiB."""
    qemu_img('bitmap', '--remove', image, 'chk')
    qemu_img('bitmap', '--add', '-g', '512', image, 'chk')
    set_header_field(image, 'size', 512 * MiB)


def _granularity_below_minimum(image):
    write_bytes(image, _first_entry(image)['offset'] + 17, bytes([8]))


def _granularity_above_maximum(image):
    write_bytes(image, _first_entry(image)['offset'] + 17, bytes([32]))


def _table_larger_than_the_size_needs(image):
    write_bytes(image, _first_entry(image)['offset'] + 8, (2).to_bytes(4, 'big'))


def _unknown_flag(image):
    entry = _first_entry(image)
    write_bytes(image, entry['offset'] + 12, (entry['flags'] | 1 << 5).to_bytes(4, 'big'))


def _table_entry_with_reserved_bits(image):
    entry = _first_entry(image)
    write_bytes(image, entry['bitmap_table_offset'], (1 << 60 | 0x10000).to_bytes(8, 'big'))


def _directory_count_too_high(image):
    position = next(p for p, t, _l in header_extensions(image) if t == 0x23852875)
    write_bytes(image, position + 8, (3).to_bytes(4, 'big'))


def _directory_offset_unaligned(image):
    position = next(p for p, t, _l in header_extensions(image) if t == 0x23852875)
    offset = int.from_bytes(image.read_bytes()[position + 24:position + 32], 'big')
    write_bytes(image, position + 24, (offset + 8).to_bytes(8, 'big'))


def _name_overruns_the_directory(image):
    write_bytes(image, _first_entry(image)['offset'] + 18, (4000).to_bytes(2, 'big'))


BROKEN = {
    'wrong size': (_grow_without_the_bitmaps, 'less than the virtual size'),
    'granularity below 512': (_granularity_below_minimum, 'granularity 2\\^8'),
    'granularity above 2^31': (_granularity_above_maximum, 'granularity 2\\^32'),
    'table larger than the size needs': (_table_larger_than_the_size_needs, 'its table has 2 entries'),
    'unknown flag': (_unknown_flag, 'unknown flags 0x20'),
    'reserved bits in a table entry': (_table_entry_with_reserved_bits, 'bitmap table entry 0 .* is invalid'),
    'directory count': (_directory_count_too_high, 'Less bitmaps found than specified'),
    'directory offset': (_directory_offset_unaligned, 'bitmap directory'),
    'entry past the directory': (_name_overruns_the_directory, 'overruns the directory'),
}


@pytest.mark.parametrize('case', sorted(BROKEN))
def test_bitmaps_breaking_qemus_constraints_are_refused_with_the_reason_and_never_written(image, tmp_path, case):
    breaks, reason = BROKEN[case]
    breaks(image)
    with pytest.raises(QemuError):
        qemu_img('info', image)  # qemu refuses to open the image at all
    before = digest(image)
    for attempt in (lambda: api.list_bitmaps(str(image)), lambda: api.dirty_ranges(str(image), 'chk'),
                    lambda: api.change_bitmap(str(image), 'remove', 'chk'),
                    lambda: api.bitmap(str(image), 'new'),
                    lambda: api.copy_ranges(str(image), str(tmp_path / 'layer.qcow2'), [(0, MiB)]),
                    lambda: open_chain(str(image), writable=True).close()):
        with pytest.raises(api.Qcow2Error, match=reason):
            attempt()
    assert digest(image) == before
    assert not (tmp_path / 'layer.qcow2').exists()


def test_a_bitmap_of_a_chain_is_trusted_only_if_every_layer_holding_it_is(tmp_path):
    base = qemu_img_create(tmp_path / 'base.qcow2', SIZE)
    qemu_img('bitmap', '--add', base, 'chk')
    qemu_io(base, 'write 1M 4k')
    mid = qemu_img_create(tmp_path / 'mid.qcow2', backing='base.qcow2', cwd=tmp_path)
    top = qemu_img_create(tmp_path / 'top.qcow2', backing='mid.qcow2', cwd=tmp_path)
    qemu_img('bitmap', '--add', top, 'chk')
    qemu_io(top, 'write 5M 4k')
    # base holds it, mid does not: qemu's and libvirt's chain of bitmaps is broken there
    with pytest.raises(api.BitmapUnusableError, match='the chain of bitmaps is broken'):
        api.dirty_ranges(str(top), 'chk', backing_chain=True)
    qemu_img('bitmap', '--add', mid, 'chk')
    kill_qemu_io_holding(mid)  # and then left in use
    with pytest.raises(api.BitmapUnusableError, match='flagged in use'):
        api.dirty_ranges(str(top), 'chk', backing_chain=True)
    qemu_img('bitmap', '--remove', mid, 'chk')
    qemu_img('bitmap', '--add', mid, 'chk')
    qemu_io(mid, 'write 3M 4k')
    got = api.dirty_ranges(str(top), 'chk', backing_chain=True)
    assert got.ranges == [(MiB, 65536), (3 * MiB, 65536), (5 * MiB, 65536)]
    assert got.layers == [str(top), str(mid), str(base)]
