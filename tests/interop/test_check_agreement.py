"""check agreement: the engine's check and qemu-img check --output=json on images with injected faults
report the same counts and exit code, and the engine's repair leaves what qemu's repair leaves."""

from __future__ import annotations

import re
import shutil

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import check
from ansible_collections.backingchain.qcow2.tests.helpers import qcow2_poke as poke
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    CHECK_NOT_COMPLETED, qemu_compare, qemu_img, qemu_img_check, qemu_img_create, qemu_io, raw_of)

CS = 65536
MiB = 1 << 20


def plain(d, **opts):
    img = qemu_img_create(d / 'a.qcow2', '8M', options=opts or None)
    qemu_io(img, 'write -P 1 0 256k', 'write -P 2 1M 64k', 'write -P 3 4M 128k', 'write -z 6M 64k')
    return img


def with_snapshot(d):
    img = plain(d)
    qemu_img('snapshot', '-c', 's', img)
    qemu_io(img, 'write -P 4 64k 64k')
    return img


def compressed_extl2(d):
    src = d / 'src.raw'
    src.write_bytes(b'compressible ' * 100000)
    img = d / 'a.qcow2'
    qemu_img('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'extended_l2=on', src, img)
    qemu_io(img, 'write -P 5 256k 64k')
    return img


def leak(img, count=3):
    first = poke.file_clusters(img)
    with open(img, 'ab') as f:
        f.write(bytes(count * CS))
    for cluster in range(first, first + count):
        poke.set_refcount(img, cluster, 1)


def set_bitmap(img, guest_offset, value):
    poke.write_u64(img, poke.l2_entry_offset(img, guest_offset) + 8, value)


def snapshot_entry(img, offset, value, size=8):
    with open(img, 'r+b') as f:
        f.seek(poke.header(img)['snapshots_offset'] + offset)
        f.write(value.to_bytes(size, 'big'))


# name -> (image builder, injection)
FAULTS = {
    # leaks
    'leaked clusters': (plain, leak),
    'refcount above references': (plain, lambda p: poke.set_refcount(p, poke.host_cluster(p, 0), 2)),
    # refcount errors
    'refcount zero on data': (plain, lambda p: poke.set_refcount(p, poke.host_cluster(p, 0), 0)),
    'refcount zero on the L1 table': (plain, lambda p: poke.set_refcount(p, poke.header(p)['l1_table_offset'] // CS, 0)),
    'refcount one on a shared cluster': (with_snapshot, lambda p: poke.set_refcount(p, poke.host_cluster(p, 0), 1)),
    'leak and error': (plain, lambda p: (leak(p), poke.set_refcount(p, poke.host_cluster(p, 1 * MiB), 0))),
    # OFLAG_COPIED
    'COPIED cleared on a data cluster': (plain, lambda p: poke.set_l2_entry(p, MiB, poke.l2_entry(p, MiB) & ~poke.OFLAG_COPIED)),
    'COPIED set on a shared cluster': (with_snapshot, lambda p: poke.set_l2_entry(p, 0, poke.l2_entry(p, 0) | poke.OFLAG_COPIED)),
    'COPIED cleared on an L2 table': (plain, lambda p: poke.set_l1_entry(p, 0, poke.l1_entry(p, 0) & ~poke.OFLAG_COPIED)),
    'COPIED on a compressed cluster': (compressed_extl2, lambda p: poke.set_l2_entry(p, 0, poke.l2_entry(p, 0) | poke.OFLAG_COPIED)),
    # refcount structure broken
    'refblock entry with reserved bits': (plain, lambda p: poke.set_reftable_entry(p, 0, poke.reftable_entry(p, 0) | 1)),
    'refblock outside the image': (plain, lambda p: poke.set_reftable_entry(p, 0, 1 << 40)),
    'refblock missing': (plain, lambda p: poke.set_reftable_entry(p, 0, 0)),
    'refblock on the L1 table': (plain, lambda p: poke.set_reftable_entry(p, 0, poke.header(p)['l1_table_offset'])),
    # table entries
    'L1 entry reserved bits': (plain, lambda p: poke.set_l1_entry(p, 0, poke.l1_entry(p, 0) | 2)),
    'L2 entry reserved bits': (plain, lambda p: poke.set_l2_entry(p, 0, poke.l2_entry(p, 0) | (1 << 57))),
    'L2 table unaligned': (plain, lambda p: poke.set_l1_entry(p, 0, poke.l1_entry(p, 0) | 0x200)),
    'data cluster unaligned': (plain, lambda p: poke.set_l2_entry(p, MiB, poke.l2_entry(p, MiB) | 0x200)),
    'data cluster past the end': (plain, lambda p: poke.set_l2_entry(p, 2 * MiB, poke.OFLAG_COPIED | (1 << 40))),
    'two entries, one data cluster': (plain, lambda p: poke.set_l2_entry(p, 2 * MiB, poke.l2_entry(p, 0))),
    'subclusters allocated and zero': (lambda d: plain(d, extended_l2='on'), lambda p: set_bitmap(p, 0, 0x1_00000001)),
    'unallocated with subcluster bits': (lambda d: plain(d, extended_l2='on'), lambda p: set_bitmap(p, 2 * MiB, 0x3)),
    'compressed with subcluster bits': (compressed_extl2, lambda p: set_bitmap(p, 0, 1)),
    # snapshot table
    'snapshot L1 unaligned': (with_snapshot, lambda p: snapshot_entry(p, 0, poke.read_u64(p, poke.header(p)['snapshots_offset']) + 512)),
    'snapshot L1 too large': (with_snapshot, lambda p: snapshot_entry(p, 8, (32 << 20) // 8 + 1, size=4)),
    'snapshot extra data too large': (with_snapshot, lambda p: snapshot_entry(p, 36, 2000, size=4)),
}

# qemu 7.2's -r all gets these back to a clean image with the original content
REPAIRABLE = {'leaked clusters', 'refcount above references', 'refcount zero on data', 'refcount zero on the L1 table',
              'refcount one on a shared cluster', 'leak and error', 'COPIED cleared on a data cluster',
              'COPIED set on a shared cluster', 'COPIED cleared on an L2 table', 'refblock outside the image',
              'refblock missing', 'refblock on the L1 table'}
# repaired, but the guest content is what the damaged metadata says (both entries show cluster 0's data)
REPAIRABLE_NEW_CONTENT = {'two entries, one data cluster'}
# the engine's rebuild also repairs these, which qemu 7.2 cannot (qemu -r all leaves exit 1 or 2)
ENGINE_ALSO_REPAIRS = {'L1 entry reserved bits', 'refblock entry with reserved bits'}
# qemu -r all drops the excess snapshot extra data; the engine cannot read such a table at all and says so
QEMU_ONLY_REPAIRS = {'snapshot extra data too large'}


def make_damaged(fault, directory):
    build, inject = FAULTS[fault]
    img = build(directory)
    original = raw_of(img, dest_dir=directory)
    inject(img)
    return fault, img, original


@pytest.fixture(params=sorted(FAULTS))
def damaged(request, tmp_image_dir):
    return make_damaged(request.param, tmp_image_dir)


def test_check_reports_what_qemu_reports(damaged):
    fault, img, _original = damaged
    theirs = qemu_img_check(img, incomplete_ok=True)
    ours = check(str(img))

    assert ours['exit_code'] == theirs.returncode, (ours['messages'][:5], theirs.report)
    if theirs.returncode == CHECK_NOT_COMPLETED:  # no report from qemu; the first error is the same
        assert ours['result']['check-errors'] >= 1
        # qemu's words, without the location the engine adds in parentheses
        assert re.sub(r' \(.*\)$', '', ours['messages'][0].rsplit(': ', 1)[1]) in theirs.report['stderr']
        return
    theirs.report.pop('filename')
    ours['result'].pop('filename')
    assert ours['result'] == theirs.report


@pytest.mark.parametrize('fault', sorted(REPAIRABLE | REPAIRABLE_NEW_CONTENT))
def test_repair_all_ends_where_qemus_repair_ends(tmp_image_dir, fault):
    fault, img, original = make_damaged(fault, tmp_image_dir)
    theirs = img.with_name('qemu-repaired.qcow2')
    shutil.copyfile(img, theirs)
    qemu_img('check', '-q', '-r', 'all', theirs)
    assert qemu_img_check(theirs).clean

    assert check(str(img), repair='all')['exit_code'] == 0
    result = qemu_img_check(img)
    assert result.clean, result.report
    assert qemu_compare(img, theirs)
    assert qemu_compare(img, original, fmt_b='raw') == (fault not in REPAIRABLE_NEW_CONTENT)


@pytest.mark.parametrize('fault', sorted(set(FAULTS) - REPAIRABLE - REPAIRABLE_NEW_CONTENT))
def test_repair_all_of_what_qemu_cannot_repair(tmp_image_dir, fault):
    """The engine's exit status is qemu's verdict on the result, and the result is no worse than qemu's."""
    fault, img, original = make_damaged(fault, tmp_image_dir)
    theirs = img.with_name('qemu-repaired.qcow2')
    shutil.copyfile(img, theirs)
    qemu_img('check', '-q', '-r', 'all', theirs, ok_codes=(0, 1, 2, 3))
    qemu_after = qemu_img_check(theirs, incomplete_ok=True).returncode

    ours = check(str(img), repair='all')['exit_code']
    after = qemu_img_check(img, incomplete_ok=True).returncode
    assert ours == after
    if fault in ENGINE_ALSO_REPAIRS:
        assert after == 0 and qemu_after != 0
        assert qemu_compare(img, original, fmt_b='raw')
    elif fault in QEMU_ONLY_REPAIRS:
        assert (ours, qemu_after) == (1, 0)
    else:
        assert after == qemu_after


def test_repair_leaks_of_a_leaky_image(tmp_image_dir):
    img = with_snapshot(tmp_image_dir)
    original = raw_of(img, dest_dir=tmp_image_dir)
    leak(img, 5)
    poke.set_refcount(img, poke.host_cluster(img, MiB), 3)  # 2 references (snapshot + active), refcount 3

    assert qemu_img_check(img).report['leaks'] == 6
    result = check(str(img), repair='leaks')
    assert result['exit_code'] == 0 and result['result']['leaks-fixed'] == 6
    assert qemu_img_check(img).clean
    assert qemu_compare(img, original, fmt_b='raw')
    assert qemu_img('snapshot', '-l', img).count('\n') == 3
