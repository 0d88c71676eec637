"""Measure against qemu-img measure -O qcow2: the same numbers."""

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.tests.helpers.chains import MiB, STANDARD_CHAINS, build_chain
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import qemu_img, qemu_img_create, qemu_img_json, qemu_io


def _chain(tmp_path, name):
    layers = STANDARD_CHAINS[name]()
    images = tmp_path / 'images'
    images.mkdir()
    build_chain(images, layers)
    return layers, images


def _qemu_opts(opts):
    return ','.join('%s=%s' % (k, 'on' if v is True else v) for k, v in opts.items())


MEASURE_OPTIONS = [{}, {'cluster_size': 512}, {'cluster_size': 2 * MiB}, {'compat': '0.10'},
                   {'extended_l2': True}, {'refcount_bits': 1}, {'refcount_bits': 64}, {'preallocation': 'metadata'},
                   {'preallocation': 'falloc', 'cluster_size': 4096}, {'preallocation': 'full'}]


def _qemu_measure(*args, opts=None):
    extra = ['-o', _qemu_opts(opts)] if opts else []
    return qemu_img_json('measure', '-O', 'qcow2', *extra, *args)


@pytest.mark.parametrize('name', ['c64k-v3', 'mixed-clusters', 'raw-base', 'snapshots', 'short-mid'])
def test_measure_chains_like_qemu(tmp_path, name):
    layers, images = _chain(tmp_path, name)
    top = images / layers[-1].name
    for opts in MEASURE_OPTIONS:
        assert api.measure(str(top), options=CreateOptions(**opts)) == _qemu_measure('-f', 'qcow2', top, opts=opts), opts


def test_measure_counts_persistent_bitmaps_like_qemu(tmp_path):
    """'bitmaps': the bytes the source's persistent bitmaps need in the target (its cluster size)."""
    layers, images = _chain(tmp_path, 'two-deep')
    top = images / layers[-1].name
    qemu_img('bitmap', '--add', top, 'b0')
    qemu_img('bitmap', '--add', '-g', '512', '--disable', top, 'fine-grained')
    for opts in MEASURE_OPTIONS:
        theirs = _qemu_measure('-f', 'qcow2', top, opts=opts)
        ours = api.measure(str(top), options=CreateOptions(**opts))
        assert ('bitmaps' in ours) == ('bitmaps' in theirs), opts
        assert ours.get('bitmaps') == theirs.get('bitmaps'), opts
        assert ours['fully-allocated'] == theirs['fully-allocated'], opts


def _raw_files(tmp_path):
    made = {}
    made['created by qemu-img'] = qemu_img_create(tmp_path / 'created.raw', 30 * MiB, fmt='raw')
    dense = qemu_img_create(tmp_path / 'dense.raw', 3 * MiB + 512, fmt='raw')
    qemu_io(dense, 'write -P 1 0 3M', 'write -P 2 3M 512', fmt='raw')
    made['written, odd size'] = dense
    sparse = tmp_path / 'sparse.raw'
    with open(sparse, 'wb') as f:
        f.truncate(30 * MiB)
    made['all hole'] = sparse
    late = tmp_path / 'late.raw'
    with open(late, 'wb') as f:
        f.truncate(30 * MiB)
        f.seek(20 * MiB + 4096)
        f.write(b'\x01' * 70000)
    made['data far from the start'] = late
    return made


def test_measure_raw_files_like_qemu(tmp_path):
    for what, path in _raw_files(tmp_path).items():
        for opts in MEASURE_OPTIONS:
            ours = api.measure(str(path), options=CreateOptions(**opts), source_format='raw')
            assert ours == _qemu_measure('-f', 'raw', path, opts=opts), (what, opts)


@pytest.mark.parametrize('size', [0, 512, 65536 + 512, MiB, 3 * 1024 ** 3 + 1536, 2 * 1024 ** 4])
def test_measure_sizes_like_qemu(size):
    for opts in MEASURE_OPTIONS:
        if opts.get('cluster_size') == 512 and size > 1024 ** 4:
            continue  # qemu refuses: the L1 table would be too large for 512-byte clusters
        ours = api.measure(size=size, options=CreateOptions(**opts))
        assert ours == _qemu_measure('--size', str(size), opts=opts), (size, opts)


def test_measure_of_an_odd_sized_fully_written_image(tmp_path):
    img = qemu_img_create(tmp_path / 'odd.qcow2', MiB + 512)
    qemu_io(img, 'write -P 7 0 %d' % (MiB + 512))
    assert api.measure(str(img)) == _qemu_measure(img)


def test_measure_metadata_preallocated_images_like_qemu(tmp_path):
    """qemu takes an image with far more clusters in use than its file allocates for metadata-preallocated, and
    counts only the data clusters the file really holds (holes read as zeros)."""
    base = qemu_img_create(tmp_path / 'base.qcow2', 64 * MiB, options={'preallocation': 'metadata'})
    qemu_io(base, 'write -P 1 1M 3M', 'write -P 2 40M 64k')
    top = qemu_img_create(tmp_path / 'top.qcow2', 80 * MiB, backing='base.qcow2', cwd=tmp_path,
                          options={'preallocation': 'metadata', 'extended_l2': 'on'})
    qemu_io(top, 'write -P 3 2M 8k', 'write -P 4 70M 1M')
    for image in (base, top):
        for opts in MEASURE_OPTIONS:
            ours = api.measure(str(image), options=CreateOptions(**opts))
            assert ours == _qemu_measure('-f', 'qcow2', image, opts=opts), (image.name, opts)
    assert api.measure(str(base))['required'] < 5 * MiB  # not the 64M the preallocated clusters would say
