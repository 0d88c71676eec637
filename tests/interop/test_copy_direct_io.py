"""Copies write their whole clusters straight to disk (O_DIRECT), and qemu reads the result as before.

Each operation runs on a chain qemu-io wrote, with every pwritev the engine issues recorded by whether its
descriptor bypasses the page cache. The data the operation copies must have gone direct, and qemu-img must
find the guest view unchanged and the images clean.
"""

from __future__ import annotations

import fcntl
import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api, directio, fileio
from ansible_collections.backingchain.qcow2.tests.helpers.chains import assert_clean, copy_images, same_view, view_of
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import backing_chain, qemu_img, qemu_img_create, qemu_io

MiB = 1 << 20
DATA_MIB = 24  # in the overlay: what commit, flatten and the in-chain rebase copy (at least)


def _bytes_by_descriptor(monkeypatch, call):
    """Bytes that os.<call> (pwritev or preadv) moved through page-cache and direct descriptors, from now on:
    {'direct': n, 'cached': n}."""
    totals = {'direct': 0, 'cached': 0}
    real = getattr(os, call)

    def recording(fd, buffers, offset, *flags):
        n = real(fd, buffers, offset, *flags)
        totals['direct' if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT else 'cached'] += n
        return n

    monkeypatch.setattr(fileio.os, call, recording)
    return totals


@pytest.fixture
def written(monkeypatch):
    """Bytes written through page-cache and direct descriptors."""
    return _bytes_by_descriptor(monkeypatch, 'pwritev')


def _chain(tmp_path):
    """base (data every other MiB), mid (DATA_MIB MiB in 4 MiB runs and single clusters), top (a little)."""
    base = qemu_img_create(tmp_path / 'base.qcow2', '128M')
    qemu_io(base, *['write -P 0x11 %dM 1M' % i for i in range(0, 128, 2)])
    mid = qemu_img_create(tmp_path / 'mid.qcow2', backing='base.qcow2', cwd=tmp_path)
    qemu_io(mid, *['write -P 0x22 %dM 4M' % (i * 20) for i in range(5)])
    qemu_io(mid, *['write -P 0x33 %dK 64K' % (i * 1000 + 64) for i in range(64)])
    top = qemu_img_create(tmp_path / 'top.qcow2', backing='mid.qcow2', cwd=tmp_path)
    qemu_io(top, 'write -P 0x44 100M 1M')
    return base, mid, top


def test_flatten_writes_its_data_direct(tmp_path, written):
    base, mid, top = _chain(tmp_path)
    before = view_of(top, tmp_path)
    out = tmp_path / 'flat.qcow2'
    result = api.convert(str(top), str(out))
    assert written['direct'] >= result.bytes_written > 64 * MiB
    assert same_view(before, out)
    assert len(backing_chain(out)) == 1  # standalone
    assert_clean([out])


def test_commit_writes_its_data_direct(tmp_path, written):
    base, mid, top = _chain(tmp_path)
    before = view_of(top, tmp_path)
    api.commit(str(mid))
    assert written['direct'] >= DATA_MIB * MiB
    assert same_view(before, top)
    assert_clean([base, mid, top])


def test_in_chain_rebase_writes_its_data_direct(tmp_path, written):
    base, mid, top = _chain(tmp_path)
    before = view_of(top, tmp_path)
    api.rebase(str(top), str(base), 'qcow2')
    assert written['direct'] >= DATA_MIB * MiB - 1 * MiB  # less what top itself already holds
    assert same_view(before, top)
    assert [name for name, _fmt in backing_chain(top)] == [str(top), str(base)]
    assert_clean([base, mid, top])


def test_rebase_onto_an_unrelated_base_writes_its_differences_direct_as_qemu_img_rebase_does(tmp_path, written):
    """Two bases that differ in about half their data: the differences (and only they) are copied into the overlay,
    straight to disk, and the overlay ends as qemu-img rebase leaves it."""
    pristine = tmp_path / 'pristine'
    pristine.mkdir()
    base = qemu_img_create(pristine / 'base.qcow2', '64M')
    qemu_io(base, *['write -P %d %dM 1M' % (0x10 + i, i) for i in range(0, 64, 2)])
    qemu_img('convert', '-O', 'qcow2', base, pristine / 'other.qcow2')
    # other: every second run of base rewritten, one run zeroed, data where base has none
    qemu_io(pristine / 'other.qcow2', *['write -P 0x77 %dM 1M' % i for i in range(4, 64, 4)])
    qemu_io(pristine / 'other.qcow2', 'write -z 2M 1M', 'write -P 0x66 1M 512K', 'write -P 0x55 33M 64K')
    top = qemu_img_create(pristine / 'top.qcow2', backing='base.qcow2', cwd=pristine)
    qemu_io(top, 'write -P 0x44 8M 1M', 'write -P 0x45 17M 4K')
    before = view_of(top, tmp_path)
    ours, theirs = copy_images(pristine, tmp_path / 'ours'), copy_images(pristine, tmp_path / 'theirs')

    result = api.rebase(str(ours / 'top.qcow2'), 'other.qcow2', 'qcow2')
    qemu_img('rebase', '-q', '-f', 'qcow2', '-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2', cwd=theirs)

    # 14 rewritten runs (top holds the 15th) and the zeroed run: data; 1M+512K and 33M+64K: zeros over other's data
    assert result.bytes_copied == 15 * MiB + 512 * 1024 + 64 * 1024
    assert written['direct'] >= 15 * MiB
    assert same_view(before, ours / 'top.qcow2')
    qemu_img('compare', '-f', 'qcow2', '-F', 'qcow2', ours / 'top.qcow2', theirs / 'top.qcow2')  # raises unless identical
    assert [name for name, _fmt in backing_chain(ours / 'top.qcow2')] == [str(ours / 'top.qcow2'), str(ours / 'other.qcow2')]
    assert_clean([ours / 'top.qcow2', ours / 'other.qcow2'])


def test_without_o_direct_the_same_copy_goes_through_the_page_cache(tmp_path, written, monkeypatch):
    monkeypatch.setattr(directio, 'open_direct', lambda path: None)
    base, mid, top = _chain(tmp_path)
    before = view_of(top, tmp_path)
    out = tmp_path / 'flat.qcow2'
    api.convert(str(top), str(out))
    assert written['direct'] == 0
    assert same_view(before, out)
    assert_clean([out])


@pytest.fixture
def read(monkeypatch):
    """Bytes read through page-cache and direct descriptors."""
    return _bytes_by_descriptor(monkeypatch, 'preadv')


def _evict(paths):
    """Make each file durable and drop it from the page cache, as a chain written long before."""
    for path in paths:
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@pytest.mark.parametrize('cached', [False, True], ids=['uncached', 'cached'])
def test_flatten_reads_what_the_page_cache_does_not_hold_direct(tmp_path, read, cached):
    chain = _chain(tmp_path)
    before = view_of(chain[-1], tmp_path)
    if not cached:
        _evict(chain)
    read.update(direct=0, cached=0)
    out = tmp_path / 'flat.qcow2'
    result = api.convert(str(chain[-1]), str(out))
    if cached:
        assert read['direct'] == 0
    else:
        assert read['direct'] >= result.bytes_written // 2 > 32 * MiB
    assert same_view(before, out)
    assert_clean([out])
