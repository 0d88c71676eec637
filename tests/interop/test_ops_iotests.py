"""qemu iotests for commit and rebase, re-expressed for the engine (the test numbers are qemu's).

Each case builds its images with qemu-img/qemu-io as the iotest does, runs
the engine's operation, then verifies with qemu-io 'read -P' (which fails on
any mismatch) and qemu-img check, and where qemu-img can do the same
operation, compares with its result.
"""

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    MiB,
    assert_clean,
    copy_images,
    same_view,
    view_of,
)
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    backing_chain,
    dirty_ranges,
    qemu_img,
    qemu_img_create,
    qemu_img_info,
    qemu_img_map,
    qemu_io,
)

KiB = 1024
GiB = 1024 * MiB


def _owns_nothing(path):
    return not [e for e in qemu_img_map(path) if e['depth'] == 0 and (e['data'] or e['present'])]


def _create(directory, name, size=None, backing=None, backing_fmt='qcow2', fmt='qcow2', **opts):
    return qemu_img_create(directory / name, size, fmt=fmt, backing=backing, backing_fmt=backing_fmt if backing else None,
                           options=opts or None, cwd=directory)


# ---- 020: commit changes to a backing file, at offsets 0 and 4 GiB ------------------------------------------------

@pytest.mark.parametrize('base_fmt', ['qcow2', 'raw'])
def test_020_commit_alternating_sectors_at_0_and_4g(tmp_path, base_fmt):
    base = _create(tmp_path, 'base.' + base_fmt, 6 * GiB, fmt=base_fmt)
    for offset in (0, 4 * GiB):
        qemu_io(base, 'write -P 0x11 %d 128k' % offset, fmt=base_fmt)
    top = _create(tmp_path, 'top.qcow2', backing=base.name, backing_fmt=base_fmt)
    sectors = []
    for offset in (0, 4 * GiB):
        sectors += ['write -P 0x22 %d 512' % (offset + i * 1024) for i in range(64)]  # every other sector of 64k
    qemu_io(top, *sectors)
    theirs = copy_images(tmp_path, tmp_path / 'qemu')

    assert api.commit(str(top)).changed is True
    qemu_img('commit', '-q', theirs / top.name)

    reads = []
    for offset in (0, 4 * GiB):
        for i in range(64):
            reads += ['read -P 0x22 %d 512' % (offset + i * 1024), 'read -P 0x11 %d 512' % (offset + i * 1024 + 512)]
        reads.append('read -P 0x11 %d 64k' % (offset + 64 * KiB))
    qemu_io(base, *reads, fmt=base_fmt)
    qemu_io(top, *reads)
    assert _owns_nothing(top)
    assert same_view(base, theirs / base.name)
    assert_clean([top, base] if base_fmt == 'qcow2' else [top])


# ---- 097: commit into chains; the four passes --------------------------------------------------------------------

def _chain_097(directory):
    base = _create(directory, 'base.qcow2', 1 * MiB)
    itmd = _create(directory, 'itmd.qcow2', backing='base.qcow2')
    top = _create(directory, 'top.qcow2', backing='itmd.qcow2')
    qemu_io(base, 'write -P 1 0 196k')
    qemu_io(itmd, 'write -P 2 64k 128k')
    qemu_io(top, 'write -P 3 128k 64k')
    return base, itmd, top


@pytest.mark.parametrize('pass_', [0, 1, 2, 3])
def test_097_commit_into_chains(tmp_path, pass_):
    """0: implicit base, 1: -b itmd, 2: -d (qemu keeps the top's data; ours always empties an active top),
    3: -b base (both layers into base)."""
    base, itmd, top = _chain_097(tmp_path)
    theirs = copy_images(tmp_path, tmp_path / 'qemu')
    qemu_args = [[], ['-b', 'itmd.qcow2'], ['-d'], ['-b', 'base.qcow2']][pass_]

    result = api.commit(str(top), base=str(base) if pass_ == 3 else (str(itmd) if pass_ == 1 else None))
    qemu_img('commit', '-q', *qemu_args, 'top.qcow2', cwd=theirs)

    assert result.changed is True
    qemu_io(top, 'read -P 1 0 64k', 'read -P 2 64k 64k', 'read -P 3 128k 64k', 'read -P 1 192k 4k')
    assert _owns_nothing(top)
    if pass_ == 3:
        qemu_io(base, 'read -P 1 0 64k', 'read -P 2 64k 64k', 'read -P 3 128k 64k', 'read -P 1 192k 4k')
        qemu_io(itmd, 'read -P 1 0 64k', 'read -P 2 64k 128k')  # left as it was (it left the chain)
        assert backing_chain(top) == [(str(top), 'qcow2'), (str(base), 'qcow2')]
    else:
        qemu_io(base, 'read -P 1 0 196k')  # untouched
        qemu_io(itmd, 'read -P 1 0 64k', 'read -P 2 64k 64k', 'read -P 3 128k 64k')
        assert backing_chain(top) == [(str(top), 'qcow2'), (str(itmd), 'qcow2'), (str(base), 'qcow2')]
    for name in ('base.qcow2', 'itmd.qcow2'):
        assert same_view(tmp_path / name, theirs / name), name
    assert same_view(top, theirs / 'top.qcow2')
    assert_clean([top, itmd, base])


def test_097_intermediate_commit_with_a_deeper_base(tmp_path):
    """Four images: commit the two middle layers into base; the top is re-pointed to base."""
    base, itmd, _top = _chain_097(tmp_path)
    top2 = _create(tmp_path, 'top2.qcow2', backing='top.qcow2')
    qemu_io(top2, 'write -P 4 0 16k')
    before = view_of(top2, tmp_path)

    result = api.commit(str(top2), top=str(tmp_path / 'top.qcow2'), base=str(base))

    assert result.committed == [str(tmp_path / 'top.qcow2'), str(itmd)]
    assert same_view(top2, before)
    qemu_io(base, 'read -P 1 0 64k', 'read -P 2 64k 64k', 'read -P 3 128k 64k')
    assert backing_chain(top2) == [(str(top2), 'qcow2'), (str(base), 'qcow2')]
    assert_clean([top2, base])


# ---- 176-style: commit across the 2 GiB mark with internal snapshots in base and top ----------------------------

def test_176_commit_near_2g_with_internal_snapshots(tmp_path):
    base = _create(tmp_path, 'base.qcow2', 4 * GiB)
    qemu_io(base, 'write -P 1 %d 128k' % (2 * GiB - 64 * KiB))
    qemu_img('snapshot', '-c', 'snap-base', base)
    qemu_io(base, 'write -P 2 %d 64k' % (2 * GiB))
    top = _create(tmp_path, 'top.qcow2', backing='base.qcow2')
    qemu_io(top, 'write -P 3 %d 1k' % (2 * GiB - 512))
    qemu_img('snapshot', '-c', 'snap-top', top)
    qemu_io(top, 'write -P 4 %d 512' % (2 * GiB - 512))
    before = view_of(top, tmp_path)

    api.commit(str(top))

    assert same_view(top, before)
    qemu_io(base, 'read -P 1 %d %d' % (2 * GiB - 64 * KiB, 64 * KiB - 512), 'read -P 4 %d 512' % (2 * GiB - 512),
            'read -P 3 %d 512' % (2 * GiB), 'read -P 2 %d %d' % (2 * GiB + 512, 64 * KiB - 512))
    # the snapshots still hold what they held
    qemu_img('snapshot', '-a', 'snap-base', base)
    qemu_io(base, 'read -P 1 %d 128k' % (2 * GiB - 64 * KiB))
    assert [s['name'] for s in qemu_img_info(top)['snapshots']] == ['snap-top']
    assert_clean([top, base])


# ---- 024 / 028: rebase with backing files of other sizes --------------------------------------------------------

def test_024_rebase_between_unrelated_backing_files(tmp_path):
    """Clusters alternate between written in the overlay, different and equal in the old and new backing files."""
    cluster = 64 * KiB
    old = _create(tmp_path, 'base_old.qcow2', 1 * MiB)
    new = _create(tmp_path, 'base_new.qcow2', 1 * MiB)
    qemu_io(old, *['write -P 0x%x %d %d' % (0x10 + i, i * cluster, cluster) for i in range(16)])
    qemu_io(new, *['write -P 0x%x %d %d' % (0x10 + i if i % 3 else 0x60 + i, i * cluster, cluster)
                   for i in range(0, 16, 2)])
    over = _create(tmp_path, 'over.qcow2', backing='base_old.qcow2')
    qemu_io(over, *['write -P 0x%x %d %d' % (0x40 + i, i * cluster + 4096, 8192) for i in range(0, 16, 5)])
    before = view_of(over, tmp_path)
    theirs = copy_images(tmp_path, tmp_path / 'qemu')

    api.rebase(str(over), 'base_new.qcow2', 'qcow2')
    qemu_img('rebase', '-q', '-b', 'base_new.qcow2', '-F', 'qcow2', 'over.qcow2', cwd=theirs)

    assert same_view(over, before)
    assert same_view(over, theirs / 'over.qcow2')
    assert_clean([over])


@pytest.mark.parametrize('compat', ['1.1', '0.10'])
def test_024_rebase_onto_a_shorter_backing_file(tmp_path, compat):
    """Past the new backing file's end, the old backing file's data must be copied into the overlay."""
    old = _create(tmp_path, 'base_old.qcow2', 2 * MiB, compat=compat)
    qemu_io(old, 'write -P 0x11 0 2M')
    new = _create(tmp_path, 'base_new.qcow2', 512 * KiB, compat=compat)
    qemu_io(new, 'write -P 0x22 0 256k')
    over = _create(tmp_path, 'over.qcow2', 3 * MiB, backing='base_old.qcow2', compat=compat, cluster_size=4096)
    qemu_io(over, 'write -P 0x33 1M 4k')

    api.rebase(str(over), 'base_new.qcow2', 'qcow2')

    qemu_io(over, 'read -P 0x11 0 1M', 'read -P 0x33 1M 4k', 'read -P 0x11 %d %d' % (MiB + 4096, MiB - 4096),
            'read -P 0 2M 1M')
    assert_clean([over])


def test_024_in_chain_rebase_of_an_overlay_longer_than_its_backing_files(tmp_path):
    """base <- inc1 <- inc2 with inc2 at 5x64k over 4x64k (the 7.2.7 fix: rebase used to loop forever)."""
    base = _create(tmp_path, 'base.qcow2', 256 * KiB)
    qemu_io(base, 'write -P 0xa 0 256k')
    inc1 = _create(tmp_path, 'inc1.qcow2', 256 * KiB, backing='base.qcow2')
    qemu_io(inc1, 'write -P 0xb 64k 64k')
    inc2 = _create(tmp_path, 'inc2.qcow2', 320 * KiB, backing='inc1.qcow2')
    qemu_io(inc2, 'write -P 0xc 256k 64k')
    theirs = copy_images(tmp_path, tmp_path / 'qemu')

    api.rebase(str(inc2), 'base.qcow2', 'qcow2')
    qemu_img('rebase', '-q', '-b', 'base.qcow2', '-F', 'qcow2', 'inc2.qcow2', cwd=theirs)

    qemu_io(inc2, 'read -P 0xa 0 64k', 'read -P 0xb 64k 64k', 'read -P 0xa 128k 128k', 'read -P 0xc 256k 64k')
    assert same_view(inc2, theirs / 'inc2.qcow2')
    assert_clean([inc2, inc1, base])


def test_024_half_cluster_differences(tmp_path):
    """The 2023 COW case: base <- inc1 <- inc2, one 64k cluster, differences in half a cluster each."""
    base = _create(tmp_path, 'base.qcow2', 128 * KiB)
    qemu_io(base, 'write -P 0xa 0 128k')
    inc1 = _create(tmp_path, 'inc1.qcow2', backing='base.qcow2')
    qemu_io(inc1, 'write -P 0xb 32k 32k', 'write -P 0xd 64k 16k')
    inc2 = _create(tmp_path, 'inc2.qcow2', backing='inc1.qcow2')
    qemu_io(inc2, 'write -P 0xc 0 16k')
    before = view_of(inc2, tmp_path)

    api.rebase(str(inc2), 'base.qcow2', 'qcow2')

    assert same_view(inc2, before)
    qemu_io(inc2, 'read -P 0xc 0 16k', 'read -P 0xa 16k 16k', 'read -P 0xb 32k 32k', 'read -P 0xd 64k 16k',
            'read -P 0xa 80k 48k')
    assert_clean([inc2])


def test_028_backing_file_smaller_than_the_image(tmp_path):
    """Reads past the backing file's end return zeros, before and after a rebase onto a longer image."""
    base = _create(tmp_path, 'base.qcow2', 1 * MiB + 512)
    qemu_io(base, 'write -P 0x55 0 %d' % (MiB + 512))
    over = _create(tmp_path, 'over.qcow2', 4 * MiB, backing='base.qcow2', cluster_size=512)
    qemu_io(over, 'write -P 0x66 %d 4k' % (2 * MiB))
    longer = _create(tmp_path, 'longer.qcow2', 4 * MiB)
    qemu_io(longer, 'write -P 0x77 0 4M')
    reads = ('read -P 0x55 0 %d' % (MiB + 512), 'read -P 0 %d %d' % (MiB + 512, MiB - 512), 'read -P 0x66 2M 4k',
             'read -P 0 %d %d' % (2 * MiB + 4096, 2 * MiB - 4096))
    qemu_io(over, *reads)

    api.rebase(str(over), 'longer.qcow2', 'qcow2')

    qemu_io(over, *reads)
    assert_clean([over])
    flat = tmp_path / 'flat.qcow2'
    api.convert(str(over), str(flat))
    qemu_io(flat, *reads)


# ---- 050 / 252: zero clusters are not unallocated ---------------------------------------------------------------

def test_050_rebase_keeps_zero_clusters(tmp_path):
    old = _create(tmp_path, 'base_old.qcow2', 1 * MiB)
    qemu_io(old, 'write -P 0x11 0 1M')
    new = _create(tmp_path, 'base_new.qcow2', 1 * MiB)
    qemu_io(new, 'write -P 0x22 0 1M')
    over = _create(tmp_path, 'over.qcow2', backing='base_old.qcow2')
    qemu_io(over, 'write -z 0 64k', 'write -z 256k 128k')
    theirs = copy_images(tmp_path, tmp_path / 'qemu')

    api.rebase(str(over), 'base_new.qcow2', 'qcow2')
    qemu_img('rebase', '-q', '-b', 'base_new.qcow2', '-F', 'qcow2', 'over.qcow2', cwd=theirs)

    qemu_io(over, 'read -P 0 0 64k', 'read -P 0x11 64k 192k', 'read -P 0 256k 128k', 'read -P 0x11 384k 640k')
    assert same_view(over, theirs / 'over.qcow2')
    assert_clean([over])


@pytest.mark.parametrize('compat', ['1.1', '0.10'])
def test_252_rebase_onto_a_shorter_backing_file_needing_zeros(tmp_path, compat):
    """Past the new (shorter) backing file's end, old-backing data must be copied and old-backing zeros stay zero."""
    base = _create(tmp_path, 'base.qcow2', 128 * KiB, compat=compat)
    qemu_io(base, 'write -P 1 0 64k', 'write -P 2 64k 32k')
    base_new = _create(tmp_path, 'base_new.qcow2', 64 * KiB, compat=compat)
    qemu_io(base_new, 'write -P 3 0 64k')
    over = _create(tmp_path, 'over.qcow2', 192 * KiB, backing='base.qcow2', compat=compat)
    theirs = copy_images(tmp_path, tmp_path / 'qemu')

    api.rebase(str(over), 'base_new.qcow2', 'qcow2')
    qemu_img('rebase', '-q', '-b', 'base_new.qcow2', '-F', 'qcow2', 'over.qcow2', cwd=theirs)

    qemu_io(over, 'read -P 1 0 64k', 'read -P 2 64k 32k', 'read -P 0 96k 96k')
    assert same_view(over, theirs / 'over.qcow2')
    assert_clean([over])


def test_252_in_chain_rebase_past_the_end_of_a_dropped_layer(tmp_path):
    """A dropped layer shorter than the image: past its end the overlay read zeros, and still must."""
    base = _create(tmp_path, 'base.qcow2', 4 * MiB)
    qemu_io(base, 'write -P 1 0 4M')
    mid = _create(tmp_path, 'mid.qcow2', 1 * MiB, backing='base.qcow2')
    over = _create(tmp_path, 'over.qcow2', 4 * MiB, backing='mid.qcow2', cluster_size=512)

    api.rebase(str(over), 'base.qcow2', 'qcow2')

    qemu_io(over, 'read -P 1 0 1M', 'read -P 0 1M 3M')
    assert backing_chain(over) == [(str(over), 'qcow2'), (str(base), 'qcow2')]
    assert_clean([over, mid, base])


# ---- 274: short overlays ------------------------------------------------------------------------------------------

def _chain_274(directory):
    base = _create(directory, 'base.qcow2', 2 * MiB)
    mid = _create(directory, 'mid.qcow2', 1 * MiB, backing='base.qcow2')
    top = _create(directory, 'top.qcow2', 2 * MiB, backing='mid.qcow2')
    qemu_io(base, 'write -P 1 0 2M')
    return base, mid, top


def test_274_visible_data_and_commit_top_into_mid(tmp_path):
    base, mid, top = _chain_274(tmp_path)
    qemu_io(top, 'read -P 1 0 1M', 'read -P 0 1M 1M')
    qemu_io(mid, 'read -P 1 0 1M')

    api.commit(str(top))

    assert qemu_img_info(mid)['virtual-size'] == 2 * MiB
    qemu_io(mid, 'read -P 1 0 1M', 'read -P 0 1M 1M')
    qemu_io(top, 'read -P 1 0 1M', 'read -P 0 1M 1M')
    assert_clean([top, mid, base])


def test_274_commit_mid_into_base(tmp_path):
    base, mid, top = _chain_274(tmp_path)

    api.commit(str(top), top=str(mid))

    qemu_io(top, 'read -P 1 0 1M', 'read -P 0 1M 1M')
    qemu_io(base, 'read -P 1 0 2M')
    assert backing_chain(top) == [(str(top), 'qcow2'), (str(base), 'qcow2')]
    assert_clean([top, mid, base])


def test_274_grow_a_short_overlay(tmp_path):
    _base, mid, _top = _chain_274(tmp_path)
    api.grow_image(str(mid), 3 * MiB)
    qemu_io(mid, 'read -P 1 0 1M', 'read -P 0 1M 2M')
    assert_clean([mid])


# ---- persistent bitmaps record what commit and rebase write (checked by qemu) -------------------------------------

def _bitmaps_chain(directory):
    base = _create(directory, 'base.qcow2', 8 * MiB)
    qemu_io(base, 'write -P 1 0 8M')
    qemu_img('bitmap', '--add', base, 'tracked')
    qemu_img('bitmap', '--add', '--disable', base, 'frozen')
    top = _create(directory, 'top.qcow2', backing='base.qcow2')
    qemu_io(top, 'write -P 2 1M 64k', 'write -P 3 3M 8k', 'write -z 5M 128k')
    qemu_img('bitmap', '--add', '-g', '4096', top, 'top-tracked')
    return base, top


def test_commit_into_a_base_with_an_enabled_bitmap(tmp_path):
    base, top = _bitmaps_chain(tmp_path)
    theirs = copy_images(tmp_path, tmp_path / 'qemu')

    api.commit(str(top))
    qemu_img('commit', '-q', theirs / 'top.qcow2')

    ours = dirty_ranges(base, 'tracked')
    assert ours == dirty_ranges(theirs / 'base.qcow2', 'tracked')
    assert ours == [(1 * MiB, 64 * KiB), (3 * MiB, 64 * KiB), (5 * MiB, 128 * KiB)]
    assert dirty_ranges(base, 'frozen') == []
    assert_clean([base, top])


def test_rebase_records_what_it_copies_in_the_images_enabled_bitmap(tmp_path):
    _base, top = _bitmaps_chain(tmp_path)
    other = _create(tmp_path, 'other.qcow2', 8 * MiB)
    qemu_io(other, 'write -P 1 0 6M')  # differs from base only in 6M..8M
    theirs = copy_images(tmp_path, tmp_path / 'qemu')

    api.rebase(str(top), 'other.qcow2', 'qcow2')
    qemu_img('rebase', '-q', '-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2', cwd=theirs)

    ours = dirty_ranges(top, 'top-tracked')
    assert ours == [(6 * MiB, 2 * MiB)]
    assert ours == dirty_ranges(theirs / 'top.qcow2', 'top-tracked')
    assert_clean([top])


def test_commit_grows_a_base_with_bitmaps_past_their_tables(tmp_path):
    """The base grows to the top's size: its bitmap tables grow with it, and the committed ranges are recorded."""
    base = _create(tmp_path, 'base.qcow2', 1 * MiB)
    qemu_io(base, 'write -P 1 0 1M')
    qemu_img('bitmap', '--add', '-g', '512', base, 'fine')  # one table cluster covers 256 MiB
    top = _create(tmp_path, 'top.qcow2', 300 * MiB, backing='base.qcow2')
    qemu_io(top, 'write -P 2 4k 4k', 'write -P 3 290M 64k')
    theirs = copy_images(tmp_path, tmp_path / 'qemu')

    api.commit(str(top))
    qemu_img('commit', '-q', theirs / 'top.qcow2')

    assert_clean([base, top])
    # the top's 64k clusters are copied whole, as qemu copies them
    assert dirty_ranges(base, 'fine') == dirty_ranges(theirs / 'base.qcow2', 'fine') == [(0, 64 * KiB), (290 * MiB, 64 * KiB)]
    qemu_io(base, 'read -P 1 0 4k', 'read -P 2 4k 4k', 'read -P 3 290M 64k')
