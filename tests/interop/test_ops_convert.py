"""Flatten (convert), measure and grow against qemu-img convert, measure and resize."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    MiB,
    STANDARD_CHAINS,
    assert_clean,
    build_chain,
    same_view,
    view_of,
)
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    backing_chain,
    qemu_compare,
    qemu_img,
    qemu_img_check,
    qemu_img_create,
    qemu_img_info,
    qemu_img_map,
    qemu_io,
    qemu_io_holding,
)


def _chain(tmp_path, name):
    layers = STANDARD_CHAINS[name]()
    images = tmp_path / 'images'
    images.mkdir()
    build_chain(images, layers)
    return layers, images, view_of(images / layers[-1].name, tmp_path)


def _data_ranges(path):
    """Where the image itself stores data (merged), as qemu-img map reports it."""
    out = []
    for e in qemu_img_map(path):
        if not e['data']:
            continue
        if out and out[-1][1] == e['start']:
            out[-1] = (out[-1][0], e['start'] + e['length'])
        else:
            out.append((e['start'], e['start'] + e['length']))
    return out


def _within(ranges, outer, grain):
    """Every (start, end) of ranges lies inside one of outer widened to multiples of grain (a cluster)."""
    widened = [(a // grain * grain, -(-b // grain) * grain) for a, b in outer]
    return all(any(a <= s and e <= b for a, b in widened) for s, e in ranges)


def _qemu_opts(opts):
    return ','.join('%s=%s' % (k, 'on' if v is True else v) for k, v in opts.items())


@pytest.mark.parametrize('name', list(STANDARD_CHAINS))
def test_convert_flattens_like_qemu(tmp_path, name):
    layers, images, before = _chain(tmp_path, name)
    top = images / layers[-1].name
    ours, theirs = tmp_path / 'ours.qcow2', tmp_path / 'theirs.qcow2'

    result = api.convert(str(top), str(ours))
    qemu_img('convert', '-f', 'qcow2', '-O', 'qcow2', top, theirs)

    assert result.changed is True
    assert same_view(ours, before)
    assert qemu_compare(ours, theirs, strict=True)  # same size, same content, same allocation
    assert _data_ranges(ours) == _data_ranges(theirs)  # zero ranges stay sparse as qemu leaves them
    assert backing_chain(ours) == [(str(ours), 'qcow2')]
    assert_clean([ours])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')] == []


@pytest.mark.parametrize('name', ['c64k-v3', 'c512-v3', 'mixed-clusters', 'raw-base', 'snapshots'])
def test_convert_compressed_like_qemu(tmp_path, name):
    layers, images, before = _chain(tmp_path, name)
    top = images / layers[-1].name
    ours, theirs = tmp_path / 'ours.qcow2', tmp_path / 'theirs.qcow2'

    api.convert(str(top), str(ours), compress=True)
    qemu_img('convert', '-c', '-f', 'qcow2', '-O', 'qcow2', top, theirs)

    assert same_view(ours, before)
    assert same_view(ours, theirs)
    report = qemu_img_check(ours).report
    assert report['compressed-clusters'] > 0
    assert report['compressed-clusters'] == qemu_img_check(theirs).report['compressed-clusters']
    assert_clean([ours])


@pytest.mark.parametrize('name,compress', [('c64k-v3', False), ('c4k-v2', False), ('raw-base', False),
                                           ('c512-v3', True), ('c4k-v2', True), ('short-mid', False)])
def test_convert_keeping_a_deeper_backing_file_of_the_chain(tmp_path, name, compress):
    """Ours copies everything above the kept backing file, so the result reads what the source reads.

    qemu-img convert -B copies only the source's top layer (it assumes the
    new backing file holds what the source's backing file holds), so here
    the result is compared with the source's view, not with qemu's.
    """
    layers, images, before = _chain(tmp_path, name)
    top = images / layers[-1].name
    base = layers[0]
    ours = images / 'ours.qcow2'

    api.convert(str(top), str(ours), backing_file=base.name, backing_format=base.fmt, compress=compress)

    assert same_view(ours, before)
    assert backing_chain(ours) == [(str(ours), 'qcow2'), (str(images / base.name), base.fmt)]
    assert qemu_img_info(ours)['backing-filename'] == base.name
    assert_clean([ours])


@pytest.mark.parametrize('name,backing,compress', [('c64k-v3', 'mid.qcow2', False), ('c512-v3', 'mid.qcow2', True),
                                                   ('two-deep', 'base.qcow2', False), ('c4k-v2', 'other.qcow2', False),
                                                   ('raw-base', 'other.qcow2', True)])
def test_convert_keeping_a_backing_file_like_qemu(tmp_path, name, backing, compress):
    """With the source's own backing file, or one outside its chain, ours and qemu's -B copy the same: the top layer."""
    layers, images, before = _chain(tmp_path, name)
    top = images / layers[-1].name
    if backing == 'other.qcow2':
        qemu_img_create(images / backing, 7 * MiB)
        qemu_io(images / backing, 'write -P 0x55 1M 5M')
    ours, theirs = images / 'ours.qcow2', images / 'theirs.qcow2'

    api.convert(str(top), str(ours), backing_file=backing, backing_format='qcow2', compress=compress)
    qemu_img('convert', *(['-c'] if compress else []), '-f', 'qcow2', '-O', 'qcow2', '-B', backing, '-F', 'qcow2',
             top.name, theirs.name, cwd=images)

    assert same_view(ours, theirs)
    if backing != 'other.qcow2':
        assert same_view(ours, before)
    assert backing_chain(ours)[:2] == [(str(ours), 'qcow2'), (str(images / backing), 'qcow2')]
    assert_clean([ours])


def test_convert_a_standalone_image_keeping_a_backing_file_like_qemu(tmp_path):
    """What the source reads as unallocated reads zeros, so it must mask the new backing file (qemu writes zeros)."""
    src = qemu_img_create(tmp_path / 'src.qcow2', 6 * MiB, options={'cluster_size': 4096})
    qemu_io(src, 'write -P 0x71 0 64k', 'write -P 0x72 1M 4k', 'write -z 2M 64k')
    other = qemu_img_create(tmp_path / 'other.qcow2', 8 * MiB)
    qemu_io(other, 'write -P 0x55 0 8M')
    ours, theirs = tmp_path / 'ours.qcow2', tmp_path / 'theirs.qcow2'

    api.convert(str(src), str(ours), backing_file='other.qcow2', backing_format='qcow2')
    qemu_img('convert', '-O', 'qcow2', '-B', 'other.qcow2', '-F', 'qcow2', 'src.qcow2', 'theirs.qcow2', cwd=tmp_path)

    assert same_view(ours, src)
    assert same_view(ours, theirs)
    assert_clean([ours])


@pytest.mark.parametrize('opts', [
    {'cluster_size': 512}, {'cluster_size': 4096, 'compat': '0.10'}, {'cluster_size': 2 * MiB},
    {'extended_l2': True}, {'refcount_bits': 1}, {'refcount_bits': 64, 'lazy_refcounts': True},
])
def test_convert_with_output_options(tmp_path, opts):
    layers, images, before = _chain(tmp_path, 'mixed-clusters')
    top = images / layers[-1].name
    ours, theirs = tmp_path / 'ours.qcow2', tmp_path / 'theirs.qcow2'

    api.convert(str(top), str(ours), options=CreateOptions(**opts))
    qemu_img('convert', '-f', 'qcow2', '-O', 'qcow2', '-o', _qemu_opts(opts), top, theirs)

    assert same_view(ours, before)
    assert same_view(ours, theirs)
    # never more clusters allocated than qemu (fewer where qemu's 4k zero detection sees a cluster or subcluster
    # partly zero and we see it partly data)
    assert _within(_data_ranges(ours), _data_ranges(theirs), opts.get('cluster_size', 65536))
    info = qemu_img_info(ours)
    assert info['cluster-size'] == opts.get('cluster_size', 65536)
    specific = info['format-specific']['data']
    assert specific['compat'] == opts.get('compat', '1.1')
    if 'refcount_bits' in opts:
        assert specific['refcount-bits'] == opts['refcount_bits']
    assert_clean([ours])


def test_convert_raw_file(tmp_path):
    src = tmp_path / 'disk.raw'
    qemu_img_create(src, 20 * MiB, fmt='raw')
    qemu_io(src, 'write -P 0x61 1M 3M', 'write -P 0x62 10M 4k', 'write -P 0 12M 2M', fmt='raw')
    ours, theirs = tmp_path / 'ours.qcow2', tmp_path / 'theirs.qcow2'

    api.convert(str(src), str(ours), source_format='raw')
    qemu_img('convert', '-f', 'raw', '-O', 'qcow2', src, theirs)

    assert qemu_compare(ours, src, fmt_b='raw')
    assert qemu_compare(ours, theirs, strict=True)
    assert _data_ranges(ours) == _data_ranges(theirs)  # the written zeros at 12M stay unallocated
    assert_clean([ours])


def test_flattened_image_boots_the_same_bytes_as_qemus(tmp_path):
    """A byte-for-byte check through qemu-io on top of qemu-img compare: read the flattened image back."""
    layers, images, before = _chain(tmp_path, 'c4k-v2')
    ours = tmp_path / 'ours.qcow2'
    api.convert(str(images / layers[-1].name), str(ours), compress=True)
    dumped = tmp_path / 'dump.raw'
    subprocess.run(['qemu-img', 'dd', '-f', 'qcow2', '-O', 'raw', 'if=%s' % ours, 'of=%s' % dumped, 'bs=1M'],
                   check=True, capture_output=True)
    with open(dumped, 'rb') as a, open(before, 'rb') as b:
        assert a.read() == b.read()
    assert os.path.getsize(dumped) == qemu_img_info(ours)['virtual-size']


@pytest.mark.parametrize('length', [1000, 512 * 3 + 1, 65536 * 3 - 7])
def test_convert_a_raw_file_of_any_length(tmp_path, length):
    src = tmp_path / 'odd.raw'
    with open(src, 'wb') as f:
        f.write(bytes(range(256)) * (length // 256) + b'\x5a' * (length % 256))
    ours, theirs = tmp_path / 'ours.qcow2', tmp_path / 'theirs.qcow2'

    api.convert(str(src), str(ours), source_format='raw')
    qemu_img('convert', '-f', 'raw', '-O', 'qcow2', src, theirs)

    assert qemu_img_info(ours)['virtual-size'] == qemu_img_info(theirs)['virtual-size'] == -(-length // 512) * 512
    assert qemu_compare(ours, theirs, strict=True)
    assert qemu_compare(ours, src, fmt_b='raw')
    assert_clean([ours])


def test_convert_removes_what_an_interrupted_run_left_but_not_a_live_run_s_file(tmp_path):
    """A crash leaves .DEST.*.tmp beside the destination; the next run deletes it, unless a process (a
    concurrent convert) still holds it locked."""
    src = qemu_img_create(tmp_path / 'src.qcow2', '4M')
    qemu_io(src, 'write -P 5 0 1M')
    stale = tmp_path / '.out.qcow2.crashed.tmp'
    stale.write_bytes(b'left by a killed run')
    held = qemu_img_create(tmp_path / '.out.qcow2.running.tmp', '1M')
    with qemu_io_holding(held):
        api.convert(str(src), str(tmp_path / 'out.qcow2'))
        assert not stale.exists()
        assert held.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.out.qcow2.running.tmp', 'out.qcow2', 'src.qcow2']
